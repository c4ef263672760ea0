"""Independent check of temper's tensor-parallel rank files (vLLM `sharded_state` layout).

No temper code: the expected split is derived here from config.json by the documented
Megatron/vLLM rules (README "Sharding", FORMATS.md "Tensor-parallel pre-sharded
checkpoints"), then every source tensor is reassembled from the rank files and compared
with the unsharded tensor byte for byte, padding rows must be zeros, every byte of every
rank tensor must be accounted for, and each rank file's SHA-256 must match the manifest.

Artifacts (made by scripts/test.sh, in $TEMPER_ARTIFACTS):
  tp3-dense   SmolLM2 --tensor-parallel 3          (compared with $TEMPER_SOURCE_MODEL)
  tp3-int8    SmolLM2 --quantize int8 --tensor-parallel 3   (compared with int8-w8a16)
  tp3-int4    SmolLM2 --quantize int4 --tensor-parallel 3   (compared with int4-w4a16)
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import ct_reader

RANK_FILE = re.compile(r"^model-rank-(\d+)-part-(\d+)\.safetensors$")
VOCAB_PADDING = 64


def rank_tensors(directory: Path) -> dict[int, dict]:
    """{rank: {name: TensorRef}} from the rank files of `directory`."""
    ranks: dict[int, dict] = {}
    for path in sorted(directory.iterdir()):
        m = RANK_FILE.match(path.name)
        if not m:
            continue
        tensors, _ = ct_reader.read_safetensors(path)
        bucket = ranks.setdefault(int(m.group(1)), {})
        for name, ref in tensors.items():
            assert name not in bucket, f"{name} appears twice on rank {m.group(1)}"
            bucket[name] = ref
    return ranks


def expected_split(config: dict, degree: int, name: str, shape: tuple) -> list[tuple]:
    """[(rank, target name, dim or None, (start, end), at)] for one source tensor, by the
    rules: q/k/v -> qkv_proj, gate/up -> gate_up_proj (rows), o/down by input columns,
    vocab rows padded to a multiple of 64, norms replicated, kv heads replicated when the
    ranks outnumber them; per-tensor scales of fused members stack at the member index;
    weight_shape is rewritten per rank (checked separately)."""
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    hidden = config["hidden_size"]
    hd = config.get("head_dim") or hidden // heads
    inter, vocab = config["intermediate_size"], config["vocab_size"]
    out = []
    module, _, suffix = name.rpartition(".")
    parent, _, leaf = module.rpartition(".")
    if name in ("model.embed_tokens.weight", "lm_head.weight"):
        padded = -(-vocab // VOCAB_PADDING) * VOCAB_PADDING
        per = padded // degree
        target = "lm_head.weight" if config.get("tie_word_embeddings") else name
        for r in range(degree):
            start, end = min(r * per, vocab), min((r + 1) * per, vocab)
            out.append((r, target, 0, (start, end), 0))
        return out
    if leaf in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"):
        if suffix == "weight_shape":
            return out
        qkv = leaf in ("q_proj", "k_proj", "v_proj")
        fused = f"{parent}.{'qkv_proj' if qkv else 'gate_up_proj'}.{suffix}"
        index = ["q_proj", "k_proj", "v_proj"].index(leaf) if qkv else ["gate_proj", "up_proj"].index(leaf)
        members = 3 if qkv else 2
        for r in range(degree):
            if qkv:
                q_rows, kv_rows = heads // degree * hd, max(1, kv // degree) * hd
                if index == 0:
                    rows, at = (r * q_rows, (r + 1) * q_rows), 0
                else:
                    first = r // (degree // kv) if degree >= kv else r * (kv // degree)
                    rows, at = (first * hd, first * hd + kv_rows), q_rows + (index - 1) * kv_rows
            else:
                f = inter // degree
                rows, at = (r * f, (r + 1) * f), index * f
            if int(np.prod(shape)) == 1:
                out.append((r, fused, None, (0, 1), index))
            elif suffix == "weight_zero_point":
                # INT4 zero points are packed eight output rows per int32 row.
                out.append((r, fused, 0, (rows[0] // 8, rows[1] // 8), at // 8))
            else:
                out.append((r, fused, 0, rows, at))
        del members
        return out
    if leaf in ("o_proj", "down_proj"):
        cols = heads * hd if leaf == "o_proj" else inter
        per = cols // degree
        for r in range(degree):
            if suffix == "weight_shape":
                continue
            if len(shape) == 2 and shape[1] > 1:
                step = cols // shape[1]
                c = per // step
                out.append((r, name, 1, (r * c, (r + 1) * c), 0))
            else:
                out.append((r, name, None, (0, shape[0] if shape else 1), 0))
        return out
    assert "norm" in name and len(shape) == 1, f"no rule for {name} {shape}"
    return [(r, name, None, (0, shape[0]), 0) for r in range(degree)]


def as_rows(ref) -> np.ndarray:
    """A 2-D (or 1-D) tensor's bytes as [rows, row_bytes]."""
    raw = np.asarray(ref.raw())
    rows = ref.shape[0] if ref.shape else 1
    return raw.reshape(rows, -1)


def check_sharded(source_dir: Path, sharded_dir: Path) -> list[str]:
    """Problems found (empty when the rank files hold exactly the source's bytes)."""
    problems: list[str] = []
    config = json.loads((sharded_dir / "config.json").read_text())
    manifest = json.loads((sharded_dir / "manifest.json").read_text())
    sharding = manifest["sharding"]
    degree = sharding["tensor_parallel_degree"]
    source = ct_reader.load_checkpoint(source_dir).tensors
    ranks = rank_tensors(sharded_dir)
    if sorted(ranks) != list(range(degree)):
        return [f"rank files for ranks {sorted(ranks)}, expected 0..{degree - 1}"]
    # SHA-256 of every rank file, as the manifest says.
    for rank in sharding["ranks"]:
        for f in rank["files"]:
            digest = hashlib.sha256((sharded_dir / f["path"]).read_bytes()).hexdigest()
            if digest != f["sha256"]:
                problems.append(f"{f['path']}: SHA-256 {digest} but the manifest says {f['sha256']}")
    # The manifest's per-tensor record agrees with the independent derivation.
    recorded = {s["source"]: s["pieces"] for s in sharding["tensors"]}
    covered = {r: {n: np.zeros(as_rows(t).shape, dtype=bool) for n, t in ts.items()} for r, ts in ranks.items()}
    for name, ref in source.items():
        want = expected_split(config, degree, name, ref.shape)
        got = [
            (p["rank"], p["target"], p["copy"]["dim"], tuple(p["copy"]["range"]), p["copy"]["at"])
            for p in recorded.get(name, [])
            if "copy" in p
        ]
        if got != want:
            problems.append(f"{name}: manifest pieces {got} differ from the rules' {want}")
            continue
        src = as_rows(ref)
        elem = ct_reader.DTYPE_SIZES[ref.dtype]
        for rank, target, dim, (a, b), at in want:
            t = ranks[rank].get(target)
            if t is None:
                problems.append(f"rank {rank} lacks {target}")
                continue
            if t.dtype != ref.dtype:
                problems.append(f"rank {rank} {target}: dtype {t.dtype}, source {name} is {ref.dtype}")
                continue
            dst = as_rows(t)
            cov = covered[rank][target]
            if dim is None and int(np.prod(ref.shape or (1,))) == 1 and t.shape and t.shape[0] > 1:
                flat, fcov = dst.reshape(-1), cov.reshape(-1)
                part, pc = flat[at * elem:(at + 1) * elem], fcov[at * elem:(at + 1) * elem]
                expect = src.reshape(-1)
            elif dim is None:
                part, pc, expect = dst, cov, src
            elif dim == 0:
                part, pc = dst[at:at + (b - a)], cov[at:at + (b - a)]
                expect = src[a:b]
            else:
                part, pc = dst[:, :], cov[:, :]
                expect = src[:, a * elem:b * elem]
            if part.shape != expect.shape or not np.array_equal(part, expect):
                problems.append(f"{name} -> rank {rank} {target}: bytes differ from the source")
            pc[...] = True
    # weight_shape tensors hold the rank's own [rows, cols]; codes per int32 from num_bits.
    groups = config["quantization_config"].get("config_groups", {}) if "quantization_config" in config else {}
    bits = {g["weights"]["num_bits"] for g in groups.values()} or {8}
    assert len(bits) == 1, f"mixed bit widths {bits}"
    per_int32 = 32 // bits.pop()
    for rank, ts in ranks.items():
        for tname, t in ts.items():
            if tname.endswith(".weight_shape"):
                packed = ts[tname[: -len("weight_shape")] + "weight_packed"]
                want = [packed.shape[0], packed.shape[1] * per_int32]
                got = t.ints().tolist()
                if got != want:
                    problems.append(f"rank {rank} {tname}: {got}, the rank's weight is {want}")
                covered[rank][tname][...] = True
    # Every byte of every rank tensor came from the source, except vocab padding: zeros.
    for rank, ts in ranks.items():
        for tname, cov in covered[rank].items():
            rows = as_rows(ts[tname])
            if tname in ("lm_head.weight", "model.embed_tokens.weight"):
                if np.any(rows[~cov] != 0):
                    problems.append(f"rank {rank} {tname}: padding rows are not zero")
            elif not cov.all():
                problems.append(f"rank {rank} {tname}: {int((~cov).sum())} bytes come from no source tensor")
    return problems


def _dirs(env, name: str, source_scheme: str | None):
    art = env.artifact(name)
    src = env.source() if source_scheme is None else env.artifact(source_scheme)
    return src, art


@pytest.mark.parametrize(
    "name,source", [("tp3-dense", None), ("tp3-int8", "int8-w8a16"), ("tp3-int4", "int4-w4a16")]
)
def test_rank_files_reassemble_to_the_unsharded_tensors(env, name, source):
    src, art = _dirs(env, name, source)
    problems = check_sharded(src, art)
    assert problems == [], "\n".join(problems[:20])
    props = (art / "serving.properties").read_text()
    assert "option.tensor_parallel_degree=3" in props and "option.load_format=sharded_state" in props


def test_a_flipped_byte_is_found(env, tmp_path):
    """The checker can fail: one changed byte in a rank file is reported."""
    _, art = _dirs(env, "tp3-dense", None)
    copy = tmp_path / "tp3"
    shutil.copytree(art, copy)
    victim = copy / "model-rank-1-part-0.safetensors"
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0x01
    victim.write_bytes(bytes(data))
    problems = check_sharded(env.source(), copy)
    assert any("SHA-256" in p for p in problems), problems
    assert any("bytes differ" in p for p in problems), problems
