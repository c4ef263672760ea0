"""Writes a small Llama-shaped model whose Linear layers are 128-aligned (what FP8_BLOCK
needs), with seeded random f32 weights: config.json, model.safetensors, tokenizer files
copied from nowhere (none needed for quantization).

Usage: python3 make_aligned_model.py OUT_DIR
"""

import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

HIDDEN, FFN, LAYERS, VOCAB = 256, 384, 2, 1000


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    w = lambda *shape: (rng.standard_normal(shape, dtype=np.float32) * 0.05)  # noqa: E731
    tensors = {"model.embed_tokens.weight": w(VOCAB, HIDDEN), "model.norm.weight": np.ones(HIDDEN, np.float32)}
    for layer in range(LAYERS):
        p = f"model.layers.{layer}."
        tensors |= {
            p + "input_layernorm.weight": np.ones(HIDDEN, np.float32),
            p + "post_attention_layernorm.weight": np.ones(HIDDEN, np.float32),
            p + "self_attn.q_proj.weight": w(HIDDEN, HIDDEN),
            p + "self_attn.k_proj.weight": w(128, HIDDEN),
            p + "self_attn.v_proj.weight": w(128, HIDDEN),
            p + "self_attn.o_proj.weight": w(HIDDEN, HIDDEN),
            p + "mlp.gate_proj.weight": w(FFN, HIDDEN),
            p + "mlp.up_proj.weight": w(FFN, HIDDEN),
            p + "mlp.down_proj.weight": w(HIDDEN, FFN),
        }
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
        "intermediate_size": FFN, "num_hidden_layers": LAYERS, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": VOCAB, "rms_norm_eps": 1e-5,
        "tie_word_embeddings": True, "torch_dtype": "float32",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
