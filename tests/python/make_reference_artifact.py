#!/usr/bin/env python3
"""A reference compressed-tensors writer in numpy, written from FORMATS.md alone.

It exists to test the reader (`ct_reader.py`): the self-tests build tiny artifacts with
it, check that the reader accepts them, then corrupt them (one code, one scale, a shape,
the packing order, ...) and check that the reader rejects them. It shares no code with
the reader on purpose (its own safetensors writer/parser, its own bf16 and FP8 encoders),
so one mistake cannot hide in both.

It can also quantize a real model directory, which gives reference artifacts to run the
whole test module against without the Rust tool:

    python tests/python/make_reference_artifact.py --tiny-source /tmp/tiny      # optional
    python tests/python/make_reference_artifact.py --source MODEL_DIR --out /tmp/ref
    TEMPER_ARTIFACTS=/tmp/ref TEMPER_SOURCE_MODEL=MODEL_DIR pytest tests/python
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import shutil
import struct
from pathlib import Path

import numpy as np

SCHEME_NAMES = ["fp8-dynamic", "fp8-block", "fp8-static", "int8-w8a16", "int8-w8a16-g64", "int8-w8a8",
                "int4-w4a16", "int4-awq"]

# scheme -> (format, weight type, strategy, group size, input activations)
_SCHEMES = {
    "fp8-dynamic": ("float-quantized", "float", "channel", None, ("float", "token", None)),
    "fp8-block": ("float-quantized", "float", "block", None, ("float", "group", 128)),
    # Static: activations "tensor" with a calibrated input_scale (here a fixed stand-in).
    "fp8-static": ("float-quantized", "float", "tensor", None, ("float", "tensor", None)),
    "int8-w8a16": ("pack-quantized", "int", "channel", None, None),
    "int8-w8a16-g64": ("pack-quantized", "int", "group", 64, None),
    "int8-w8a8": ("int-quantized", "int", "channel", None, ("int", "token", None)),
    # 4 bits, asymmetric (zero points), group 128 or, where that does not divide the input
    # columns, 64 (then 32), in a config group of its own that names those modules.
    "int4-w4a16": ("pack-quantized", "int", "group", 128, None),
    "int4-awq": ("pack-quantized", "int", "group", 128, None),
}
_INT4 = ("int4-w4a16", "int4-awq")
INT4_LABEL = "INT4 W4A16 (group 128, zero points)"
_LINEAR = re.compile(r"^model\.layers\.\d+\..+\.weight$")
_NP = {"BF16": "<u2", "F16": "<f2", "F32": "<f4", "F8_E4M3": "u1", "I8": "<i1", "I32": "<i4", "I64": "<i8"}


# ----------------------------------------------------------------------------- containers

def write_safetensors(path: Path, tensors: dict) -> None:
    """tensors: {name: [dtype, shape, ndarray]} written in insertion order."""
    header, blobs, pos = {}, [], 0
    for name, (dtype, shape, arr) in tensors.items():
        b = np.ascontiguousarray(arr).astype(_NP[dtype], copy=False).tobytes()
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + len(b)]}
        blobs.append(b)
        pos += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def _read_one(path: Path) -> dict:
    data = Path(path).read_bytes()
    (n,) = struct.unpack_from("<Q", data, 0)
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        dt = np.dtype(_NP.get(info["dtype"], "u1"))
        arr = np.frombuffer(data, dtype=dt, count=(e - b) // dt.itemsize, offset=8 + n + b)
        out[name] = [info["dtype"], list(info["shape"]), arr.reshape(info["shape"])]
    return out


def read_model(directory: Path) -> dict:
    directory = Path(directory)
    index = directory / "model.safetensors.index.json"
    if index.exists():
        out = {}
        for fn in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            out.update(_read_one(directory / fn))
        return out
    return _read_one(directory / "model.safetensors")


# ----------------------------------------------------------------------------- numbers

def to_f32(dtype: str, arr: np.ndarray) -> np.ndarray:
    if dtype == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(np.float32)


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round to nearest even (finite inputs)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def scale_up(s: np.ndarray, dtype: str):
    """Rounds positive f32 scales up to the storage dtype: (stored array, f32 values)."""
    s = np.ascontiguousarray(s, np.float32)
    if dtype == "BF16":
        b = f32_to_bf16_bits(s)
        b = np.where(to_f32("BF16", b) < s, b + np.uint16(1), b).astype(np.uint16)
        b = np.where(b == 0, np.uint16(1), b).astype(np.uint16)  # underflow: smallest positive
        return b, to_f32("BF16", b)
    if dtype == "F16":
        h = s.astype(np.float16)
        h = np.where(h.astype(np.float32) < s, (h.view(np.uint16) + np.uint16(1)).view(np.float16), h)
        h = np.where(h == 0, np.float16(2.0**-24), h).astype(np.float16)
        return h, h.astype(np.float32)
    return s, s


def fp8_encode(x: np.ndarray) -> np.ndarray:
    """f32 -> F8_E4M3 (fn) bytes by arithmetic: nearest, ties to even, saturating."""
    a = np.minimum(np.abs(x).astype(np.float64), 448.0)
    sign = np.where(x < 0, 0x80, 0).astype(np.uint8)
    sub = a < 2.0**-6
    q_sub = np.rint(a * 2.0**9)  # 0..8; 8 is the smallest normal, byte 0x08
    _, e = np.frexp(np.where(sub, 1.0, a))  # a = m * 2^e, m in [0.5, 1)
    E = e - 1
    mant = np.rint((np.where(sub, 1.0, a) / np.exp2(E) - 1.0) * 8.0)
    carry = mant == 8
    E = np.where(carry, E + 1, E)
    mant = np.where(carry, 0, mant)
    normal = ((E + 7) << 3) + mant
    code = np.where(sub, q_sub, normal).astype(np.uint8)
    return np.where(code == 0, 0, code | sign).astype(np.uint8)


def fp8_decode(b: np.ndarray) -> np.ndarray:
    e = ((b >> 3) & 0xF).astype(np.float64)
    m = (b & 7).astype(np.float64)
    v = np.where(e == 0, m * 2.0**-9, (1 + m / 8) * np.exp2(e - 7))
    return np.where(b & 0x80, -v, v).astype(np.float32)


# ----------------------------------------------------------------------------- quantizer

def _groups(w: np.ndarray, strategy: str, group):
    """View of w as [G_rows, G_cols, n] groups + the inverse."""
    out, inp = w.shape
    if strategy == "channel":
        return w.reshape(out, 1, inp), lambda g: g.reshape(out, inp)
    if strategy == "tensor":
        return w.reshape(1, 1, out * inp), lambda g: g.reshape(out, inp)
    if strategy == "group":
        return w.reshape(out, inp // group, group), lambda g: g.reshape(out, inp)
    r, c = -(-out // 128), -(-inp // 128)
    p = np.zeros((r * 128, c * 128), w.dtype)
    p[:out, :inp] = w
    g = p.reshape(r, 128, c, 128).transpose(0, 2, 1, 3).reshape(r, c, 128 * 128)
    return g, lambda gg: gg.reshape(r, c, 128, 128).transpose(0, 2, 1, 3).reshape(r * 128, c * 128)[:out, :inp]


def quantize(scheme: str, prefix: str, w: np.ndarray, dtype: str, reciprocal: bool = False):
    """Returns ({name: [dtype, shape, array]}, report entry). `reciprocal` computes
    w * (1/scale) instead of w / scale (as SIMD quantizers do; differs only near ties)."""
    fmt, kind, strategy, group, _ = _SCHEMES[scheme]
    out, inp = w.shape
    qmax = np.float32(448.0 if kind == "float" else 127.0)
    g, back = _groups(w, strategy, group)
    absmax = np.abs(g).max(axis=2)
    zero = absmax == 0
    stored, s = scale_up(np.where(zero, np.float32(1), absmax / qmax), dtype)
    stored = np.where(zero, {"BF16": np.uint16(0x3F80), "F16": np.float16(1)}.get(dtype, np.float32(1)), stored)
    s = np.where(zero, np.float32(1), s)
    x = g * (np.float32(1) / s)[:, :, None] if reciprocal else g / s[:, :, None]
    if kind == "float":
        codes_g = fp8_encode(x)
        deq_g = fp8_decode(codes_g) * s[:, :, None]
    else:
        codes_g = np.rint(x).astype(np.int8)
        deq_g = codes_g.astype(np.float32) * s[:, :, None]
    codes, deq = back(codes_g), back(deq_g)
    err = np.abs(w - deq)
    bound = (np.maximum(np.abs(w) / 16, back(np.broadcast_to(s[:, :, None], g.shape).copy()) / 1024)
             if kind == "float" else back(np.broadcast_to(s[:, :, None], g.shape).copy()) / 2)
    rel = math.sqrt(float((err.astype(np.float64) ** 2).sum() / (w.astype(np.float64) ** 2).sum()))
    report = {"name": prefix + ".weight", "shape": [out, inp], "relative_rms_error": rel,
              "max_abs_error": float(err.max()), "max_error_over_bound": float((err / bound).max()),
              "zero_groups": int(zero.sum())}
    scale = [dtype, list(stored.shape), stored]
    if strategy == "tensor":
        scale = [dtype, [1], stored.reshape(1)]
    if fmt == "float-quantized" and _SCHEMES[scheme][4] == ("float", "tensor", None):
        # A calibrated input scale stand-in: any finite positive value is valid.
        one = {"BF16": np.array([0x3C00], np.uint16), "F16": np.array([0.0078125], np.float16)}
        input_scale = [dtype, [1], one.get(dtype, np.array([0.0078125], np.float32))]
        return {f"{prefix}.weight": ["F8_E4M3", [out, inp], codes], f"{prefix}.weight_scale": scale,
                f"{prefix}.input_scale": input_scale}, report
    if fmt == "float-quantized":
        return {f"{prefix}.weight": ["F8_E4M3", [out, inp], codes], f"{prefix}.weight_scale": scale}, report
    if fmt == "int-quantized":
        return {f"{prefix}.weight": ["I8", [out, inp], codes], f"{prefix}.weight_scale": scale}, report
    u = (codes.astype(np.int32) + 128).astype(np.uint32).reshape(out, inp // 4, 4)
    packed = (u[..., 0] | (u[..., 1] << 8) | (u[..., 2] << 16) | (u[..., 3] << 24)).view(np.int32)
    return {
        f"{prefix}.weight_packed": ["I32", [out, inp // 4], packed],
        f"{prefix}.weight_shape": ["I64", [2], np.array([out, inp], np.int64)],
        f"{prefix}.weight_scale": scale,
    }, report


def int4_group(cols: int, asked: int = 128) -> int:
    for g in (asked, 64, 32):
        if g <= asked and cols % g == 0:
            return g
    raise ValueError(f"no INT4 group divides {cols} columns")


def _pack_nibbles(v: np.ndarray) -> np.ndarray:
    """[rows, cols] values 0..15 -> int32 [rows, ceil(cols/8)], column 8j+i in bits 4i.."""
    rows, cols = v.shape
    v = np.pad(v.astype(np.uint32), ((0, 0), (0, -cols % 8))).reshape(rows, -1, 8)
    word = np.zeros(v.shape[:2], np.uint32)
    for i in range(8):
        word |= v[:, :, i] << np.uint32(4 * i)
    return word.view(np.int32)


def quantize_int4(prefix: str, w: np.ndarray, dtype: str, reciprocal: bool = False, clip=None):
    """Asymmetric minmax INT4 of one [out, in] f32 weight (round to nearest, codes and zero
    points stored + 8 in 0..15, zero points packed along the output dimension). `clip`
    ([out, groups] ratios, AWQ): each group's range shrunk by its ratio first. Returns
    ({name: [dtype, shape, array]}, report entry)."""
    out, inp = w.shape
    g = int4_group(inp)
    wg = w.reshape(out, inp // g, g)
    hi = np.maximum(wg.max(axis=2), 0)
    lo = np.minimum(wg.min(axis=2), 0)
    if clip is not None:
        hi, lo = hi * clip, lo * clip
    zero = hi == lo
    stored, s = scale_up(np.where(zero, np.float32(1), (hi - lo) / np.float32(15)), dtype)
    stored = np.where(zero, {"BF16": np.uint16(0x3F80), "F16": np.float16(1)}.get(dtype, np.float32(1)), stored)
    s = np.where(zero, np.float32(1), s)
    zp = np.where(zero, 8, np.clip(np.rint(-lo / s), 0, 15)).astype(np.int64)
    x = wg * (np.float32(1) / s)[:, :, None] if reciprocal else wg / s[:, :, None]
    codes_g = np.clip(np.rint(x) + zp[:, :, None], 0, 15).astype(np.int64)
    deq = ((codes_g - zp[:, :, None]) * s[:, :, None]).reshape(out, inp).astype(np.float32)
    codes = codes_g.reshape(out, inp)
    err = np.abs(w - deq)
    half = np.repeat(s, g, axis=1) / 2
    rel = math.sqrt(float((err.astype(np.float64) ** 2).sum() / max((w.astype(np.float64) ** 2).sum(), 1e-300)))
    report = {"name": prefix + ".weight", "shape": [out, inp], "relative_rms_error": rel,
              "max_abs_error": float(err.max()), "max_error_over_bound": float((err / half).max()),
              "zero_groups": int(zero.sum())}
    zp_rows = np.pad(zp, ((0, -out % 8), (0, 0))).reshape(-1, 8, inp // g)   # [P, 8, G]
    zp_packed = _pack_nibbles(zp_rows.transpose(0, 2, 1).reshape(-1, 8)).reshape(-1, inp // g)
    return {
        f"{prefix}.weight_packed": ["I32", [out, -(-inp // 8)], _pack_nibbles(codes)],
        f"{prefix}.weight_shape": ["I64", [2], np.array([out, inp], np.int64)],
        f"{prefix}.weight_scale": [dtype, [out, inp // g], stored],
        f"{prefix}.weight_zero_point": ["I32", [-(-out // 8), inp // g], zp_packed],
    }, report


def awq_plan(src: dict, seed: int = 11):
    """Made-up AWQ scales for the tiny model (a real search is not the point: the reader
    must recover whatever scales were folded in). Per layer: (alpha, s) for the three
    mappings input_layernorm -> q/k/v, post_attention_layernorm -> gate/up, up_proj ->
    down_proj; layer 1 keeps s = 1 (alpha None) on the first and the last."""
    rng = np.random.default_rng(seed)
    layers = sorted({int(n.split(".")[2]) for n in src if n.startswith("model.layers.")})
    plan = {}
    for i in layers:
        p = f"model.layers.{i}."
        hidden = src[p + "input_layernorm.weight"][1][0]
        inter = src[p + "mlp.up_proj.weight"][1][0]
        alphas = (None, 0.4, None) if i == 1 else (0.5, 0.25, 0.3)
        sizes = (hidden, hidden, inter)
        plan[i] = [(a, np.ones(n, np.float32) if a is None else np.exp(rng.normal(0, 0.4, n)).astype(np.float32))
                   for a, n in zip(alphas, sizes)]
    return plan


AWQ_CLIPS = np.float32(1) - np.float32(0.05) * np.arange(10, dtype=np.float32)


def awq_clips(name: str, out: int, groups: int) -> np.ndarray:
    """Made-up clip ratios of one Linear's groups: half keep 1.0, the others mostly 0.95
    or 0.9, a few down to 0.55 (a real search rarely clips further than that)."""
    rng = np.random.default_rng(sum(name.encode()))
    k = rng.choice([0, 1, 2, 3, 4, 9], size=(out, groups), p=[0.5, 0.2, 0.15, 0.07, 0.05, 0.03])
    return AWQ_CLIPS[k]


def awq_rewrite(src: dict, plan: dict):
    """{tensor name: rewritten f32 values} (weights: columns times s, rows / s; norms / s)
    and the manifest's mapping records."""
    out, mappings = {}, []

    def f32(name):
        if name not in out:
            dtype, shape, arr = src[name]
            out[name] = to_f32(dtype, arr).reshape(shape).copy()
        return out[name]

    for i, maps in plan.items():
        p = f"model.layers.{i}."
        specs = [(p + "input_layernorm.weight", [p + f"self_attn.{m}_proj" for m in "qkv"]),
                 (p + "post_attention_layernorm.weight", [p + "mlp.gate_proj", p + "mlp.up_proj"]),
                 (p + "mlp.up_proj.weight", [p + "mlp.down_proj"])]
        for (alpha, s), (producer, consumers) in zip(maps, specs):
            mappings.append({"layer": i, "producer": producer, "consumers": consumers, "alpha": alpha,
                             "mse_round_to_nearest": 1.0, "mse_awq": 1.0 if alpha is None else 0.5})
            if alpha is None:
                continue
            for c in consumers:
                f32(c + ".weight")[:] *= s[None, :]
            prod = f32(producer)
            if prod.ndim == 1:
                prod[:] /= s
            else:
                prod[:] /= s[:, None]
    return out, mappings


def encode_like(dtype: str, x: np.ndarray) -> np.ndarray:
    """f32 -> the storage array of `dtype`, round to nearest even."""
    if dtype == "BF16":
        return f32_to_bf16_bits(x)
    return x.astype({"F16": np.float16, "F32": np.float32}[dtype])


def quantization_config(scheme: str, fallback: dict | None = None) -> dict:
    if scheme in _INT4:
        weights = {"num_bits": 4, "type": "int", "strategy": "group", "symmetric": False, "dynamic": False,
                   "group_size": 128, "block_structure": None, "actorder": None, "observer": "minmax"}
        groups = {"group_0": {"targets": ["Linear"], "weights": weights, "input_activations": None}}
        for i, (g, modules) in enumerate(sorted((fallback or {}).items(), reverse=True)):
            groups[f"group_{i + 1}"] = {"targets": sorted(modules), "weights": {**weights, "group_size": g},
                                        "input_activations": None, "output_activations": None}
        return {"quant_method": "compressed-tensors", "format": "pack-quantized",
                "quantization_status": "compressed", "ignore": ["lm_head"], "kv_cache_scheme": None,
                "config_groups": groups}
    fmt, kind, strategy, group, act = _SCHEMES[scheme]
    weights = {"num_bits": 8, "type": kind, "strategy": strategy, "symmetric": True, "dynamic": False,
               "group_size": group, "block_structure": [128, 128] if strategy == "block" else None,
               "actorder": None, "observer": "minmax"}
    acts = None
    if act is not None:
        acts = {"num_bits": 8, "type": act[0], "strategy": act[1], "symmetric": True,
                "dynamic": act[1] != "tensor", "group_size": act[2]}
    return {"quant_method": "compressed-tensors", "format": fmt, "quantization_status": "compressed",
            "ignore": ["lm_head"], "kv_cache_scheme": None,
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights,
                                          "input_activations": acts}}}


def make_artifact(source: Path, out: Path, scheme: str, shards: int = 1, mutate=None,
                  mutate_report=None, reciprocal: bool = False) -> Path:
    """Quantizes `source` into `out`. `mutate(tensors)` may corrupt the tensor dict
    ({name: [dtype, shape, array]}) before it is written (the manifest then describes
    the corrupted files, so only the content checks can catch it)."""
    source, out = Path(source), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    src = read_model(source)
    tensors, reports = {}, []
    rewritten, mappings, fallback = {}, None, {}
    if scheme == "int4-awq":
        rewritten, mappings = awq_rewrite(src, awq_plan(src))
    for name, (dtype, shape, arr) in src.items():
        values = rewritten.get(name)
        if _LINEAR.match(name) and len(shape) == 2:
            w = values if values is not None else to_f32(dtype, arr).reshape(shape)
            if scheme in _INT4:
                g = int4_group(shape[1])
                clip = awq_clips(name, shape[0], shape[1] // g) if scheme == "int4-awq" else None
                q, rep = quantize_int4(name[: -len(".weight")], w, dtype, reciprocal, clip)
                if g != 128:
                    fallback.setdefault(g, []).append(name[: -len(".weight")])
            else:
                q, rep = quantize(scheme, name[: -len(".weight")], w, dtype, reciprocal)
            tensors.update(q)
            reports.append(rep)
        elif values is not None:
            tensors[name] = [dtype, shape, encode_like(dtype, values)]
        else:
            tensors[name] = [dtype, shape, arr]
    if mutate is not None:
        mutate(tensors)
    if mutate_report is not None:
        mutate_report(reports)
    files = []
    names = list(tensors)
    if shards == 1:
        write_safetensors(out / "model.safetensors", tensors)
        files.append("model.safetensors")
    else:
        per = -(-len(names) // shards)
        weight_map = {}
        for i in range(shards):
            fn = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: tensors[n] for n in names[i * per:(i + 1) * per]}
            write_safetensors(out / fn, part)
            weight_map.update({n: fn for n in part})
            files.append(fn)
        total = sum(np.asarray(a).nbytes for _, _, a in tensors.values())
        (out / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
        files.append("model.safetensors.index.json")
    cfg = json.loads((source / "config.json").read_text())
    cfg["quantization_config"] = quantization_config(scheme, fallback)
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    (out / "serving.properties").write_text("option.quantize=compressed-tensors\n")
    files += ["config.json", "serving.properties"]
    for p in sorted(source.iterdir()):
        if p.is_file() and not p.name.endswith(".safetensors") and p.name not in (
                "config.json", "model.safetensors.index.json"):
            shutil.copyfile(p, out / p.name)
            files.append(p.name)
    outputs = []
    for fn in files:
        data = (out / fn).read_bytes()
        outputs.append({"path": fn, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    inputs = []
    for p in sorted(source.iterdir()):
        if p.is_file():
            data = p.read_bytes()
            inputs.append({"path": p.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    options = {"scheme": scheme, "rounding": "f32"}
    report = {"tensors": reports}
    if scheme in _INT4:
        report = {"scheme": INT4_LABEL, "format": "pack-quantized", "tensors": reports}
        options["calibration"] = None if mappings is None else {
            "mappings_scaled": sum(m["alpha"] is not None for m in mappings), "mappings": mappings}
    manifest = {"schema_version": 1, "tool": "make_reference_artifact.py", "source": str(source),
                "inputs": inputs,
                "passes": [{"name": "quantize", "options": options, "report": report}],
                "outputs": outputs, "warnings": []}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


# ----------------------------------------------------------------------------- tiny model

def make_tiny_source(directory: Path, dtype: str = "BF16", seed: int = 0, layers: int = 2,
                     inter: int = 320) -> Path:
    """A small Llama-shaped model with tied embeddings. Shapes are chosen to exercise
    partial 128x128 blocks (64, 192, 320 are not multiples of 128), groups of 64 and
    packing by 4. One row, one group of 64 and one 128x128 block of layer 0's weights are
    all zero; a few outliers make rows with a large absmax. (`inter=256` makes down_proj's
    input a multiple of 128, as SmolLM2's 1536, for INT4's group 128 next to group 64.)"""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    hidden, kv, vocab = 192, 64, 300

    def enc(x):
        x = x.astype(np.float32)
        if dtype == "BF16":
            return f32_to_bf16_bits(x)
        return x.astype({"F16": np.float16, "F32": np.float32}[dtype])

    t = {"model.embed_tokens.weight": [dtype, [vocab, hidden], enc(rng.normal(0, 0.02, (vocab, hidden)))]}
    for i in range(layers):
        p = f"model.layers.{i}."
        mats = {
            "self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (kv, hidden),
            "self_attn.v_proj": (kv, hidden), "self_attn.o_proj": (hidden, hidden),
            "mlp.gate_proj": (inter, hidden), "mlp.up_proj": (inter, hidden),
            "mlp.down_proj": (hidden, inter),
        }
        t[p + "input_layernorm.weight"] = [dtype, [hidden], enc(1 + rng.normal(0, 0.1, hidden))]
        for m, (o, n) in mats.items():
            w = rng.standard_t(5, (o, n)) * 0.02 * np.exp(rng.normal(0, 0.5, (o, 1)))
            w[rng.integers(0, o), rng.integers(0, n)] *= 12  # an outlier
            if i == 0:
                w[3, :] = 0                  # an all-zero row
                w[5, 64:128] = 0             # an all-zero group of 64
                if m == "mlp.down_proj":
                    w[128:, 128:256] = 0     # an all-zero (partial) 128x128 block
            t[p + m + ".weight"] = [dtype, [o, n], enc(w)]
        t[p + "post_attention_layernorm.weight"] = [dtype, [hidden], enc(1 + rng.normal(0, 0.1, hidden))]
    t["model.norm.weight"] = [dtype, [hidden], enc(np.ones(hidden))]
    write_safetensors(directory / "model.safetensors", t)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
           "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": 3,
           "num_key_value_heads": 1, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
           "vocab_size": vocab, "tie_word_embeddings": True,
           "torch_dtype": {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}[dtype],
           "bos_token_id": 1, "eos_token_id": 2}
    (directory / "config.json").write_text(json.dumps(cfg, indent=2))
    (directory / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "BPE"}}))
    (directory / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    (directory / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    return directory


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny-source", type=Path, help="write a tiny random bf16 model here")
    ap.add_argument("--source", type=Path, help="model directory to quantize")
    ap.add_argument("--out", type=Path, help="write one subdirectory per scheme here")
    ap.add_argument("--schemes", nargs="*", default=SCHEME_NAMES)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--reciprocal", action="store_true", help="quantize w * (1/scale)")
    a = ap.parse_args()
    if a.tiny_source:
        make_tiny_source(a.tiny_source)
        print(f"wrote {a.tiny_source}")
    if a.source and a.out:
        for s in a.schemes:
            make_artifact(a.source, a.out / s, s, shards=a.shards, reciprocal=a.reciprocal)
            print(f"wrote {a.out / s}")


if __name__ == "__main__":
    main()
