"""An independent reader and checker for compressed-tensors checkpoints.

Everything here follows /work/shared/design/FORMATS.md ("Quantized checkpoints") and the
safetensors container definition, and nothing else (INT4, which FORMATS.md's table does not
list yet, follows compressed-tensors' pack-quantized convention for 4 bits with zero
points: see `unpack_nibbles`, `unpack_zero_points`, `check_int4_module`, and AWQ below
`check_awq_values`): no code is shared with the Rust tool,
and nothing is shared with `make_reference_artifact.py` (the numpy writer the self-tests
use), so a mistake in one is not hidden by the same mistake in the other.

Each `check_*` function returns a list of problems (strings); an empty list means the
artifact passed. The functions never raise on a bad artifact: a file that cannot be parsed
is reported as a problem too.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------------------
# Schemes (FORMATS.md table) and tolerances
# --------------------------------------------------------------------------------------

FP8_MAX = 448.0
INT8_MAX = 127
BLOCK = 128

# What each artifact subdirectory must hold. `act` is the expected `input_activations`
# (None: must be null or absent). FP8_BLOCK's activations follow compressed-tensors'
# FP8_BLOCK preset (dynamic per-token-group, group 128), which vLLM's block kernel uses.
SCHEMES = {
    "fp8-dynamic": dict(
        format="float-quantized", type="float", strategy="channel", group_size=None,
        block_structure=None,
        act=dict(num_bits=8, type="float", strategy="token", symmetric=True, dynamic=True,
                 group_size=None),
    ),
    "fp8-block": dict(
        format="float-quantized", type="float", strategy="block", group_size=None,
        block_structure=[BLOCK, BLOCK],
        act=dict(num_bits=8, type="float", strategy="group", symmetric=True, dynamic=True,
                 group_size=128),
    ),
    # Static FP8: one weight scale per tensor and a calibrated `input_scale` [1] per Linear.
    "fp8-static": dict(
        format="float-quantized", type="float", strategy="tensor", group_size=None,
        block_structure=None,
        act=dict(num_bits=8, type="float", strategy="tensor", symmetric=True, dynamic=False,
                 group_size=None),
    ),
    "int8-w8a16": dict(
        format="pack-quantized", type="int", strategy="channel", group_size=None,
        block_structure=None, act=None,
    ),
    "int8-w8a16-g64": dict(
        format="pack-quantized", type="int", strategy="group", group_size=64,
        block_structure=None, act=None,
    ),
    "int8-w8a8": dict(
        format="int-quantized", type="int", strategy="channel", group_size=None,
        block_structure=None,
        act=dict(num_bits=8, type="int", strategy="token", symmetric=True, dynamic=True,
                 group_size=None),
    ),
    # INT4 W4A16 with zero points (asymmetric minmax, round to nearest), group 128; a Linear
    # whose input columns are not a multiple of 128 uses the largest of INT4_FALLBACK_GROUPS
    # that divides them, declared as its own config group naming those modules (named
    # targets win over the "Linear" catch-all).
    "int4-w4a16": dict(
        format="pack-quantized", type="int", strategy="group", group_size=128,
        block_structure=None, act=None, num_bits=4, symmetric=False,
        report_scheme="INT4 W4A16 (group 128, zero points)",
    ),
    # The same format after AWQ: per input channel scales folded into the weights (columns
    # multiplied) and into what produces their input (norm weights / up_proj rows divided),
    # and each group's minmax range shrunk by a searched clip ratio from AWQ_CLIPS (the
    # weights beyond it saturate at code 0 or 15).
    "int4-awq": dict(
        format="pack-quantized", type="int", strategy="group", group_size=128,
        block_structure=None, act=None, num_bits=4, symmetric=False, awq=True,
        report_scheme="INT4 W4A16 (group 128, zero points)", clip=True,
    ),
}

# Relative RMS error ||w - w_hat|| / ||w|| that no tensor may exceed. Measured on
# SmolLM2-135M (the Q4_1 GGUF imported to bf16) with make_reference_artifact.py, over
# the 210 quantized tensors (min / median / max):
#   int8 channel   0.77% / 0.84% / 1.17%   (row absmax/rms ~3.5: s/sqrt(12) per element)
#   int8 group 64  0.60% / 0.62% / 0.77%
#   fp8 channel    2.58% / 2.63% / 2.65%   (3 mantissa bits: ~2^-4/sqrt(3) relative)
#   fp8 block      2.62% / 2.64% / 2.67%
# A limit of 0.5% for int8 channel would reject a correct quantizer; the limits below sit
# about 30% above the worst tensor. (The exact-code and tight-scale checks are stricter
# still; this limit guards against a systematic error those would miss.)
RMS_LIMIT = {
    "fp8-dynamic": 0.035,
    "fp8-block": 0.035,
    "fp8-static": 0.035,     # per tensor: 2.61% / 2.65% / 2.67% (floating point barely cares)
    "int8-w8a16": 0.015,
    "int8-w8a16-g64": 0.010,
    "int8-w8a8": 0.015,
    # INT4 round-to-nearest, 15 steps per group (128, or 64 for SmolLM2's 576 columns):
    # 9.1% / 9.4% / 11.0% on SmolLM2-135M (temper's artifact).
    "int4-w4a16": 0.145,
    # AWQ, against the rewritten weights it quantized (W_src * s): 5.1% / 9.9% / 13.0%, and
    # the same with clip search (clipped groups trade weight error for output error).
    "int4-awq": 0.17,
}

BOUND_SLACK = 1e-3       # per-element bound tolerance (relative)
MANIFEST_RTOL = 1e-3     # manifest relative_rms_error vs ours
SCALE_RTOL = 1e-6        # slack on "scale is the smallest storage value >= absmax/qmax"

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "generation_config.json", "vocab.json", "merges.txt", "tokenizer.model",
    "added_tokens.json", "chat_template.jinja",
)

QUANT_LINEAR = re.compile(r"^model\.layers\.\d+\..+\.weight$")
# INT4: stored codes and zero points are the signed value + 8, in 0..15.
INT4_LEVELS = 15
# AWQ's clip search: a group's range [min(w, 0), max(w, 0)] times one of 1.0, 0.95, ..., 0.55
# (as float32: 1 - 0.05 k) before the grid is laid over it.
AWQ_CLIPS = tuple(np.float32(1) - np.float32(0.05) * np.float32(k) for k in range(10))
INT4_FALLBACK_GROUPS = (64, 32)
# AWQ rewrites these (divided by the scales of the Linears that read them).
AWQ_NORMS = re.compile(r"^model\.layers\.\d+\.(input_layernorm|post_attention_layernorm)\.weight$")
# Relative rounding error of a value stored in the norm's dtype (round to nearest: half an
# ulp, 2^-8 for bf16), plus a little for the f32 divisions on both sides.
NORM_EPS = {"BF16": 2.0**-8 + 2.0**-20, "F16": 2.0**-11 + 2.0**-20, "F32": 2.0**-21}
SHARD_NAME = re.compile(r"^model-(\d{5})-of-(\d{5})\.safetensors$")

# --------------------------------------------------------------------------------------
# Number formats
# --------------------------------------------------------------------------------------


def _e4m3fn_table() -> np.ndarray:
    """Value of every F8_E4M3 ("fn") byte: 1 sign, 4 exponent bits (bias 7), 3 mantissa
    bits; exponent 0 is subnormal m * 2^-9; S.1111.111 is NaN; no infinities."""
    t = np.empty(256, np.float64)
    for b in range(256):
        sign = -1.0 if b & 0x80 else 1.0
        e, m = (b >> 3) & 0xF, b & 0x7
        if e == 0xF and m == 0x7:
            t[b] = np.nan
        elif e == 0:
            t[b] = sign * m * 2.0**-9
        else:
            t[b] = sign * (1.0 + m / 8.0) * 2.0 ** (e - 7)
    return t


FP8_TABLE64 = _e4m3fn_table()
FP8_TABLE = FP8_TABLE64.astype(np.float32)
# Non-negative finite values, ascending; the index equals the byte (0x00..0x7E).
FP8_POS = FP8_TABLE64[:0x7F].copy()
assert FP8_POS[-1] == FP8_MAX and np.all(np.diff(FP8_POS) > 0)


def fp8_round(x: np.ndarray):
    """Round f32 values to the nearest F8_E4M3 value, ties to the even byte, saturating
    at +-448. Returns (value as float64, tie_distance) where tie_distance is how far |x|
    is from the nearest rounding midpoint (to tolerate implementations whose w/scale
    differs from numpy's correctly rounded division by an ulp or two)."""
    a = np.minimum(np.abs(x.astype(np.float64)), FP8_MAX)
    hi = np.clip(np.searchsorted(FP8_POS, a, side="left"), 1, len(FP8_POS) - 1)
    lo = hi - 1
    d_lo = a - FP8_POS[lo]
    d_hi = FP8_POS[hi] - a
    pick = np.where(d_hi < d_lo, hi, np.where(d_lo < d_hi, lo, np.where(lo % 2 == 0, lo, hi)))
    return np.copysign(FP8_POS[pick], x), np.abs(d_lo - d_hi) * 0.5


def _fp8_rounding_intervals():
    """For every byte: the interval of |x| that rounds to its magnitude (midpoints to the
    neighbouring values; 448 takes everything above, saturating). NaN bytes: empty."""
    lo = np.full(256, np.inf, np.float32)
    hi = np.full(256, -np.inf, np.float32)
    for b in range(256):
        c = b & 0x7F
        if c == 0x7F:
            continue
        lo[b] = 0.0 if c == 0 else (FP8_POS[c - 1] + FP8_POS[c]) / 2
        hi[b] = np.inf if c == 0x7E else (FP8_POS[c] + FP8_POS[c + 1]) / 2
    return lo, hi


FP8_MID_LO, FP8_MID_HI = _fp8_rounding_intervals()
FP8_MID_LO_TOL = FP8_MID_LO * np.float32(1 - 2.0**-16)
FP8_MID_HI_TOL = FP8_MID_HI * np.float32(1 + 2.0**-16)


def decode_float(dtype: str, raw: np.ndarray, shape) -> np.ndarray:
    """BF16 / F16 / F32 little-endian bytes -> float32 array."""
    if dtype == "BF16":
        out = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
    elif dtype == "F16":
        out = raw.view("<f2").astype(np.float32)
    elif dtype == "F32":
        out = raw.view("<f4").astype(np.float32)
    elif dtype == "F64":
        out = raw.view("<f8").astype(np.float32)
    else:
        raise ValueError(f"not a float dtype: {dtype}")
    return out.reshape(shape)


def storage_predecessor(s: np.ndarray, dtype: str) -> np.ndarray:
    """For positive scales exactly representable in `dtype`: the next smaller value of
    that dtype (as float32)."""
    s = np.ascontiguousarray(s, np.float32)
    if dtype == "BF16":
        bits = (s.view(np.uint32) >> 16).astype(np.uint32) - 1
        return (bits << 16).view(np.float32)
    if dtype == "F16":
        bits = s.astype(np.float16).view(np.uint16) - np.uint16(1)
        return bits.view(np.float16).astype(np.float32)
    return np.nextafter(s, np.float32(0))


# --------------------------------------------------------------------------------------
# safetensors container
# --------------------------------------------------------------------------------------

DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2,
    "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}


class FormatError(Exception):
    pass


def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise FormatError(f"duplicate JSON key {k!r}")
        d[k] = v
    return d


@dataclass
class TensorRef:
    name: str
    file: Path
    dtype: str
    shape: tuple
    _mm: np.ndarray = field(repr=False)
    start: int = 0
    end: int = 0

    def raw(self) -> np.ndarray:
        """The tensor's bytes as a uint8 view of the memory-mapped file."""
        return self._mm[self.start:self.end]

    def floats(self) -> np.ndarray:
        return decode_float(self.dtype, self.raw(), self.shape)

    def ints(self) -> np.ndarray:
        fmt = {"I8": "<i1", "I16": "<i2", "I32": "<i4", "I64": "<i8", "U8": "<u1"}[self.dtype]
        return self.raw().view(fmt).reshape(self.shape)


def read_safetensors(path: Path) -> tuple[dict, dict]:
    """Parses one safetensors file by the spec: u64 LE header size N, N bytes of JSON
    ({name: {dtype, shape, data_offsets}}, optional __metadata__ of strings), then the
    data buffer; every tensor's [begin, end) is relative to the buffer, has exactly
    prod(shape) * itemsize bytes, and the tensors tile the buffer with no gap or overlap.
    Raises FormatError. Returns ({name: TensorRef}, metadata)."""
    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        raise FormatError(f"{path.name}: {size} bytes, too short for a safetensors header")
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n == 0 or 8 + n > size:
            raise FormatError(f"{path.name}: header size {n} does not fit a {size}-byte file")
        text = f.read(n)
    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{path.name}: header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path.name}: header is not a JSON object")
    meta = header.pop("__metadata__", None)
    if meta is not None and not (
        isinstance(meta, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    ):
        raise FormatError(f"{path.name}: __metadata__ must map strings to strings")
    buffer_len = size - 8 - n
    mm = np.memmap(path, dtype=np.uint8, mode="r") if size > 0 else None
    tensors = {}
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise FormatError(f"{path.name}: {name}: entry must have exactly dtype, shape, data_offsets")
        dtype, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPE_SIZES:
            raise FormatError(f"{path.name}: {name}: unknown dtype {dtype!r}")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise FormatError(f"{path.name}: {name}: bad shape {shape!r}")
        if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int) for o in offs)):
            raise FormatError(f"{path.name}: {name}: bad data_offsets {offs!r}")
        b, e = offs
        nbytes = math.prod(shape) * DTYPE_SIZES[dtype]
        if not (0 <= b <= e <= buffer_len) or e - b != nbytes:
            raise FormatError(
                f"{path.name}: {name}: data_offsets {offs} do not hold {nbytes} bytes "
                f"of {dtype}{shape} inside a {buffer_len}-byte buffer")
        spans.append((b, e, name))
        tensors[name] = TensorRef(name, path, dtype, tuple(shape), mm, 8 + n + b, 8 + n + e)
    pos = 0
    for b, e, name in sorted(spans):
        if b != pos:
            raise FormatError(f"{path.name}: {name}: starts at {b}, expected {pos} (gap or overlap)")
        pos = e
    if pos != buffer_len:
        raise FormatError(f"{path.name}: tensors cover {pos} of {buffer_len} buffer bytes")
    return tensors, (meta or {})


def cross_check_with_safetensors_package(path: Path, tensors: dict) -> list[str]:
    """The `safetensors` package (what the serving engines load with) must see the same
    names, dtypes and shapes as our own parser."""
    from safetensors import safe_open

    problems = []
    try:
        with safe_open(str(path), framework="np") as f:
            keys = set(f.keys())
            if keys != set(tensors):
                problems.append(f"{path.name}: safetensors package sees other names: "
                                f"{sorted(keys ^ set(tensors))[:5]}")
            for k in keys & set(tensors):
                sl = f.get_slice(k)
                if sl.get_dtype() != tensors[k].dtype or tuple(sl.get_shape()) != tensors[k].shape:
                    problems.append(f"{path.name}: {k}: safetensors package reads "
                                    f"{sl.get_dtype()}{sl.get_shape()}")
    except Exception as e:  # noqa: BLE001 - any refusal is a finding
        problems.append(f"{path.name}: the safetensors package refuses the file: {e}")
    return problems


@dataclass
class Checkpoint:
    tensors: dict          # name -> TensorRef
    problems: list         # container / index problems
    files: list            # weight files, relative names


def load_checkpoint(directory: Path, cross_check: bool = True) -> Checkpoint:
    """All tensors of a model directory: `model.safetensors`, or the shards named by
    `model.safetensors.index.json`'s weight_map, checking that the index maps every
    tensor to the file that holds it (and nothing else)."""
    directory = Path(directory)
    problems: list[str] = []
    tensors: dict[str, TensorRef] = {}
    single = directory / "model.safetensors"
    index_path = directory / "model.safetensors.index.json"
    shards_present = sorted(p.name for p in directory.glob("*.safetensors") if p.name != "model.safetensors")
    if index_path.exists():
        if single.exists():
            problems.append("both model.safetensors and model.safetensors.index.json exist")
        try:
            index = json.loads(index_path.read_text(), object_pairs_hook=_no_duplicates)
            weight_map = index["weight_map"]
            assert isinstance(weight_map, dict)
        except Exception as e:  # noqa: BLE001
            return Checkpoint({}, [f"model.safetensors.index.json unreadable: {e}"], [])
        files = sorted(set(weight_map.values()))
        counts = set()
        for fn in files:
            m = SHARD_NAME.match(fn)
            if not m:
                problems.append(f"index names shard {fn!r}, not model-0000i-of-0000n.safetensors")
            else:
                counts.add(int(m.group(2)))
        if len(counts) == 1:
            n = counts.pop()
            expected = [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
            if files != expected:
                problems.append(f"shards {files} are not exactly 1..{n} of {n}")
        elif counts:
            problems.append(f"shards disagree on the shard count: {files}")
        for extra in sorted(set(shards_present) - set(files)):
            problems.append(f"{extra} is present but the index does not name it")
        for fn in files:
            p = directory / fn
            if not p.exists():
                problems.append(f"index names {fn}, which does not exist")
                continue
            try:
                ts, _ = read_safetensors(p)
            except FormatError as e:
                problems.append(str(e))
                continue
            if cross_check:
                problems += cross_check_with_safetensors_package(p, ts)
            for name, ref in ts.items():
                if name in tensors:
                    problems.append(f"{name} is stored in both {tensors[name].file.name} and {fn}")
                tensors[name] = ref
                if name not in weight_map:
                    problems.append(f"{name} (in {fn}) is missing from the index weight_map")
                elif weight_map[name] != fn:
                    problems.append(f"index maps {name} to {weight_map[name]}, but {fn} holds it")
        for name, fn in weight_map.items():
            if name not in tensors and (directory / fn).exists():
                problems.append(f"index maps {name} to {fn}, which does not hold it")
        total = index.get("metadata", {}).get("total_size") if isinstance(index.get("metadata"), dict) else None
        if total is not None:
            actual = sum(r.end - r.start for r in tensors.values())
            if total != actual:
                problems.append(f"index metadata.total_size {total} != {actual} bytes of tensors")
        return Checkpoint(tensors, problems, files)
    if not single.exists():
        return Checkpoint({}, ["neither model.safetensors nor model.safetensors.index.json exists"], [])
    for extra in shards_present:
        problems.append(f"{extra} is present next to model.safetensors without an index")
    try:
        ts, _ = read_safetensors(single)
    except FormatError as e:
        return Checkpoint({}, [str(e)], ["model.safetensors"])
    if cross_check:
        problems += cross_check_with_safetensors_package(single, ts)
    return Checkpoint(ts, problems, ["model.safetensors"])


# --------------------------------------------------------------------------------------
# What the artifact must contain
# --------------------------------------------------------------------------------------


def quantized_weights(source: Checkpoint) -> list[str]:
    """Source tensors that must be quantized: 2-D `.weight`s inside model.layers.N."""
    return sorted(n for n, r in source.tensors.items() if QUANT_LINEAR.match(n) and len(r.shape) == 2)


def is_int4(scheme: str) -> bool:
    return SCHEMES[scheme].get("num_bits", 8) == 4


def group_size_for(scheme: str, inp: int) -> int | None:
    """The group size a Linear with `inp` input columns is quantized with: the scheme's;
    for INT4, if that does not divide `inp`, the largest fallback group that does (None if
    none does)."""
    spec = SCHEMES[scheme]
    g = spec["group_size"]
    if g is None or not is_int4(scheme) or inp % g == 0:
        return g
    return next((f for f in INT4_FALLBACK_GROUPS if f < g and inp % f == 0), None)


def expected_quantized_tensors(scheme: str, prefix: str, out: int, inp: int, src_dtype: str) -> dict:
    """{name: (dtype, shape)} a quantized Linear `prefix` must be stored as."""
    spec = SCHEMES[scheme]
    if is_int4(scheme):
        g = group_size_for(scheme, inp)
        return {
            f"{prefix}.weight_packed": ("I32", (out, -(-inp // 8))),
            f"{prefix}.weight_shape": ("I64", (2,)),
            f"{prefix}.weight_scale": (src_dtype, (out, inp // g)),
            f"{prefix}.weight_zero_point": ("I32", (-(-out // 8), inp // g)),
        }
    if spec["strategy"] == "channel":
        scale_shape = (out, 1)
    elif spec["strategy"] == "tensor":
        scale_shape = (1,)
    elif spec["strategy"] == "group":
        scale_shape = (out, inp // spec["group_size"])
    else:
        scale_shape = (-(-out // BLOCK), -(-inp // BLOCK))
    scale = {f"{prefix}.weight_scale": (src_dtype, scale_shape)}
    if spec["act"] is not None and not spec["act"]["dynamic"]:
        scale[f"{prefix}.input_scale"] = (src_dtype, (1,))
    if spec["format"] == "float-quantized":
        return {f"{prefix}.weight": ("F8_E4M3", (out, inp)), **scale}
    if spec["format"] == "int-quantized":
        return {f"{prefix}.weight": ("I8", (out, inp)), **scale}
    return {
        f"{prefix}.weight_packed": ("I32", (out, inp // 4)),
        f"{prefix}.weight_shape": ("I64", (2,)),
        **scale,
    }


# --------------------------------------------------------------------------------------
# Check 1: config.json
# --------------------------------------------------------------------------------------


def _read_json(path: Path, problems: list, what: str):
    try:
        return json.loads(Path(path).read_text(), object_pairs_hook=_no_duplicates)
    except Exception as e:  # noqa: BLE001
        problems.append(f"{what}: cannot read {path}: {e}")
        return None


def check_config(scheme: str, artifact: Path, source: Path) -> list[str]:
    problems: list[str] = []
    spec = SCHEMES[scheme]
    cfg = _read_json(Path(artifact) / "config.json", problems, "config.json")
    src = _read_json(Path(source) / "config.json", problems, "source config.json")
    if cfg is None or src is None:
        return problems
    for k, v in src.items():
        if k not in cfg:
            problems.append(f"config.json lost source key {k!r}")
        elif cfg[k] != v:
            problems.append(f"config.json changed {k!r}: {v!r} -> {cfg[k]!r}")
    for k in set(cfg) - set(src) - {"quantization_config"}:
        problems.append(f"config.json has key {k!r} that the source does not")
    qc = cfg.get("quantization_config")
    if not isinstance(qc, dict):
        return problems + ["config.json has no quantization_config object"]

    def want(obj, key, value, where):
        if not isinstance(obj, dict) or key not in obj:
            problems.append(f"{where}.{key} missing (want {value!r})")
        elif obj[key] != value or type(obj[key]) is not type(value):
            problems.append(f"{where}.{key} is {obj[key]!r}, want {value!r}")

    def null_or_absent(obj, key, where):
        if isinstance(obj, dict) and obj.get(key) is not None:
            problems.append(f"{where}.{key} is {obj[key]!r}, want null")

    q = "quantization_config"
    want(qc, "quant_method", "compressed-tensors", q)
    want(qc, "format", spec["format"], q)
    want(qc, "quantization_status", "compressed", q)
    null_or_absent(qc, "kv_cache_scheme", q)
    ignore = qc.get("ignore")
    if not isinstance(ignore, list) or "lm_head" not in ignore:
        problems.append(f"{q}.ignore is {ignore!r}, must contain 'lm_head'")
    groups = qc.get("config_groups")
    # INT4: the modules whose input columns the scheme's group does not divide, by the
    # fallback group they use; each such group size is one more config group naming them.
    fallback: dict[int, set] = {}
    if is_int4(scheme):
        try:
            src_ckpt = load_checkpoint(Path(source), cross_check=False)
        except Exception as e:  # noqa: BLE001
            return problems + [f"source checkpoint unreadable: {e}"]
        for name in quantized_weights(src_ckpt):
            gs = group_size_for(scheme, src_ckpt.tensors[name].shape[1])
            if gs is not None and gs != spec["group_size"]:
                fallback.setdefault(gs, set()).add(name[: -len(".weight")])
    names = ["group_0"] + [f"group_{i}" for i in range(1, len(fallback) + 1)]
    if not isinstance(groups, dict) or sorted(groups) != sorted(names):
        return problems + [f"{q}.config_groups must be exactly {{{', '.join(names)}}}, is "
                           f"{sorted(groups) if isinstance(groups, dict) else groups!r}"]

    def check_group(g, gq, group_size):
        """Everything of a config group but its targets."""
        if isinstance(g, dict) and "format" in g and g["format"] is not None and g["format"] != spec["format"]:
            problems.append(f"{gq}.format is {g['format']!r}, want {spec['format']!r}")
        null_or_absent(g, "output_activations", gq)
        w = g.get("weights") if isinstance(g, dict) else None
        wq = f"{gq}.weights"
        if not isinstance(w, dict):
            problems.append(f"{wq} missing")
            return
        want(w, "num_bits", spec.get("num_bits", 8), wq)
        want(w, "type", spec["type"], wq)
        want(w, "strategy", spec["strategy"], wq)
        want(w, "symmetric", spec.get("symmetric", True), wq)
        want(w, "dynamic", False, wq)
        if group_size is None:
            null_or_absent(w, "group_size", wq)
        else:
            want(w, "group_size", group_size, wq)
        if spec["block_structure"] is None:
            null_or_absent(w, "block_structure", wq)
        else:
            want(w, "block_structure", spec["block_structure"], wq)
        null_or_absent(w, "actorder", wq)
        a = g.get("input_activations")
        aq = f"{gq}.input_activations"
        if spec["act"] is None:
            if a is not None:
                problems.append(f"{aq} is {a!r}, want null (weight-only)")
        elif not isinstance(a, dict):
            problems.append(f"{aq} is {a!r}, want {spec['act']!r}")
        else:
            for k, v in spec["act"].items():
                if v is None:
                    null_or_absent(a, k, aq)
                else:
                    want(a, k, v, aq)

    gq = f"{q}.config_groups.group_0"
    want(groups["group_0"], "targets", ["Linear"], gq)
    check_group(groups["group_0"], gq, spec["group_size"])
    # The named groups, in any order of names: each holds one fallback group size and
    # targets exactly the modules that use it, by name.
    sizes_seen = set()
    for name in names[1:]:
        g, gq = groups[name], f"{q}.config_groups.{name}"
        w = g.get("weights") if isinstance(g, dict) else None
        size = w.get("group_size") if isinstance(w, dict) else None
        if size not in fallback or size in sizes_seen:
            problems.append(f"{gq}.weights.group_size is {size!r}, want one of the fallback groups "
                            f"{sorted(set(fallback) - sizes_seen)} (each in one group)")
            continue
        sizes_seen.add(size)
        check_group(g, gq, size)
        targets = g.get("targets") if isinstance(g, dict) else None
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            problems.append(f"{gq}.targets is {targets!r}, want a list of module names")
            continue
        if len(set(targets)) != len(targets):
            problems.append(f"{gq}.targets names a module twice")
        got = set(targets)
        for extra in sorted(got - fallback[size])[:5]:
            problems.append(f"{gq}.targets names {extra!r}, which is not a quantized module with "
                            f"input columns indivisible by {spec['group_size']} that uses group {size}")
        for missing in sorted(fallback[size] - got)[:5]:
            problems.append(f"{gq}.targets lacks {missing!r} (group {size}; the Linear catch-all "
                            f"would give it group {spec['group_size']})")
    return problems


# --------------------------------------------------------------------------------------
# Check 2: tensor inventory
# --------------------------------------------------------------------------------------


def check_tensors(scheme: str, art: Checkpoint, src: Checkpoint) -> list[str]:
    problems = list(art.problems)
    expected: dict[str, tuple] = {}
    quantized = set(quantized_weights(src))
    for name in quantized:
        ref = src.tensors[name]
        out, inp = ref.shape
        spec = SCHEMES[scheme]
        if is_int4(scheme):
            if group_size_for(scheme, inp) is None:
                problems.append(f"{name}: {inp} input columns are not a multiple of group "
                                f"{spec['group_size']} nor of any fallback group {INT4_FALLBACK_GROUPS}")
                continue
        else:
            if spec["format"] == "pack-quantized" and inp % 4:
                problems.append(f"{name}: {inp} input columns cannot be packed four to an int32")
            if spec["strategy"] == "group" and inp % spec["group_size"]:
                problems.append(f"{name}: {inp} input columns are not a multiple of group {spec['group_size']}")
        expected.update(expected_quantized_tensors(scheme, name[: -len(".weight")], out, inp, ref.dtype))
    rewritten = AWQ_NORMS if SCHEMES[scheme].get("awq") else None
    for name, ref in src.tensors.items():
        if name in quantized:
            continue
        a = art.tensors.get(name)
        if a is None:
            problems.append(f"{name}: unquantized source tensor missing from the artifact")
        elif a.dtype != ref.dtype or a.shape != ref.shape:
            problems.append(f"{name}: {a.dtype}{list(a.shape)}, source has {ref.dtype}{list(ref.shape)}")
        elif rewritten is not None and rewritten.match(name):
            # AWQ divides these by its scales (check_awq_values / check_awq_mappings say
            # by how much); here they only have to be finite.
            if not np.all(np.isfinite(a.floats())):
                problems.append(f"{name}: non-finite values")
        elif not np.array_equal(a.raw(), ref.raw()):
            diff = int(np.count_nonzero(a.raw() != ref.raw()))
            problems.append(f"{name}: {diff} bytes differ from the source (must be bit-identical)")
    for name, (dtype, shape) in sorted(expected.items()):
        a = art.tensors.get(name)
        if a is None:
            problems.append(f"{name}: missing (want {dtype}{list(shape)})")
        elif a.dtype != dtype or a.shape != shape:
            problems.append(f"{name}: is {a.dtype}{list(a.shape)}, want {dtype}{list(shape)}")
        elif name.endswith(".weight_shape"):
            prefix = name[: -len(".weight_shape")]
            got = [int(v) for v in a.ints()]
            want = list(src.tensors[prefix + ".weight"].shape)
            if got != want:
                problems.append(f"{name}: holds {got}, want {want}")
    keep = set(src.tensors) - quantized
    for name in sorted(set(art.tensors) - set(expected) - keep):
        problems.append(f"{name}: unexpected tensor in the artifact")
    return problems


# --------------------------------------------------------------------------------------
# Check 3: values
# --------------------------------------------------------------------------------------


def _group_reduce_max(m: np.ndarray, strategy: str, group: int | None) -> np.ndarray:
    """Max over each scale group of a non-negative [out, in] matrix, shaped like the
    scale tensor."""
    out, inp = m.shape
    if strategy == "channel":
        return m.max(axis=1, keepdims=True)
    if strategy == "tensor":
        return m.max().reshape(1)
    if strategy == "group":
        return m.reshape(out, inp // group, group).max(axis=2)
    r, c = -(-out // BLOCK), -(-inp // BLOCK)
    padded = np.zeros((r * BLOCK, c * BLOCK), m.dtype)
    padded[:out, :inp] = m
    return padded.reshape(r, BLOCK, c, BLOCK).max(axis=(1, 3))


def _expand(scale: np.ndarray, strategy: str, group: int | None, out: int, inp: int) -> np.ndarray:
    if strategy in ("channel", "tensor"):
        return np.broadcast_to(scale, (out, inp))
    if strategy == "group":
        return np.repeat(scale, group, axis=1)
    return np.repeat(np.repeat(scale, BLOCK, axis=0), BLOCK, axis=1)[:out, :inp]


def unpack_int32_lanes(packed_bytes: np.ndarray, out: int, inp: int) -> np.ndarray:
    """pack-quantized: lane k (bits 8k..8k+7) of int32 j along the input dim holds the
    unsigned code of column 4j + k; the signed int8 code is that byte minus 128. The
    int32s are little-endian in the file, so lane k is byte 4j + k of the row: the file's
    bytes, in order, are the columns (`unpack_int32_lanes_arith` says the same with
    shifts; the self-tests check that both agree)."""
    return packed_bytes.reshape(out, inp).astype(np.int16) - 128


def unpack_int32_lanes_arith(packed: np.ndarray) -> np.ndarray:
    u = packed.astype(np.int64) & 0xFFFFFFFF
    lanes = np.stack([(u >> (8 * k)) & 0xFF for k in range(4)], axis=-1)
    return (lanes.reshape(packed.shape[0], packed.shape[1] * 4) - 128).astype(np.int16)


def unpack_nibbles(packed_bytes: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """pack-quantized, 4 bits: int32 j of a row holds columns 8j..8j+7, column 8j + i in
    bits 4i..4i+3. The int32s are little-endian in the file, so byte k of a row holds
    column 2k in its low nibble and 2k + 1 in its high nibble. Returns the stored codes
    (signed value + 8, 0..15) as uint8 [rows, cols] (`unpack_nibbles_arith` says the
    same with shifts; the self-tests check that both agree)."""
    b = packed_bytes.reshape(rows, -1)
    out = np.empty((rows, b.shape[1] * 2), np.uint8)
    out[:, 0::2] = b & 0xF
    out[:, 1::2] = b >> 4
    return out[:, :cols]


def unpack_nibbles_arith(packed: np.ndarray, cols: int) -> np.ndarray:
    u = packed.astype(np.int64) & 0xFFFFFFFF
    nib = np.stack([(u >> (4 * i)) & 0xF for i in range(8)], axis=-1)
    return nib.reshape(packed.shape[0], -1)[:, :cols].astype(np.uint8)


def unpack_zero_points(packed: np.ndarray, rows: int) -> np.ndarray:
    """weight_zero_point [ceil(rows/8), groups] int32: packed along the OUTPUT dimension,
    word (p, g) holds rows 8p..8p+7 of group column g, row 8p + i in bits 4i..4i+3.
    Returns the stored zero points (signed + 8, 0..15) as uint8 [rows, groups]."""
    u = packed.astype(np.int64) & 0xFFFFFFFF
    nib = np.stack([(u >> (4 * i)) & 0xF for i in range(8)], axis=1)  # [P, 8, G]
    return nib.reshape(-1, packed.shape[1])[:rows].astype(np.uint8)


@dataclass
class ModuleStats:
    name: str
    relative_rms_error: float
    max_error_over_bound: float
    zero_groups: int
    # How far the two numbers above may be from the quantizer's own (absolute), when the
    # weight it quantized is only known approximately (AWQ's scales): 0 otherwise.
    rms_tol: float = 0.0
    ratio_tol: float = 0.0


class ValueStats(dict):
    """{weight name: ModuleStats}; for AWQ also `channel_scales`: {producer tensor name:
    (lo, hi)}, per channel the interval of scales the dequantized weights allow."""

    def __init__(self):
        super().__init__()
        self.channel_scales: dict[str, tuple] = {}


def check_module(scheme: str, prefix: str, w: np.ndarray, art: Checkpoint, scale_dtype: str):
    """Dequantizes one module and compares it with the source weight `w` (float32).
    Returns (problems, ModuleStats or None)."""
    spec = SCHEMES[scheme]
    strategy, group = spec["strategy"], spec["group_size"]
    out, inp = w.shape
    problems: list[str] = []
    t = art.tensors
    try:
        s_ref = t[f"{prefix}.weight_scale"]
        scale = s_ref.floats()
        if spec["format"] == "pack-quantized":
            packed = t[f"{prefix}.weight_packed"]
            if packed.dtype != "I32":
                raise ValueError(f"weight_packed is {packed.dtype}")
            codes = unpack_int32_lanes(packed.raw(), out, inp)
        elif spec["format"] == "int-quantized":
            codes = t[f"{prefix}.weight"].ints().astype(np.int16)
        else:
            codes = t[f"{prefix}.weight"].raw().reshape(out, inp)
    except (KeyError, ValueError) as e:
        return [f"{prefix}: cannot read the quantized tensors ({e!r})"], None
    if codes.shape != (out, inp) or s_ref.dtype != scale_dtype:
        return [f"{prefix}: codes {codes.shape} / scale dtype {s_ref.dtype} do not fit the source"], None

    is_fp8 = spec["type"] == "float"
    qmax = FP8_MAX if is_fp8 else INT8_MAX

    # Scales: finite, positive, and the smallest storage value >= absmax / qmax (rounded
    # up: no code saturates, and no larger than needed).
    if not np.all(np.isfinite(scale)) or not np.all(scale > 0):
        bad = int(np.count_nonzero(~(np.isfinite(scale) & (scale > 0))))
        return [f"{prefix}.weight_scale: {bad} scales are not finite and positive"], None
    aw = np.abs(w)
    absmax = _group_reduce_max(aw, strategy, group)
    if absmax.shape != scale.shape:
        return [f"{prefix}.weight_scale: shape {scale.shape}, groups {absmax.shape}"], None
    nz = absmax > 0
    target = absmax / np.float32(qmax)
    low = nz & (scale < target * (1 - SCALE_RTOL))
    if low.any():
        i = tuple(int(v) for v in np.argwhere(low)[0])
        problems.append(f"{prefix}.weight_scale: {int(low.sum())} scales below absmax/{qmax:g} "
                        f"(codes would saturate), e.g. group {i}: {float(scale[i])!r} < {float(target[i])!r}")
    loose = nz & (storage_predecessor(scale, scale_dtype) >= target * (1 + SCALE_RTOL))
    if loose.any():
        i = tuple(int(v) for v in np.argwhere(loose)[0])
        problems.append(f"{prefix}.weight_scale: {int(loose.sum())} scales are not absmax/{qmax:g} rounded "
                        f"up to {scale_dtype} (too large), e.g. group {i}: {float(scale[i])!r} for "
                        f"absmax {float(absmax[i])!r}")

    # Codes
    if is_fp8:
        n_nan = int(np.count_nonzero((codes & 0x7F) == 0x7F))
        if n_nan:
            problems.append(f"{prefix}.weight: {n_nan} NaN codes")
        q = FP8_TABLE[codes]
        if n_nan:
            q = np.where(np.isnan(q), np.float32(0), q)
    else:
        lo_c, hi_c = int(codes.min()), int(codes.max())
        if lo_c < -INT8_MAX or hi_c > INT8_MAX:
            problems.append(f"{prefix}: codes in [{lo_c}, {hi_c}], outside [-127, 127]")
        q = codes.astype(np.float32)
    maxq = _group_reduce_max(np.abs(q), strategy, group)
    zero_group_nonzero = (~nz) & (maxq > 0)
    if zero_group_nonzero.any():
        problems.append(f"{prefix}: {int(zero_group_nonzero.sum())} all-zero groups have nonzero codes")
    # The largest weight of a group lands on the top code. With the scale rounded up to
    # the storage dtype, absmax/scale lies in (qmax * pred(s)/s, qmax], so the largest
    # code is at least that lower end rounded: 127 (int8) or 448 (fp8) with f32/f16
    # scales, but 126 is possible with bf16 scales (upward rounding of up to 2^-7), and
    # less with subnormal f16 scales.
    lowest = np.float32(qmax) * (storage_predecessor(scale, scale_dtype) / scale)
    if is_fp8:
        top_min = fp8_round(lowest * np.float32(1 - 2.0**-16))[0]
    else:
        top_min = np.floor(lowest + np.float32(0.5 - 1e-4))
    short = nz & (maxq < top_min)
    if short.any():
        i = tuple(int(v) for v in np.argwhere(short)[0])
        problems.append(f"{prefix}: {int(short.sum())} groups do not use the top code, e.g. group {i} "
                        f"max |code| {maxq[i]:g}, want >= {top_min[i]:g}")

    sb = _expand(scale, strategy, group, out, inp)
    x = w / sb  # float32, correctly rounded like any IEEE implementation
    # Each code must be w/scale rounded to the nearest representable value: x must lie
    # in the code's rounding interval, widened by 2^-16 relative so that either
    # neighbour is accepted at (near-)ties, for implementations that multiply by a
    # reciprocal or divide in another precision.
    if is_fp8:
        ax = np.abs(x)
        wrong = (ax < FP8_MID_LO_TOL[codes]) | (ax > FP8_MID_HI_TOL[codes]) | (q * x < 0)
    else:
        wrong = np.abs(x - q) > np.float32(0.5 + 1e-4)
    if wrong.any():
        i = tuple(int(v) for v in np.argwhere(wrong)[0])
        want = fp8_round(np.array([x[i]]))[0][0] if is_fp8 else np.rint(x[i])
        problems.append(f"{prefix}: {int(wrong.sum())} codes are not w/scale rounded to nearest, "
                        f"e.g. [{i[0]}, {i[1]}]: w/scale={float(x[i])!r}, code value {float(q[i])!r}, "
                        f"want {float(want)!r}")

    err = w - q * sb
    np.abs(err, out=err)
    if is_fp8:
        bound = np.maximum(aw * np.float32(2.0**-4), sb * np.float32(2.0**-10))
    else:
        bound = np.float32(0.5) * sb
    ratio = err / bound
    max_ratio = float(ratio.max()) if ratio.size else 0.0
    if max_ratio > 1 + BOUND_SLACK:
        n_bad = int(np.count_nonzero(ratio > 1 + BOUND_SLACK))
        i = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        problems.append(f"{prefix}: {n_bad} elements exceed the error bound, worst [{i[0]}, {i[1]}] "
                        f"|w - w_hat| = {float(err[i]):.3g} is {max_ratio:.3g}x the bound")
    # float32 squares summed pairwise by numpy: ~1e-6 relative, well inside 1e-3.
    np.square(err, out=err)
    err_sq = float(err.sum())
    w_sq = float(np.square(w).sum())
    rel = math.sqrt(err_sq / w_sq) if w_sq > 0 else 0.0
    limit = RMS_LIMIT[scheme]
    if rel > limit:
        problems.append(f"{prefix}: relative RMS error {rel:.4%} above the {limit:.2%} limit for {scheme}")
    return problems, ModuleStats(prefix + ".weight", rel, max_ratio, int(np.count_nonzero(~nz)))


def check_values(scheme: str, art: Checkpoint, src: Checkpoint, manifest_path: Path | None = None):
    """Dequantizes every quantized module and compares with the source. If
    `manifest_path` is given, also compares passes[0].report.tensors with our numbers.
    Returns (problems, ValueStats {weight name: ModuleStats})."""
    problems: list[str] = []
    stats = ValueStats()
    if SCHEMES[scheme].get("awq"):
        problems += check_awq_values(scheme, art, src, stats)
    elif is_int4(scheme):
        for name in quantized_weights(src):
            ref = src.tensors[name]
            g = group_size_for(scheme, ref.shape[1])
            if g is None:
                problems.append(f"{name}: no INT4 group divides {ref.shape[1]} input columns")
                continue
            p, st = check_int4_module(scheme, name[: -len(".weight")], ref.floats(), art, ref.dtype, g)
            problems += p
            if st is not None:
                stats[name] = st
    for name in quantized_weights(src) if not is_int4(scheme) else []:
        ref = src.tensors[name]
        w = ref.floats()
        p, st = check_module(scheme, name[: -len(".weight")], w, art, ref.dtype)
        problems += p
        if st is not None:
            stats[name] = st
    spec = SCHEMES[scheme]
    if spec["act"] is not None and not spec["act"]["dynamic"]:
        problems += check_input_scales(art, src)
    if manifest_path is not None:
        problems += check_manifest_report(manifest_path, stats, src, scheme)
    return problems, stats


# ---- INT4 (pack-quantized, 4 bits, zero points) ----------------------------------------


def read_int4(art: Checkpoint, prefix: str, out: int, inp: int, group: int, scale_dtype: str):
    """(codes uint8 [out, in], zero points uint8 [out, in/group], scales float32
    [out, in/group]) of one INT4 Linear. Raises KeyError / ValueError."""
    t = art.tensors
    packed, zp, sc = t[f"{prefix}.weight_packed"], t[f"{prefix}.weight_zero_point"], t[f"{prefix}.weight_scale"]
    ng = inp // group
    want = {packed.name: (packed, "I32", (out, -(-inp // 8))), zp.name: (zp, "I32", (-(-out // 8), ng)),
            sc.name: (sc, scale_dtype, (out, ng))}
    for name, (ref, dtype, shape) in want.items():
        if ref.dtype != dtype or ref.shape != shape:
            raise ValueError(f"{name} is {ref.dtype}{list(ref.shape)}, want {dtype}{list(shape)}")
    codes = unpack_nibbles(packed.raw(), out, inp)
    zeros = unpack_zero_points(zp.ints(), out)
    return codes, zeros, sc.floats()


def check_int4_module(scheme: str, prefix: str, t: np.ndarray, art: Checkpoint, scale_dtype: str,
                      group: int, u: np.ndarray | None = None):
    """Dequantizes one INT4 Linear, (code - zero point) * scale, and compares it with `t`,
    the float32 [out, in] weight it must be the round-to-nearest asymmetric minmax
    quantization of: per group, the range [min(t, 0), max(t, 0)] in 15 steps, the scale
    (max - min) / 15 rounded up to the scale dtype, the zero point round(-min / scale), the
    code clamp(round(t / scale) + zero, 0, 15), so every dequantized value is within half
    a step. Schemes with `clip` (AWQ) may shrink a group's range by a ratio c in AWQ_CLIPS
    first: scale (c max - c min) / 15 rounded up, zero round(-c min / scale); then the
    weights outside the shrunk range saturate at code 0 / 15, and only the others are
    within half a step. `u` (broadcastable to t, >= 0): t's relative uncertainty, where t
    is only known approximately (AWQ's rewritten weights); every tolerance widens by it.
    Returns (problems, ModuleStats or None)."""
    out, inp = t.shape
    ng = inp // group
    try:
        codes, zeros, scale = read_int4(art, prefix, out, inp, group, scale_dtype)
    except (KeyError, ValueError) as e:
        return [f"{prefix}: cannot read the quantized tensors ({e!r})"], None
    problems: list[str] = []
    if not np.all(np.isfinite(scale)) or not np.all(scale > 0):
        bad = int(np.count_nonzero(~(np.isfinite(scale) & (scale > 0))))
        return [f"{prefix}.weight_scale: {bad} scales are not finite and positive"], None
    clip = bool(SCHEMES[scheme].get("clip"))
    tg = t.reshape(out, ng, group)
    hi = np.maximum(tg.max(axis=2), np.float32(0))
    lo = np.minimum(tg.min(axis=2), np.float32(0))
    rng = hi - lo
    nz = rng > 0
    if u is None:
        ue, ug = np.float32(0), np.float32(0)
    else:
        ue = np.broadcast_to(np.asarray(u, np.float32), t.shape)
        ug = ue.reshape(out, ng, group).max(axis=2)

    def first(mask):
        return tuple(int(v) for v in np.argwhere(mask)[0])

    # Scales: the smallest storage value >= (max - min) / 15 (of the clipped range), and
    # zero points: the code of 0, round(-min / scale).
    pred = storage_predecessor(scale, scale_dtype)
    zf = zeros.astype(np.float32)

    def grid_fits(c):
        target = (hi * c - lo * c) / np.float32(INT4_LEVELS)
        low = scale < target * (1 - SCALE_RTOL) * (1 - ug)
        loose = pred >= target * (1 + SCALE_RTOL) * (1 + ug)
        want_z = -(lo * c) / scale
        z_ok = np.abs(want_z - zf) <= np.float32(0.5 + 1e-4) + ug * want_z
        return target, low, loose, want_z, z_ok

    if not clip:
        target, low, loose, want_z, z_ok = grid_fits(np.float32(1))
        low, loose = nz & low, nz & loose
        if low.any():
            i = first(low)
            problems.append(f"{prefix}.weight_scale: {int(low.sum())} scales below (max - min)/15 of their group, "
                            f"e.g. group {i}: {float(scale[i])!r} < {float(target[i])!r}")
        if loose.any():
            i = first(loose)
            problems.append(f"{prefix}.weight_scale: {int(loose.sum())} scales are not (max - min)/15 rounded up "
                            f"to {scale_dtype} (too large), e.g. group {i}: {float(scale[i])!r} for (max - min)/15 "
                            f"= {float(target[i])!r}")
        badz = nz & ~low & ~loose & ~z_ok
    else:
        fits = np.zeros(scale.shape, bool)
        z_fits = np.zeros(scale.shape, bool)
        for c in AWQ_CLIPS:
            _, low, loose, want_z, z_ok = grid_fits(c)
            f = ~low & ~loose
            fits |= f
            z_fits |= f & z_ok
        nofit = nz & ~fits
        if nofit.any():
            i = first(nofit)
            problems.append(f"{prefix}.weight_scale: {int(nofit.sum())} scales are not c (max - min)/15 rounded up "
                            f"to {scale_dtype} for any clip ratio c in 1.0, 0.95, ..., 0.55, e.g. group {i}: "
                            f"{float(scale[i])!r}, (max - min)/15 = {float(rng[i] / INT4_LEVELS)!r}")
        want_z = -lo / scale
        badz = nz & fits & ~z_fits
    if badz.any():
        i = first(badz)
        what = "round(-c min/scale) for the clip ratio c their scale fits" if clip else "round(-min/scale)"
        problems.append(f"{prefix}.weight_zero_point: {int(badz.sum())} zero points are not {what}, "
                        f"e.g. group {i}: {int(zeros[i])}, -min/scale = {float(want_z[i]):.4f}")
    zx = np.repeat(zeros, group, axis=1)
    sx = np.repeat(scale, group, axis=1)
    steps = codes.astype(np.int16) - zx.astype(np.int16)
    zero_bad = (~nz) & (steps.reshape(out, ng, group) != 0).any(axis=2)
    if zero_bad.any():
        problems.append(f"{prefix}: {int(zero_bad.sum())} all-zero groups have codes other than their zero point")
    # Codes: t / scale + zero rounded to nearest, clamped to 0..15 (a tolerance of 1e-4
    # of a step for quantizers that multiply by 1/scale).
    x = t / sx + zx
    tol = np.float32(0.5 + 1e-4)
    if u is not None:
        tol = tol + ue * np.abs(t) / sx
    top, bottom = codes == INT4_LEVELS, codes == 0
    saturated = (top & (x > INT4_LEVELS)) | (bottom & (x < 0))
    wrong = (np.abs(x - codes.astype(np.float32)) > tol) & ~saturated
    if wrong.any():
        i = first(wrong)
        problems.append(f"{prefix}: {int(wrong.sum())} codes are not w/scale + zero rounded to nearest (0..15), "
                        f"e.g. [{i[0]}, {i[1]}]: w/scale + zero = {float(x[i])!r}, code {int(codes[i])}")
    # Error bound: half a step (clipped groups: for the weights inside the clipped range;
    # the others lie beyond the end of the grid they saturate at).
    deq = steps.astype(np.float32) * sx
    err = np.abs(t - deq)
    half = np.float32(0.5) * sx
    ratio = err / half
    slack = ue * np.abs(t) / half if u is not None else np.float32(0)
    over = ratio > (1 + BOUND_SLACK) + slack
    if clip:
        over &= ~((top & (t > deq)) | (bottom & (t < deq)))
    max_ratio = float(ratio.max()) if ratio.size else 0.0
    if over.any():
        i = np.unravel_index(int(np.argmax(np.where(over, ratio, 0))), ratio.shape)
        problems.append(f"{prefix}: {int(over.sum())} elements exceed the error bound (half a step), worst "
                        f"[{i[0]}, {i[1]}] |w - w_hat| = {float(err[i]):.3g} is {float(ratio[i]):.3g}x the bound")
    err_sq = float(np.square(err).sum())
    t_sq = float(np.square(t).sum())
    rel = math.sqrt(err_sq / t_sq) if t_sq > 0 else 0.0
    limit = RMS_LIMIT[scheme]
    if rel > limit:
        problems.append(f"{prefix}: relative RMS error {rel:.4%} above the {limit:.2%} limit for {scheme}")
    rms_tol = ratio_tol = 0.0
    if u is not None and t_sq > 0:
        # |t_ours - t_quantized| <= u |t| per element: the quantizer's own numbers may
        # differ from ours by about that much.
        rms_tol = 1.5 * math.sqrt(float(np.square(ue * t).sum()) / t_sq)
        ratio_tol = float(np.max(slack))
    return problems, ModuleStats(prefix + ".weight", rel, max_ratio, int(np.count_nonzero(~nz)), rms_tol, ratio_tol)


# ---- AWQ -------------------------------------------------------------------------------
#
# AWQ quantizes W diag(s) instead of W, with per input channel scales s > 0 that it folds
# into what produces the input: per layer, q/k/v columns times s1 and input_layernorm divided
# by s1, gate/up columns times s2 and post_attention_layernorm divided by s2, down_proj
# columns times s3 and up_proj rows divided by s3 (o_proj is not rescaled: SmolLM2's
# attention groups its kv heads, so there is no v -> o mapping; a model without grouped kv
# heads would need one, which this check does not know). The artifact does not store s, so
# this recovers it twice, independently: from the weights (per channel, the interval of s
# for which every code of that column is W_src * s rounded onto its group's grid, i.e.
# within half a step, or for a saturated code of a clipped group beyond the grid's end:
# the intersection over all rows of every Linear sharing the channel), and for s1 / s2
# from the norms (norm_src / norm_artifact, exact up to the norm dtype's rounding). The two
# must agree; then every module is checked like round-to-nearest INT4 (with AWQ's clip
# ratios) against W_src * s, with tolerances widened by what is left of s's uncertainty
# (typically 0.1%, at most about 1%).

AWQ_LINEARS = {
    "input_layernorm": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "post_attention_layernorm": ("mlp.gate_proj", "mlp.up_proj"),
    "mlp.up_proj": ("mlp.down_proj",),
}


def _feasible_scales(w: np.ndarray, d, axis: int):
    """Per channel (reducing over `axis`): the interval [lo, hi] of s > 0 such that every
    element's code is w * s rounded onto its grid: |deq - w * s| <= h, where d = (deq, h,
    top, bottom); with clipping (top / bottom not None) a code at the end of the grid
    only says w * s >= deq - h (code 15) or w * s <= deq + h (code 0). Computed in float64."""
    deq, h, top, bottom = d
    w = w.astype(np.float64)
    deq = deq.astype(np.float64)
    h = np.broadcast_to(np.asarray(h, np.float64), w.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (deq - h) / w   # w s >= deq - h
        b = (deq + h) / w   # w s <= deq + h
    need_lo = np.ones(w.shape, bool) if bottom is None else ~bottom   # deq - h <= w s
    need_hi = np.ones(w.shape, bool) if top is None else ~top         # w s <= deq + h
    inf = np.inf
    lo = np.maximum(np.where((w > 0) & need_lo, a, -inf), np.where((w < 0) & need_hi, b, -inf))
    hi = np.minimum(np.where((w > 0) & need_hi, b, inf), np.where((w < 0) & need_lo, a, inf))
    # w == 0: 0 must satisfy the constraints, whatever s
    bad0 = (w == 0) & ((need_lo & (deq - h > 0)) | (need_hi & (deq + h < 0)))
    lo = np.where(bad0, inf, lo)
    return np.maximum(lo.max(axis=axis), 0.0), hi.min(axis=axis)


def _deq_int4(art: Checkpoint, prefix: str, shape, scheme: str, dtype: str):
    """(dequantized weight, half a step with slack, codes at 15, codes at 0) of one INT4
    Linear; the last two are None unless the scheme clips (then those codes may be
    saturated)."""
    out, inp = shape
    g = group_size_for(scheme, inp)
    if g is None:
        raise ValueError(f"no INT4 group divides {inp} input columns")
    codes, zeros, scale = read_int4(art, prefix, out, inp, g, dtype)
    sx = np.repeat(scale, g, axis=1)
    deq = (codes.astype(np.float32) - np.repeat(zeros, g, axis=1).astype(np.float32)) * sx
    h = np.float32(0.5 * (1 + BOUND_SLACK)) * sx
    if SCHEMES[scheme].get("clip"):
        return deq, h, codes == INT4_LEVELS, codes == 0
    return deq, h, None, None


def _mid(lo: np.ndarray, hi: np.ndarray):
    """Geometric midpoint of positive intervals and the relative uncertainty around it."""
    mid = np.sqrt(lo * hi)
    return mid, np.sqrt(hi / lo) - 1.0


def check_awq_values(scheme: str, art: Checkpoint, src: Checkpoint, stats: ValueStats) -> list[str]:
    problems: list[str] = []
    quantized = set(quantized_weights(src))
    layers = sorted({int(n.split(".")[2]) for n in quantized})
    for li in layers:
        p = f"model.layers.{li}."
        try:
            w = {m: src.tensors[f"{p}{m}.weight"].floats() for ms in AWQ_LINEARS.values() for m in ms}
            w["self_attn.o_proj"] = src.tensors[f"{p}self_attn.o_proj.weight"].floats()
            dtype = src.tensors[f"{p}self_attn.q_proj.weight"].dtype
            dq = {m: _deq_int4(art, f"{p}{m}", w[m].shape, scheme, dtype) for m in w}
        except (KeyError, ValueError) as e:
            problems.append(f"{p}*: cannot read the Linears AWQ rewrites ({e!r})")
            continue
        scales = {}
        # s1, s2: the weights' interval, and the norm's ratio.
        for norm in ("input_layernorm", "post_attention_layernorm"):
            consumers = AWQ_LINEARS[norm]
            # up_proj's rows are divided by s3 as well: only the others pin s2 exactly.
            direct = [m for m in consumers if m != "mlp.up_proj"]
            lo = hi = None
            for m in direct:
                a, b = _feasible_scales(w[m], dq[m], axis=0)
                lo = a if lo is None else np.maximum(lo, a)
                hi = b if hi is None else np.minimum(hi, b)
            names = "/".join(m.split(".")[-1] for m in direct)
            empty = lo > hi
            if empty.any():
                c = int(np.argmax(empty))
                problems.append(f"{p}{names}: {int(empty.sum())} input channels where no single scale s puts every "
                                f"dequantized weight within half a step of W_src * s (or, saturated, beyond "
                                f"the end of a clipped grid), e.g. channel {c}: "
                                f"the rows ask for s >= {lo[c]:.6g} and s <= {hi[c]:.6g}")
                continue
            name = f"{p}{norm}.weight"
            try:
                n_src, n_art = src.tensors[name], art.tensors[name]
                eps = NORM_EPS[n_art.dtype]
                ns, na = n_src.floats().astype(np.float64), n_art.floats().astype(np.float64)
            except (KeyError, ValueError) as e:
                problems.append(f"{name}: cannot read it ({e!r})")
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = ns / na
            both_zero = (ns == 0) & (na == 0)
            bad = ~both_zero & ~(np.isfinite(ratio) & (ratio > 0))
            if bad.any():
                c = int(np.argmax(bad))
                problems.append(f"{name}: {int(bad.sum())} elements are not the source's divided by a positive "
                                f"scale, e.g. [{c}]: source {ns[c]!r}, artifact {na[c]!r}")
                continue
            # norm_art = round(norm_src / s) => s = ratio * (1 + d), |d| <= eps
            n_lo = np.where(both_zero, 0.0, ratio * (1 - eps))
            n_hi = np.where(both_zero, np.inf, ratio * (1 + eps))
            c_lo, c_hi = np.maximum(lo, n_lo), np.minimum(hi, n_hi)
            off = c_lo > c_hi
            if off.any():
                c = int(np.argmax(off))
                problems.append(f"{name}: {int(off.sum())} channels are not the source divided by the scale "
                                f"{names} were multiplied by (within {n_art.dtype} rounding), e.g. channel {c}: "
                                f"source/artifact = {ratio[c]:.6g}, the weights allow s in [{lo[c]:.6g}, {hi[c]:.6g}]")
                continue
            # A channel no weight constrains (an all-zero column) keeps the norm's ratio.
            free = ~np.isfinite(c_hi) | (c_lo <= 0)
            col_zero = np.all([np.all(w[m] == 0, axis=0) for m in consumers], axis=0)
            if np.any(free & ~col_zero):
                c = int(np.argmax(free & ~col_zero))
                problems.append(f"{name}: cannot bound the AWQ scale of channel {c} ([{c_lo[c]}, {c_hi[c]}])")
                continue
            mid, u = _mid(np.where(free, 1.0, c_lo), np.where(free, 1.0, c_hi))
            scales[norm] = (mid, u)
            stats.channel_scales[name] = (c_lo, c_hi)
        if len(scales) < 2:
            continue
        s1, u1 = scales["input_layernorm"]
        s2, u2 = scales["post_attention_layernorm"]
        # s3: down_proj's columns (times s3) and up_proj's rows (W_up * s2 / s3).
        a, b = _feasible_scales(w["mlp.down_proj"], dq["mlp.down_proj"], axis=0)
        deq_up, h_up, top_up, bottom_up = dq["mlp.up_proj"]
        # |deq - W s2_true t| <= h with s2_true = s2 (1 + d), |d| <= u2: widen h by u2 |W s2 t|
        # (|W s2 t| <= |deq| + h, or for a saturated code (clipping) up to (|deq| + h) / c
        # with the clip ratio c >= 0.55).
        reach = (np.abs(deq_up) + h_up) / (min(AWQ_CLIPS) if top_up is not None else 1.0)
        h_wide = h_up + (u2[None, :] * reach * (1 + 2 * u2[None, :])).astype(np.float32)
        t_lo, t_hi = _feasible_scales(w["mlp.up_proj"] * s2[None, :].astype(np.float32),
                                      (deq_up, h_wide, top_up, bottom_up), axis=1)
        with np.errstate(divide="ignore"):   # t = 1 / s3 > 0
            up_lo = np.where(t_hi > 0, 1.0 / t_hi, np.inf)
            up_hi = np.where(t_lo > 0, 1.0 / t_lo, np.inf)
        lo3, hi3 = np.maximum(a, up_lo), np.minimum(b, up_hi)
        name3 = f"{p}mlp.up_proj.weight"
        off = lo3 > hi3
        if off.any():
            c = int(np.argmax(off))
            problems.append(f"{p}mlp.up_proj rows / mlp.down_proj columns: {int(off.sum())} channels where no "
                            f"scale s3 puts both down_proj's column (W_src * s3) and up_proj's row "
                            f"(W_src * s2 / s3) within half a step, e.g. channel {c}: down_proj allows "
                            f"[{a[c]:.6g}, {b[c]:.6g}], up_proj allows [{up_lo[c]:.6g}, {up_hi[c]:.6g}]")
            continue
        free = ~np.isfinite(hi3) | (lo3 <= 0)
        unused = np.all(w["mlp.down_proj"] == 0, axis=0) & np.all(w["mlp.up_proj"] == 0, axis=1)
        if np.any(free & ~unused):
            c = int(np.argmax(free & ~unused))
            problems.append(f"{name3}: cannot bound the AWQ scale s3 of channel {c} ([{lo3[c]}, {hi3[c]}])")
            continue
        s3, u3 = _mid(np.where(free, 1.0, lo3), np.where(free, 1.0, hi3))
        stats.channel_scales[name3] = (lo3, hi3)
        f32 = np.float32
        targets = {
            "self_attn.q_proj": (s1[None, :], u1[None, :]),
            "self_attn.k_proj": (s1[None, :], u1[None, :]),
            "self_attn.v_proj": (s1[None, :], u1[None, :]),
            "self_attn.o_proj": (None, None),
            "mlp.gate_proj": (s2[None, :], u2[None, :]),
            "mlp.up_proj": (s2[None, :] / s3[:, None], u2[None, :] + u3[:, None] + 2.0**-40),
            "mlp.down_proj": (s3[None, :], u3[None, :]),
        }
        for m, (mul, u) in targets.items():
            prefix = f"{p}{m}"
            t = w[m] if mul is None else (w[m] * mul.astype(f32))
            g = group_size_for(scheme, t.shape[1])
            pr, st = check_int4_module(scheme, prefix, t, art, dtype, g,
                                       None if u is None else (u * (1 + 1e-6) + 2.0**-30).astype(f32))
            problems += pr
            if st is not None:
                stats[prefix + ".weight"] = st
    known = {f"{m}.weight" for ms in AWQ_LINEARS.values() for m in ms} | {"self_attn.o_proj.weight"}
    for name in sorted(quantized):
        if name.split(".", 3)[3] not in known:
            problems.append(f"{name}: a Linear the AWQ check does not know")
    return problems


def check_awq_mappings(manifest_path: Path, art: Checkpoint, src: Checkpoint, stats: ValueStats) -> list[str]:
    """manifest.json passes[0].options.calibration.mappings: one entry per layer and
    producer (input_layernorm -> q/k/v, post_attention_layernorm -> gate/up, up_proj ->
    down_proj), alpha null (kept s = 1) or a number. A norm with alpha null is bit-identical
    to the source, one with alpha set differs; up_proj with alpha null admits s3 = 1 on
    every channel, one with alpha set does not on some channel (from the scales the
    weights allow, `stats.channel_scales`)."""
    problems: list[str] = []
    m = _read_json(manifest_path, problems, "manifest.json")
    if m is None:
        return problems
    try:
        cal = m["passes"][0]["options"]["calibration"]
        mappings = cal["mappings"]
        assert isinstance(mappings, list)
    except Exception:  # noqa: BLE001
        return problems + ["manifest.json has no passes[0].options.calibration.mappings list"]
    layers = sorted({int(n.split(".")[2]) for n in quantized_weights(src)})
    expected = {}
    for li in layers:
        p = f"model.layers.{li}."
        for producer, consumers in AWQ_LINEARS.items():
            expected[f"{p}{producer}.weight"] = (li, [f"{p}{c}" for c in consumers])
    seen: dict[str, object] = {}
    for e in mappings:
        prod = e.get("producer") if isinstance(e, dict) else None
        if prod not in expected:
            problems.append(f"manifest mapping {str(e)[:200]} is not one of the layers' AWQ mappings")
            continue
        li, consumers = expected[prod]
        if prod in seen:
            problems.append(f"manifest maps {prod} twice")
        if e.get("layer") != li:
            problems.append(f"manifest mapping of {prod}: layer {e.get('layer')!r}, want {li}")
        if sorted(e.get("consumers") or []) != sorted(consumers):
            problems.append(f"manifest mapping of {prod}: consumers {e.get('consumers')!r}, want {consumers}")
        alpha = e.get("alpha")
        if alpha is not None and not (isinstance(alpha, (int, float)) and 0 <= alpha <= 1):
            problems.append(f"manifest mapping of {prod}: alpha {alpha!r} is not null or in [0, 1]")
            continue
        seen[prod] = alpha
    for prod in sorted(set(expected) - set(seen), key=lambda n: (int(n.split(".")[2]), n)):
        problems.append(f"manifest has no AWQ mapping for {prod}")
    scaled = sum(a is not None for a in seen.values())
    if cal.get("mappings_scaled") != scaled:
        problems.append(f"manifest calibration.mappings_scaled is {cal.get('mappings_scaled')!r}, "
                        f"{scaled} mappings have an alpha")
    for prod, alpha in seen.items():
        if AWQ_NORMS.match(prod):
            a, s = art.tensors.get(prod), src.tensors.get(prod)
            if a is None or s is None:
                problems.append(f"{prod}: missing")
                continue
            same = a.dtype == s.dtype and np.array_equal(a.raw(), s.raw())
            if alpha is None and not same:
                problems.append(f"{prod}: alpha is null (s = 1) but the norm differs from the source")
            elif alpha is not None and same:
                problems.append(f"{prod}: alpha is {alpha} but the norm is bit-identical to the source "
                                f"(the scales were not folded into it)")
        else:
            iv = stats.channel_scales.get(prod)
            if iv is None:
                problems.append(f"{prod}: the value check recovered no AWQ scales for it")
                continue
            lo, hi = iv
            ones = (lo <= 1 + 1e-6) & (hi >= 1 - 1e-6)
            if alpha is None and not ones.all():
                c = int(np.argmax(~ones))
                problems.append(f"{prod}: alpha is null (s = 1) but {int((~ones).sum())} channels need s != 1, "
                                f"e.g. channel {c}: s in [{lo[c]:.6g}, {hi[c]:.6g}]")
            elif alpha is not None and ones.all():
                problems.append(f"{prod}: alpha is {alpha} but every channel admits s = 1 (no scales applied)")
    return problems


# Linears that read the same input, so a calibrated input scale must be shared (vLLM fuses
# them and keeps one scale).
_SHARED_INPUT = [("self_attn", ("q_proj", "k_proj", "v_proj")), ("mlp", ("gate_proj", "up_proj"))]


def check_input_scales(art: Checkpoint, src: Checkpoint) -> list[str]:
    """Static activations: every `input_scale` finite and positive, equal across modules
    that share their input."""
    problems: list[str] = []
    values = {}
    for name in quantized_weights(src):
        prefix = name[: -len(".weight")]
        try:
            v = art.tensors[f"{prefix}.input_scale"].floats().reshape(-1)
        except (KeyError, ValueError) as e:
            problems.append(f"{prefix}.input_scale: cannot read ({e!r})")
            continue
        if v.shape != (1,) or not np.isfinite(v[0]) or v[0] <= 0:
            problems.append(f"{prefix}.input_scale: {v.tolist()} is not one finite positive value")
            continue
        values[prefix] = float(v[0])
    layers = {p.rsplit(".", 2)[0] for p in values}
    for layer in sorted(layers):
        for block, mods in _SHARED_INPUT:
            got = {m: values.get(f"{layer}.{block}.{m}") for m in mods}
            present = {m: v for m, v in got.items() if v is not None}
            if len(set(present.values())) > 1:
                problems.append(f"{layer}.{block}: input scales differ across modules that share "
                                f"their input: {present}")
    return problems


def check_manifest_report(manifest_path: Path, stats: dict, src: Checkpoint, scheme: str | None = None) -> list[str]:
    problems: list[str] = []
    m = _read_json(manifest_path, problems, "manifest.json")
    if m is None:
        return problems
    try:
        report = m["passes"][0]["report"]
        entries = report["tensors"]
        assert isinstance(entries, list)
    except Exception:  # noqa: BLE001
        return ["manifest.json has no passes[0].report.tensors list"]
    label = SCHEMES[scheme].get("report_scheme") if scheme is not None else None
    if label is not None:
        if report.get("scheme") != label:
            problems.append(f"manifest report scheme is {report.get('scheme')!r}, want {label!r}")
        if report.get("format") != SCHEMES[scheme]["format"]:
            problems.append(f"manifest report format is {report.get('format')!r}, want {SCHEMES[scheme]['format']!r}")
    seen = set()
    for e in entries:
        name = e.get("name") if isinstance(e, dict) else None
        if not isinstance(name, str):
            problems.append(f"manifest report entry without a name: {e!r}")
            continue
        key = name if name.endswith(".weight") else name + ".weight"
        if key in seen:
            problems.append(f"manifest reports {name} twice")
        seen.add(key)
        if key not in src.tensors or key not in set(quantized_weights(src)):
            problems.append(f"manifest reports {name}, which is not a quantized module")
            continue
        st = stats.get(key)
        if st is None:
            continue
        got = e.get("relative_rms_error")
        tol = MANIFEST_RTOL * st.relative_rms_error + 1e-12 + st.rms_tol
        if not isinstance(got, (int, float)) or abs(got - st.relative_rms_error) > tol:
            problems.append(f"manifest {name}: relative_rms_error {got!r}, measured {st.relative_rms_error:.6g}")
        got = e.get("max_error_over_bound")
        tol = MANIFEST_RTOL * st.max_error_over_bound + 1e-6 + st.ratio_tol
        if not isinstance(got, (int, float)) or abs(got - st.max_error_over_bound) > tol:
            problems.append(f"manifest {name}: max_error_over_bound {got!r}, measured {st.max_error_over_bound:.6g}")
        elif st.ratio_tol > 0 and got > 1 + BOUND_SLACK and not (scheme and SCHEMES[scheme].get("clip")):
            problems.append(f"manifest {name}: max_error_over_bound {got!r}: the quantizer reports errors "
                            f"beyond half a step of the weight it quantized")
        if "shape" in e and list(e["shape"]) != list(src.tensors[key].shape):
            problems.append(f"manifest {name}: shape {e['shape']}, source {list(src.tensors[key].shape)}")
        if "zero_groups" in e and e["zero_groups"] != st.zero_groups:
            problems.append(f"manifest {name}: zero_groups {e['zero_groups']}, measured {st.zero_groups}")
    for key in sorted(set(quantized_weights(src)) - seen):
        problems.append(f"manifest report has no entry for {key}")
    return problems


# --------------------------------------------------------------------------------------
# Check 4: serving.properties, manifest outputs, copied files
# --------------------------------------------------------------------------------------


def parse_properties(text: str) -> dict:
    props = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        k, sep, v = line.partition("=")
        if sep:
            props[k.strip()] = v.strip()
    return props


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def check_outputs(artifact: Path, source: Path) -> list[str]:
    artifact, source = Path(artifact), Path(source)
    problems: list[str] = []
    sp = artifact / "serving.properties"
    if not sp.exists():
        problems.append("serving.properties missing")
    else:
        props = parse_properties(sp.read_text())
        if props.get("option.quantize") != "compressed-tensors":
            problems.append(f"serving.properties option.quantize is {props.get('option.quantize')!r}, "
                            f"want 'compressed-tensors'")
    for fn in TOKENIZER_FILES:
        if (source / fn).exists():
            if not (artifact / fn).exists():
                problems.append(f"{fn} not copied from the source")
            elif (artifact / fn).read_bytes() != (source / fn).read_bytes():
                problems.append(f"{fn} differs from the source")
    m = _read_json(artifact / "manifest.json", problems, "manifest.json")
    if m is None:
        return problems
    if m.get("schema_version") != 1:
        problems.append(f"manifest.json schema_version is {m.get('schema_version')!r}, want 1")
    outputs = m.get("outputs")
    if not isinstance(outputs, list):
        return problems + ["manifest.json has no outputs list"]
    listed = set()
    for o in outputs:
        path = o.get("path") if isinstance(o, dict) else None
        if not isinstance(path, str) or os.path.isabs(path) or ".." in Path(path).parts:
            problems.append(f"manifest output with a bad path: {o!r}")
            continue
        listed.add(path)
        f = artifact / path
        if not f.is_file():
            problems.append(f"manifest lists {path}, which does not exist")
            continue
        if o.get("sha256") != sha256_file(f):
            problems.append(f"manifest sha256 of {path} does not match the file")
        if "bytes" in o and o["bytes"] != f.stat().st_size:
            problems.append(f"manifest says {path} has {o['bytes']} bytes, it has {f.stat().st_size}")
    inputs = m.get("inputs", [])
    for o in inputs if isinstance(inputs, list) else []:
        path = o.get("path") if isinstance(o, dict) else None
        if isinstance(path, str) and not os.path.isabs(path) and (source / path).is_file():
            if o.get("sha256") != sha256_file(source / path):
                problems.append(f"manifest input {path}: sha256 does not match the source file")
        else:
            problems.append(f"manifest input {o!r} is not a file of the source directory")
    present = {str(p.relative_to(artifact)) for p in artifact.rglob("*") if p.is_file()}
    for missing in sorted(present - listed - {"manifest.json"}):
        problems.append(f"{missing} is in the artifact but not in manifest outputs")
    for required in ["config.json", "serving.properties"]:
        if required not in listed:
            problems.append(f"manifest outputs do not list {required}")
    if not any(p.endswith(".safetensors") for p in listed):
        problems.append("manifest outputs list no weight file")
    return problems
