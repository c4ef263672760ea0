#!/usr/bin/env python3
"""Quantize a model with llm-compressor in the same format temper writes, for a
side-by-side comparison on identical calibration tokens.

Output format (matches temper's calibrated INT4 artifacts):
  compressed-tensors pack-quantized W4A16, asymmetric (zero points),
  group 128 for down_proj (1536 input columns on SmolLM2-135M) and group 64 for
  q/k/v/o/gate/up (576 input columns, not a multiple of 128); lm_head kept.

Calibration data: the pre-tokenized "calibration" windows of a temper windows
JSON ({"window_len", "evaluation": [[ids]], "calibration": [[ids]]}), fed as
input_ids with an all-ones attention_mask, no re-tokenization, no extra BOS.

Usage (llm-compressor venv):
  python scripts/compare-llmcompressor.py --method gptq --model DIR \
      --windows windows.json --output OUT [--actorder weight|none]
  python scripts/compare-llmcompressor.py --method awq  --model DIR \
      --windows windows.json --output OUT

The last stdout line is JSON: {"method", "oneshot_wall_s", "peak_rss_mib", ...}.
"""

import argparse
import json
import resource
import shutil
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmcompressor import oneshot
from llmcompressor.modifiers.gptq import GPTQModifier
from llmcompressor.modifiers.quantization import QuantizationModifier
from llmcompressor.modifiers.transform.awq import AWQModifier
from llmcompressor.pipelines.cache import IntermediatesCache

# Tokenizer files are always copied from the source model over what oneshot saved:
# transformers 5.x rebuilds a "GPT2Tokenizer" on load and drops the
# Digits(individual_digits) pre-tokenizer of SmolLM2's tokenizer.json, so the
# re-saved tokenizer.json splits e.g. "n 1  1" differently from the original
# (the calibration ids here are pre-tokenized, so only the saved copy is affected).
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
# Copied only when oneshot did not write them.
AUX_FILES = ["generation_config.json"]


def weights(group_size):
    """INT4 asymmetric group weights; activations stay 16-bit (W4A16)."""
    return {
        "num_bits": 4,
        "type": "int",
        "strategy": "group",
        "group_size": group_size,
        "symmetric": False,  # zero points, as temper writes
        "dynamic": False,
        "observer": "minmax",
    }


# Two config groups with disjoint targets, so no precedence rule is involved.
CONFIG_GROUPS = {
    "group_0": {"targets": ["re:.*down_proj$"], "weights": weights(128)},
    "group_1": {
        "targets": ["re:.*(q|k|v|o|gate|up)_proj$"],
        "weights": weights(64),
    },
}


def recipe(method, actorder):
    if method == "gptq":
        return GPTQModifier(
            config_groups=CONFIG_GROUPS,
            ignore=["lm_head"],
            block_size=128,
            dampening_frac=0.01,
            # llm-compressor's "weight" (alias "static") = temper's actorder weight;
            # None = quantize columns in their natural order.
            actorder=None if actorder == "none" else actorder,
        )
    # AWQ: default Llama mappings (inferred from the model), duo scaling on,
    # other AWQ defaults; the QuantizationModifier then does min-max RTN on the
    # smoothed weights.
    return [
        AWQModifier(duo_scaling=True),
        QuantizationModifier(config_groups=CONFIG_GROUPS, ignore=["lm_head"]),
    ]


def patch_for_cpu_only():
    """llm-compressor 0.14's AWQModifier._apply_smoothing calls
    IntermediatesCache.pin_memory() on every cached batch so later host->GPU
    copies can be non-blocking. Tensor.pin_memory() needs a CUDA driver and
    raises "Found no NVIDIA driver" on a CPU-only host. Pinning is only a
    transfer optimisation, so on CPU it is skipped (no-op)."""
    if not torch.cuda.is_available():
        IntermediatesCache.pin_memory = lambda self, batch_index, input_names=None: None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", choices=["gptq", "awq"], required=True)
    ap.add_argument("--model", required=True, help="HF checkpoint directory")
    ap.add_argument("--windows", required=True, help="temper windows JSON")
    ap.add_argument("--output", required=True, help="output directory")
    ap.add_argument("--actorder", choices=["weight", "none"], default="weight")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    patch_for_cpu_only()

    windows = json.loads(Path(args.windows).read_text())
    calib = windows["calibration"]
    seq_len = windows["window_len"]
    assert all(len(w) == seq_len for w in calib), "windows must all be window_len"
    dataset = Dataset.from_dict(
        {"input_ids": calib, "attention_mask": [[1] * len(w) for w in calib]}
    )

    # dtype "auto" = the checkpoint's bf16, as llm-compressor loads it by default.
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype="auto")
    tokenizer = AutoTokenizer.from_pretrained(args.model)

    start = time.perf_counter()
    oneshot(
        model=model,
        processor=tokenizer,
        dataset=dataset,  # has input_ids, so oneshot does not tokenize
        recipe=recipe(args.method, args.actorder),
        num_calibration_samples=len(calib),
        max_seq_length=seq_len,
        shuffle_calibration_samples=False,  # all windows, in file order
        batch_size=1,
        output_dir=args.output,  # saves model (pack-quantized) + tokenizer
        save_compressed=True,
    )
    wall = time.perf_counter() - start

    out = Path(args.output)
    for name in TOKENIZER_FILES + AUX_FILES:
        src = Path(args.model) / name
        if src.exists() and (name in TOKENIZER_FILES or not (out / name).exists()):
            shutil.copy(src, out / name)

    print(
        json.dumps(
            {
                "method": args.method,
                "actorder": args.actorder if args.method == "gptq" else None,
                "calibration_windows": len(calib),
                "window_len": seq_len,
                "threads": args.threads,
                "oneshot_wall_s": round(wall, 1),  # calibration + quantize + save
                # ru_maxrss is KiB on Linux
                "peak_rss_mib": round(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
