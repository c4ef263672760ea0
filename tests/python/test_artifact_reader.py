"""Independent verification of temper's compressed-tensors artifacts.

Part 1 reads the artifacts named by TEMPER_ARTIFACTS / TEMPER_SOURCE_MODEL exactly as
/work/shared/design/FORMATS.md defines compressed-tensors (see ct_reader.py) and checks
them against the source weights. Part 2 proves the reader can fail: it builds tiny
artifacts with a separate numpy writer (make_reference_artifact.py), checks that they pass,
then corrupts them one way at a time and checks that the right check rejects each.

Run: TEMPER_ARTIFACTS=... TEMPER_SOURCE_MODEL=... python -m pytest tests/python -q
(scripts/test.sh sets both).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import ct_reader as ct
import make_reference_artifact as ref

SCHEMES = list(ct.SCHEMES)


def _fmt(problems: list[str], limit: int = 25) -> str:
    head = "\n  ".join(problems[:limit])
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{len(problems)} problem(s):\n  {head}{more}"


# ======================================================================================
# Part 1: the real artifacts
# ======================================================================================


@pytest.mark.parametrize("scheme", SCHEMES)
def test_config(scheme, env):
    """config.json keeps every source key and declares the scheme as FORMATS.md says."""
    artifact_dir, source_model = env.dirs(scheme)
    problems = ct.check_config(scheme, artifact_dir, source_model)
    assert not problems, _fmt(problems)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_tensors(scheme, env, cache):
    """Container + index valid; unquantized tensors bit-identical; each quantized module
    stored as exactly the expected names, dtypes and shapes; nothing extra."""
    artifact_dir, source_model = env.dirs(scheme)
    art, src = cache.checkpoint(artifact_dir), cache.checkpoint(source_model)
    assert ct.quantized_weights(src), f"{source_model} has no model.layers.N Linear weights"
    problems = ct.check_tensors(scheme, art, src)
    assert not problems, _fmt(problems)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_values(scheme, env, cache):
    """Dequantized weights match the source: tight scales, exact round-to-nearest
    codes, per-element error bound, relative RMS limit."""
    artifact_dir, source_model = env.dirs(scheme)
    problems, stats = cache.check_values(scheme, artifact_dir, source_model)
    assert stats, "no quantized module could be read"
    assert not problems, _fmt(problems)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_manifest_report(scheme, env, cache):
    """manifest.json's per-tensor error stats equal our own measurement."""
    artifact_dir, source_model = env.dirs(scheme)
    _, stats = cache.check_values(scheme, artifact_dir, source_model)
    problems = ct.check_manifest_report(artifact_dir / "manifest.json", stats, cache.checkpoint(source_model),
                                        scheme)
    assert not problems, _fmt(problems)


AWQ_SCHEMES = [s for s in SCHEMES if ct.SCHEMES[s].get("awq")]


@pytest.mark.parametrize("scheme", AWQ_SCHEMES)
def test_awq_mappings(scheme, env, cache):
    """AWQ: manifest.json's calibration mappings say what was rescaled, and the artifact
    agrees: a norm with alpha null is bit-identical to the source, one with an alpha is
    not; up_proj with alpha null admits s3 = 1 on every channel, one with an alpha does
    not (s3 as recovered from the dequantized up_proj rows and down_proj columns)."""
    artifact_dir, source_model = env.dirs(scheme)
    _, stats = cache.check_values(scheme, artifact_dir, source_model)
    problems = ct.check_awq_mappings(artifact_dir / "manifest.json", cache.checkpoint(artifact_dir),
                                     cache.checkpoint(source_model), stats)
    assert not problems, _fmt(problems)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_outputs(scheme, env):
    """serving.properties, copied tokenizer files, manifest outputs and their sha256."""
    artifact_dir, source_model = env.dirs(scheme)
    problems = ct.check_outputs(artifact_dir, source_model)
    assert not problems, _fmt(problems)


# ======================================================================================
# Part 2: self-test of the reader on tiny reference artifacts
# ======================================================================================


def run_check(kind: str, scheme: str, art_dir: Path, src_dir: Path) -> list[str]:
    if kind == "config":
        return ct.check_config(scheme, art_dir, src_dir)
    if kind == "outputs":
        return ct.check_outputs(art_dir, src_dir)
    art, src = ct.load_checkpoint(art_dir), ct.load_checkpoint(src_dir)
    if kind == "tensors":
        return ct.check_tensors(scheme, art, src)
    problems, stats = ct.check_values(scheme, art, src)
    if kind == "values":
        return problems
    if kind == "awq":
        return ct.check_awq_mappings(art_dir / "manifest.json", art, src, stats)
    assert kind == "report"
    return ct.check_manifest_report(art_dir / "manifest.json", stats, src, scheme)


ALL_CHECKS = ["config", "tensors", "values", "report", "outputs"]


def checks_for(scheme: str) -> list[str]:
    return ALL_CHECKS + (["awq"] if ct.SCHEMES[scheme].get("awq") else [])


@pytest.fixture(scope="module")
def tiny_sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-src")
    return {dt: ref.make_tiny_source(root / dt, dtype=dt, seed=7) for dt in ("BF16", "F16", "F32")}


@pytest.fixture(scope="module")
def tiny_int4_sources(tmp_path_factory):
    """Like tiny_sources but with down_proj's input 256 wide: INT4 quantizes it with group
    128 and the 192-column Linears with group 64 (a second, named config group), the same
    split as SmolLM2's 1536 and 576."""
    root = tmp_path_factory.mktemp("tiny-int4-src")
    return {dt: ref.make_tiny_source(root / dt, dtype=dt, seed=7, inter=256) for dt in ("BF16", "F16", "F32")}


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("dtype,shards,reciprocal",
                         [("BF16", 1, False), ("BF16", 3, False), ("BF16", 1, True), ("F16", 1, False),
                          ("F32", 2, True)])
def test_selftest_reference_artifact_passes(scheme, dtype, shards, reciprocal, tiny_sources, tiny_int4_sources,
                                            tmp_path):
    """A correct artifact passes every check (so a failure in part 1 is a real finding),
    including one quantized as w * (1/scale), which rounds differently near ties."""
    sources = tiny_int4_sources if ct.is_int4(scheme) else tiny_sources
    out = ref.make_artifact(sources[dtype], tmp_path / scheme, scheme, shards=shards,
                            reciprocal=reciprocal)
    for kind in checks_for(scheme):
        problems = run_check(kind, scheme, out, sources[dtype])
        assert not problems, f"{kind}: {_fmt(problems)}"


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if ct.is_int4(s)])
def test_selftest_int4_without_group_128_modules_passes(scheme, tiny_sources, tmp_path):
    """INT4 where no Linear's input is a multiple of 128 (192 and 320 columns): every
    module is in the named group-64 config group, the "Linear" group 128 targets none."""
    out = ref.make_artifact(tiny_sources["BF16"], tmp_path / scheme, scheme)
    cfg = json.loads((out / "config.json").read_text())["quantization_config"]["config_groups"]
    assert len(cfg["group_1"]["targets"]) == 14 and cfg["group_1"]["weights"]["group_size"] == 64
    for kind in checks_for(scheme):
        problems = run_check(kind, scheme, out, tiny_sources["BF16"])
        assert not problems, f"{kind}: {_fmt(problems)}"


def test_selftest_tiny_int4_model_has_edge_cases(tiny_int4_sources, tmp_path):
    """The INT4 tiny artifacts have group-128 and group-64 modules, all-zero groups, and
    (AWQ) mappings both rescaled and kept at s = 1 for norms and for up_proj."""
    src_dir = tiny_int4_sources["BF16"]
    out = ref.make_artifact(src_dir, tmp_path / "a", "int4-awq")
    art, src = ct.load_checkpoint(out), ct.load_checkpoint(src_dir)
    assert art.tensors[L0 + "mlp.down_proj.weight_scale"].shape == (192, 2)
    assert art.tensors[L0 + "self_attn.q_proj.weight_scale"].shape == (192, 3)
    problems, stats = ct.check_values("int4-awq", art, src)
    assert not problems and stats[L0 + "self_attn.q_proj.weight"].zero_groups >= 3
    m = json.loads((out / "manifest.json").read_text())["passes"][0]["options"]["calibration"]["mappings"]
    kept = {e["producer"].split(".", 3)[3] for e in m if e["alpha"] is None}
    scaled = {e["producer"].split(".", 3)[3] for e in m if e["alpha"] is not None}
    assert {"input_layernorm.weight", "mlp.up_proj.weight"} <= kept & scaled
    lo, hi = stats.channel_scales[L0 + "mlp.up_proj.weight"]
    assert np.all(hi / lo < 1.05) and np.any(lo > 1.01)   # s3 recovered, and not 1
    # clipped groups: o_proj (never rescaled) has scales below round-to-nearest's
    rtn = ct.load_checkpoint(ref.make_artifact(src_dir, tmp_path / "b", "int4-w4a16"))
    name = L1 + "self_attn.o_proj.weight_scale"
    assert np.mean(art.tensors[name].floats() < rtn.tensors[name].floats()) > 0.3


def test_selftest_tiny_model_has_edge_cases(tiny_sources):
    """The tiny model really contains zero rows/groups/blocks and partial blocks."""
    src = ct.load_checkpoint(tiny_sources["BF16"])
    w = src.tensors["model.layers.0.mlp.down_proj.weight"].floats()
    assert w.shape == (192, 320) and not w[3].any() and not w[5, 64:128].any() and not w[128:, 128:256].any()
    assert src.tensors["model.layers.0.self_attn.k_proj.weight"].shape == (64, 192)


def test_selftest_bf16_scales_can_leave_top_int8_code_unused(tiny_sources, tmp_path):
    """With bf16 scales rounded up, a row's largest weight can land on 126 rather than
    127 (absmax/scale >= 127/(1 + 2^-7) = 126.02): the reader must accept that, so the
    "top code" rule cannot be a blanket 127."""
    out = ref.make_artifact(tiny_sources["BF16"], tmp_path / "a", "int8-w8a8")
    art = ct.load_checkpoint(out)
    tops = [np.abs(art.tensors[n].ints()).max(axis=1) for n in art.tensors
            if n.endswith("proj.weight")]
    tops = np.concatenate(tops)
    assert set(np.unique(tops)) <= {0, 126, 127} and (tops == 126).any() and (tops == 127).any()


def test_selftest_number_formats():
    """The reader's F8_E4M3 table, its rounding intervals and its pack-quantized unpacking
    agree with independent implementations (the writer's arithmetic encoder, shifts)."""
    t = ct.FP8_TABLE64
    assert t[0x7E] == 448 and t[0x08] == 2.0**-6 and t[0x01] == 2.0**-9 and t[0x38] == 1.0
    assert np.isnan(t[0x7F]) and np.isnan(t[0xFF]) and np.sum(np.isnan(t)) == 2
    assert np.array_equal(t[0x80:0xFF], -t[0x00:0x7F])
    rng = np.random.default_rng(3)
    x = np.concatenate([
        (rng.standard_normal(200_000) * np.exp2(rng.uniform(-14, 9, 200_000))).astype(np.float32),
        ((ct.FP8_POS[1:] + ct.FP8_POS[:-1]) / 2).astype(np.float32),  # exact ties
        -((ct.FP8_POS[1:] + ct.FP8_POS[:-1]) / 2).astype(np.float32),
    ])
    x = np.clip(x, -448, 448)
    codes = ref.fp8_encode(x)
    value, tie_distance = ct.fp8_round(x)
    assert np.array_equal(ct.FP8_TABLE[codes], value)
    ax = np.abs(x)
    assert np.all((ax >= ct.FP8_MID_LO[codes]) & (ax <= ct.FP8_MID_HI[codes]))
    # both neighbouring codes lie outside x's (tolerance-widened) interval unless x is
    # (within the tolerance of) a tie
    mag = (codes & 0x7F).astype(np.int64)
    near_tie = tie_distance <= ax * 2.0**-15
    for step in (-1, 1):
        ok = (mag + step >= 0) & (mag + step <= 0x7E)
        other = ((codes & 0x80) | np.clip(mag + step, 0, 0x7E)).astype(np.uint8)
        inside = (ax >= ct.FP8_MID_LO_TOL[other]) & (ax <= ct.FP8_MID_HI_TOL[other])
        assert not np.any(inside & ok & ~near_tie)
    exact = tie_distance == 0
    assert np.count_nonzero(exact) >= 2 * 125 and np.all(mag[exact] % 2 == 0)  # ties to even
    packed = rng.integers(-(2**31), 2**31, (7, 5), dtype=np.int64).astype(np.int32)
    le_bytes = np.frombuffer(packed.astype("<i4").tobytes(), np.uint8)
    assert np.array_equal(ct.unpack_int32_lanes(le_bytes, 7, 20), ct.unpack_int32_lanes_arith(packed))
    assert np.array_equal(ct.unpack_nibbles(le_bytes, 7, 40), ct.unpack_nibbles_arith(packed, 40))
    # INT4 by the definition, one value at a time: column 8j + i of a row is bits 4i..4i+3
    # of int32 j; zero point (r, g) is bits 4(r % 8).. of word (r // 8, g).
    u = packed.astype(np.int64) & 0xFFFFFFFF
    nib = ct.unpack_nibbles(le_bytes, 7, 40)
    zps = ct.unpack_zero_points(packed, 53)
    for r in range(7):
        for c in range(40):
            assert nib[r, c] == (int(u[r, c // 8]) >> (4 * (c % 8))) & 0xF
    for r in range(53):
        for g in range(5):
            assert zps[r, g] == (int(u[r // 8, g]) >> (4 * (r % 8))) & 0xF
    # ... and the reference writer packs the same way (one code and zero point per row)
    codes = rng.integers(0, 16, (9, 24))
    q, _ = ref.quantize_int4("m", np.zeros((9, 64), np.float32), "BF16")
    assert np.array_equal(ct.unpack_nibbles_arith(ref._pack_nibbles(codes), 24), codes)
    assert np.array_equal(ct.unpack_zero_points(q["m.weight_zero_point"][2], 9), np.full((9, 1), 8))


# ---- corruptions ---------------------------------------------------------------------
# Tensor-level corruptions run inside the writer (before the manifest hashes files), so
# the artifact is self-consistent and only the content check can catch them.

def _t(tensors, name):
    return tensors[name]


def flip_int8_code(name, i, j, delta=1):
    def m(t):
        a = _t(t, name)[2].copy()
        a[i, j] = a[i, j] - delta if a[i, j] + delta > 127 else a[i, j] + delta
        t[name][2] = a
    return m


def flip_fp8_code(name, i, j):
    """Move one FP8 code to a neighbouring value (mantissa LSB), avoiding NaN."""
    def m(t):
        a = _t(t, name)[2].copy()
        b = int(a[i, j]) ^ 1
        a[i, j] = b if (b & 0x7F) != 0x7F else int(a[i, j]) ^ 2
        t[name][2] = a
    return m


def set_code(name, i, j, value):
    def m(t):
        a = _t(t, name)[2].copy()
        a[i, j] = value
        t[name][2] = a
    return m


def set_int8_code_to_min(name):
    def m(t):
        a = _t(t, name)[2].copy()
        i, j = np.unravel_index(int(np.argmin(a)), a.shape)
        assert a[i, j] == -127
        a[i, j] = -128
        t[name][2] = a
    return m


def flip_packed_lane(name, i, j, lane):
    def m(t):
        a = _t(t, name)[2].copy().view(np.uint32)
        a[i, j] ^= np.uint32(1 << (8 * lane))
        t[name][2] = a.view(np.int32)
    return m


def reverse_packing_order(name):
    def m(t):
        a = _t(t, name)[2]
        t[name][2] = a.byteswap()  # lane k <-> lane 3-k
    return m


def pack_without_offset(name):
    def m(t):
        u = _t(t, name)[2].view(np.uint32)
        lanes = [((u >> (8 * k)) & 0xFF).astype(np.int64) - 128 for k in range(4)]
        raw = [(c & 0xFF).astype(np.uint32) for c in lanes]  # two's complement bytes
        t[name][2] = (raw[0] | raw[1] << 8 | raw[2] << 16 | raw[3] << 24).view(np.int32)
    return m


def bump_scale(name, idx, ulps):
    def m(t):
        dtype, shape, a = t[name]
        assert dtype == "BF16"
        a = a.copy()
        a[idx] = a[idx] + np.uint16(1) if ulps > 0 else a[idx] - np.uint16(1)
        t[name][2] = a
    return m


def reshape_tensor(name, shape):
    def m(t):
        t[name][1] = list(shape)
        t[name][2] = t[name][2].reshape(shape)
    return m


def transpose_square(name):
    def m(t):
        t[name][2] = np.ascontiguousarray(t[name][2].T)
    return m


def scale_as_f32(name):
    def m(t):
        dtype, shape, a = t[name]
        t[name] = ["F32", shape, ref.to_f32(dtype, a)]
    return m


def drop(name):
    return lambda t: t.pop(name)


def add_tensor(name, dtype, shape, arr):
    def m(t):
        t[name] = [dtype, list(shape), arr]
    return m


def set_weight_shape(name, values):
    def m(t):
        t[name][2] = np.array(values, np.int64)
    return m


def flip_bf16_bit(name, idx):
    def m(t):
        a = t[name][2].copy()
        a[idx] ^= np.uint16(1)
        t[name][2] = a
    return m


def truncate_codes(scheme, prefix, src_dir):
    """Re-quantize one int8 module rounding toward zero instead of to nearest."""
    def m(t):
        src = ref.read_model(src_dir)
        dtype, shape, arr = src[prefix + ".weight"]
        w = ref.to_f32(dtype, arr).reshape(shape)
        s = ref.to_f32("BF16", t[prefix + ".weight_scale"][2])
        t[prefix + ".weight"][2] = np.trunc(w / s).astype(np.int8)
    return m


def edit_json(rel, fn):
    def post(d: Path):
        p = d / rel
        obj = json.loads(p.read_text())
        fn(obj)
        p.write_text(json.dumps(obj))
    return post


def edit_text(rel, fn):
    def post(d: Path):
        p = d / rel
        p.write_text(fn(p.read_text()))
    return post


def truncate_file(rel, n=1):
    def post(d: Path):
        p = d / rel
        data = p.read_bytes()
        p.write_bytes(data[:-n])
    return post


def _qc(obj):
    return obj["quantization_config"]


L1 = "model.layers.1."
L0 = "model.layers.0."

# (id, scheme, shards, mutate(tensors), mutate_report(reports), post(dir), check, substring)
CORRUPTIONS = [
    # ---- values: codes
    ("int8-one-code", "int8-w8a8", 1, flip_int8_code(L1 + "mlp.up_proj.weight", 7, 11), None, None,
     "values", "not w/scale rounded"),
    ("int8-one-code-bound", "int8-w8a8", 1, flip_int8_code(L1 + "mlp.up_proj.weight", 7, 11, 3), None, None,
     "values", "exceed the error bound"),
    ("int8-code-minus-128", "int8-w8a8", 1, set_int8_code_to_min(L1 + "self_attn.q_proj.weight"), None, None,
     "values", "outside [-127, 127]"),
    ("int8-rounding-truncates", "int8-w8a8", 1, "TRUNC", None, None, "values", "not w/scale rounded"),
    ("int8-transposed-square", "int8-w8a8", 1, transpose_square(L1 + "self_attn.o_proj.weight"), None, None,
     "values", "exceed the error bound"),
    ("zero-row-nonzero-code", "int8-w8a8", 1, set_code(L0 + "self_attn.q_proj.weight", 3, 9, 1), None, None,
     "values", "all-zero groups have nonzero codes"),
    ("packed-one-lane", "int8-w8a16", 1, flip_packed_lane(L1 + "mlp.gate_proj.weight_packed", 4, 5, 2), None,
     None, "values", "not w/scale rounded"),
    ("packed-lane-order", "int8-w8a16", 1, reverse_packing_order(L1 + "mlp.down_proj.weight_packed"), None, None,
     "values", "not w/scale rounded"),
    ("packed-no-offset", "int8-w8a16-g64", 1, pack_without_offset(L1 + "mlp.up_proj.weight_packed"), None, None,
     "values", "not w/scale rounded"),
    ("fp8-one-code", "fp8-dynamic", 1, flip_fp8_code(L1 + "self_attn.k_proj.weight", 9, 17), None, None,
     "values", "not w/scale rounded"),
    ("fp8-block-one-code", "fp8-block", 1, flip_fp8_code(L1 + "mlp.down_proj.weight", 150, 300), None, None,
     "values", "not w/scale rounded"),
    ("fp8-nan-code", "fp8-dynamic", 1, set_code(L1 + "mlp.up_proj.weight", 2, 2, 0x7F), None, None,
     "values", "NaN codes"),
    # ---- values: scales
    ("static-input-scales-differ", "fp8-static", 1, bump_scale(L1 + "self_attn.k_proj.input_scale", (0,), +1),
     None, None, "values", "input scales differ"),
    ("static-weight-scale-up", "fp8-static", 1, bump_scale(L1 + "mlp.up_proj.weight_scale", (0,), +1), None,
     None, "values", "not w/scale rounded"),
    ("scale-up-one-ulp", "int8-w8a16-g64", 1, bump_scale(L1 + "mlp.down_proj.weight_scale", (10, 2), +1), None,
     None, "values", "rounded up to BF16 (too large)"),
    ("scale-down-one-ulp", "int8-w8a16", 1, bump_scale(L1 + "self_attn.v_proj.weight_scale", (20, 0), -1), None,
     None, "values", "scales below absmax"),
    ("fp8-block-scale-up", "fp8-block", 1, bump_scale(L1 + "mlp.gate_proj.weight_scale", (2, 1), +1), None, None,
     "values", "rounded up to BF16 (too large)"),
    ("fp8-scale-down", "fp8-dynamic", 1, bump_scale(L1 + "mlp.gate_proj.weight_scale", (5, 0), -1), None, None,
     "values", "scales below absmax"),
    # ---- tensors: inventory, shapes, dtypes
    ("scale-shape-transposed", "fp8-dynamic", 1, reshape_tensor(L1 + "self_attn.q_proj.weight_scale", (1, 192)),
     None, None, "tensors", "weight_scale: is BF16[1, 192], want BF16[192, 1]"),
    ("block-scale-shape", "fp8-block", 1, reshape_tensor(L1 + "mlp.down_proj.weight_scale", (3, 2)), None, None,
     "tensors", "want BF16[2, 3]"),
    ("group-scale-shape", "int8-w8a16-g64", 1, reshape_tensor(L1 + "mlp.down_proj.weight_scale", (192, 1, 5)),
     None, None, "tensors", "want BF16[192, 5]"),
    ("weight-shape-swapped", "int8-w8a16", 1, set_weight_shape(L1 + "mlp.up_proj.weight_shape", [192, 320]), None,
     None, "tensors", "holds [192, 320], want [320, 192]"),
    ("packed-shape", "int8-w8a16", 1, reshape_tensor(L1 + "mlp.up_proj.weight_packed", (160, 96)), None, None,
     "tensors", "want I32[320, 48]"),
    ("scale-dtype-f32", "fp8-dynamic", 1, scale_as_f32(L1 + "mlp.up_proj.weight_scale"), None, None,
     "tensors", "is F32[320, 1], want BF16[320, 1]"),
    ("norm-changed", "int8-w8a8", 1, flip_bf16_bit(L1 + "input_layernorm.weight", 4), None, None,
     "tensors", "bytes differ from the source"),
    ("embed-missing", "fp8-dynamic", 1, drop("model.embed_tokens.weight"), None, None,
     "tensors", "model.embed_tokens.weight: unquantized source tensor missing"),
    ("weight-shape-missing", "int8-w8a16", 1, drop(L0 + "self_attn.k_proj.weight_shape"), None, None,
     "tensors", "weight_shape: missing"),
    ("extra-input-scale", "fp8-dynamic", 1,
     add_tensor(L0 + "self_attn.q_proj.input_scale", "BF16", [1], np.array([0x3F80], np.uint16)), None, None,
     "tensors", "input_scale: unexpected tensor"),
    ("embed-quantized", "int8-w8a8", 1,
     add_tensor("model.embed_tokens.weight_scale", "BF16", [300, 1], np.full(300, 0x3F80, np.uint16)), None, None,
     "tensors", "unexpected tensor"),
    ("index-wrong-shard", "int8-w8a16", 3, None, None,
     edit_json("model.safetensors.index.json",
               lambda o: o["weight_map"].__setitem__("model.norm.weight", "model-00001-of-00003.safetensors")),
     "tensors", "index maps model.norm.weight to model-00001-of-00003.safetensors"),
    ("index-missing-entry", "fp8-block", 3, None, None,
     edit_json("model.safetensors.index.json", lambda o: o["weight_map"].pop(L1 + "mlp.up_proj.weight")),
     "tensors", "missing from the index weight_map"),
    ("truncated-weights", "fp8-dynamic", 1, None, None, truncate_file("model.safetensors"),
     "tensors", "buffer"),
    # ---- config
    ("config-format", "int8-w8a16", 1, None, None,
     edit_json("config.json", lambda o: _qc(o).__setitem__("format", "int-quantized")),
     "config", "format is 'int-quantized', want 'pack-quantized'"),
    ("config-ignore", "fp8-dynamic", 1, None, None,
     edit_json("config.json", lambda o: _qc(o).__setitem__("ignore", [])), "config", "must contain 'lm_head'"),
    ("config-source-key", "fp8-block", 1, None, None,
     edit_json("config.json", lambda o: o.__setitem__("rope_theta", 10000.0)), "config", "changed 'rope_theta'"),
    ("config-activations", "int8-w8a16", 1, None, None,
     edit_json("config.json", lambda o: _qc(o)["config_groups"]["group_0"].__setitem__(
         "input_activations", {"num_bits": 8, "type": "int", "strategy": "token", "dynamic": True})),
     "config", "want null (weight-only)"),
    ("config-act-static", "int8-w8a8", 1, None, None,
     edit_json("config.json", lambda o: _qc(o)["config_groups"]["group_0"]["input_activations"].__setitem__(
         "dynamic", False)), "config", "input_activations.dynamic is False"),
    ("config-group-size", "int8-w8a16-g64", 1, None, None,
     edit_json("config.json", lambda o: _qc(o)["config_groups"]["group_0"]["weights"].__setitem__(
         "group_size", 128)), "config", "group_size is 128, want 64"),
    ("config-block", "fp8-block", 1, None, None,
     edit_json("config.json", lambda o: _qc(o)["config_groups"]["group_0"]["weights"].__setitem__(
         "block_structure", [64, 64])), "config", "block_structure"),
    ("config-status", "fp8-dynamic", 1, None, None,
     edit_json("config.json", lambda o: _qc(o).__setitem__("quantization_status", "frozen")),
     "config", "quantization_status"),
    # ---- manifest report
    ("report-rms", "int8-w8a8", 1, None,
     lambda r: r[3].__setitem__("relative_rms_error", r[3]["relative_rms_error"] * 1.01), None,
     "report", "relative_rms_error"),
    ("report-missing", "fp8-block", 1, None, lambda r: r.pop(0), None, "report", "has no entry for"),
    # ---- outputs
    ("serving-properties", "fp8-dynamic", 1, None, None,
     edit_text("serving.properties", lambda s: "option.quantize=fp8\n"), "outputs", "option.quantize is 'fp8'"),
    ("sha256", "int8-w8a8", 1, None, None, edit_text("config.json", lambda s: s + "\n"),
     "outputs", "sha256 of config.json does not match"),
    ("manifest-input", "fp8-block", 1, None, None,
     edit_json("manifest.json", lambda o: o["inputs"][0].__setitem__("sha256", "0" * 64)),
     "outputs", "sha256 does not match the source file"),
    ("manifest-unlisted-file", "fp8-dynamic", 1, None, None,
     lambda d: (d / "notes.txt").write_text("x"),
     "outputs", "notes.txt is in the artifact but not in manifest outputs"),
    ("tokenizer-changed", "int8-w8a16", 1, None, None, edit_text("tokenizer.json", lambda s: s + " "),
     "outputs", "tokenizer.json differs from the source"),
]


@pytest.mark.parametrize("case", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_selftest_corruption_is_caught(case, tiny_sources, tmp_path):
    cid, scheme, shards, mutate, mutate_report, post, kind, needle = case
    src = tiny_sources["BF16"]
    if mutate == "TRUNC":
        mutate = truncate_codes(scheme, L1 + "mlp.gate_proj", src)
    out = ref.make_artifact(src, tmp_path / scheme, scheme, shards=shards, mutate=mutate,
                            mutate_report=mutate_report)
    if post is not None:
        post(out)
    problems = run_check(kind, scheme, out, src)
    assert any(needle in p for p in problems), (
        f"{cid}: the {kind} check did not report {needle!r}; it reported {_fmt(problems)}")


def test_selftest_missing_environment_fails(monkeypatch):
    """The artifact fixtures fail (not skip) with instructions when the env is unset."""
    import conftest

    monkeypatch.delenv("TEMPER_ARTIFACTS", raising=False)
    with pytest.raises(pytest.fail.Exception, match="scripts/test.sh"):
        conftest._env_dir("TEMPER_ARTIFACTS")
    monkeypatch.setenv("TEMPER_ARTIFACTS", "/nonexistent/temper-artifacts")
    with pytest.raises(pytest.fail.Exception, match="not a directory"):
        conftest._env_dir("TEMPER_ARTIFACTS")


# ---- INT4 / AWQ corruptions ------------------------------------------------------------
# On the INT4 tiny model (group 64 for the 192-column Linears, 128 for down_proj).

def _nibbles(words: np.ndarray) -> list[np.ndarray]:
    u = words.astype(np.int64) & 0xFFFFFFFF
    return [(u >> (4 * i)) & 0xF for i in range(8)]


def _words(nibbles) -> np.ndarray:
    w = np.zeros(nibbles[0].shape, np.int64)
    for i, n in enumerate(nibbles):
        w |= (n & 0xF) << (4 * i)
    return w.astype(np.uint32).view(np.int32)


def reverse_nibble_order(name):
    """Value i of each int32 in bits 4(7-i) instead of 4i."""
    def m(t):
        t[name][2] = _words(_nibbles(t[name][2])[::-1])
    return m


def int4_signed_nibbles(name):
    """Codes stored as the signed value's two's complement nibble, not value + 8."""
    def m(t):
        t[name][2] = _words([n ^ 8 for n in _nibbles(t[name][2])])
    return m


def bump_nibble(name, i, j, delta=1):
    """Nibble j (0..7 of word column j // 8) of row i moved by +-delta, staying in 0..15."""
    def m(t):
        a = t[name][2].copy()
        n = _nibbles(a[i:i + 1, j // 8:j // 8 + 1])
        k = j % 8
        v = int(n[k][0, 0])
        n[k] = n[k] * 0 + (v - delta if v + delta > 15 else v + delta)
        a[i, j // 8] = _words(n)[0, 0]
        t[name][2] = a
    return m


def zero_points_along_input(name, out):
    """The zero points packed 8 per int32 along the input (group) dimension, like
    weight_packed, instead of along the output dimension."""
    def m(t):
        words = t[name][2]
        z = np.stack(_nibbles(words), axis=1).reshape(-1, words.shape[1])[:out]   # [out, G]
        g = z.shape[1]
        z = np.pad(z, ((0, 0), (0, -g % 8))).reshape(out, -1, 8)
        t[name] = ["I32", [out, z.shape[1]], _words([z[:, :, i] for i in range(8)])]
    return m


def requantize_int4(prefix, src_dir, transform, clip=None):
    """Re-quantize one module from transform(source f32 weight) with the reference
    writer's own INT4 quantizer (every group's range times `clip` if given)."""
    def m(t):
        src = ref.read_model(src_dir)
        dtype, shape, arr = src[prefix + ".weight"]
        c = None if clip is None else np.float32(clip)
        q, _ = ref.quantize_int4(prefix, transform(ref.to_f32(dtype, arr).reshape(shape)), dtype, clip=c)
        t.update(q)
    return m


def lower_a_saturated_code(prefix, src_dir):
    """In a clipped group, move a weight that lies beyond the clipped range (code 15,
    w/scale + zero > 15.5) down to code 14: still within a step and a half of its weight,
    but no longer the nearest code."""
    def m(t):
        w = ref.to_f32("BF16", ref.read_model(src_dir)[prefix + ".weight"][2]).reshape(192, 192)
        packed = t[prefix + ".weight_packed"][2]
        codes = np.stack(_nibbles(packed), axis=-1).reshape(192, 192)
        zp = np.stack(_nibbles(t[prefix + ".weight_zero_point"][2]), axis=1).reshape(-1, 3)[:192]
        s = ref.to_f32("BF16", t[prefix + ".weight_scale"][2]).reshape(192, 3)
        x = w / np.repeat(s, 64, axis=1) + np.repeat(zp, 64, axis=1)
        i, j = np.argwhere((codes == 15) & (x > 15.5) & (x < 16.0))[0]
        t[prefix + ".weight_packed"][2] = packed.copy()
        bump_nibble(prefix + ".weight_packed", i, j, -1)(t)
    return m


def copy_source_tensor(name, src_dir):
    def m(t):
        t[name] = list(ref.read_model(src_dir)[name])
    return m


def awq_scales(src_dir, layer, which):
    """The reference writer's AWQ scale of mapping `which` (0: s1, 1: s2, 2: s3)."""
    return ref.awq_plan(ref.read_model(src_dir))[layer][which][1]


def set_mapping(producer, **fields):
    def fn(o):
        cal = o["passes"][0]["options"]["calibration"]
        for e in cal["mappings"]:
            if e["producer"] == producer:
                e.update(fields)
    return fn


def drop_mapping(producer):
    def fn(o):
        cal = o["passes"][0]["options"]["calibration"]
        cal["mappings"] = [e for e in cal["mappings"] if e["producer"] != producer]
    return fn


def _group(name):
    return lambda o: _qc(o)["config_groups"][name]


# (id, scheme, mutate(tensors) or ("SRC", factory(src_dir)), post(dir), check, substring)
INT4_CORRUPTIONS = [
    # ---- values: codes and their packing
    ("int4-one-code", "int4-w4a16", bump_nibble(L1 + "mlp.up_proj.weight_packed", 7, 11), None,
     "values", "not w/scale + zero rounded"),
    ("int4-one-code-bound", "int4-w4a16", bump_nibble(L1 + "mlp.down_proj.weight_packed", 3, 200, 3), None,
     "values", "exceed the error bound"),
    ("int4-nibble-order", "int4-w4a16", reverse_nibble_order(L1 + "mlp.gate_proj.weight_packed"), None,
     "values", "not w/scale + zero rounded"),
    ("int4-signed-nibbles", "int4-w4a16", int4_signed_nibbles(L1 + "self_attn.q_proj.weight_packed"), None,
     "values", "not w/scale + zero rounded"),
    ("int4-zero-group-code", "int4-w4a16", bump_nibble(L0 + "self_attn.k_proj.weight_packed", 3, 9), None,
     "values", "all-zero groups have codes other than their zero point"),
    # ---- values: zero points and scales
    ("int4-zero-point-off-by-one", "int4-w4a16", bump_nibble(L1 + "self_attn.o_proj.weight_zero_point", 2, 1),
     None, "values", "zero points are not round(-min/scale)"),
    ("int4-zero-point-nibble-order", "int4-w4a16",
     reverse_nibble_order(L1 + "mlp.down_proj.weight_zero_point"), None, "values", "zero points are not"),
    ("int4-scale-up-one-ulp", "int4-w4a16", bump_scale(L1 + "mlp.down_proj.weight_scale", (10, 1), +1), None,
     "values", "rounded up to BF16 (too large)"),
    ("int4-scale-down-one-ulp", "int4-w4a16", bump_scale(L1 + "self_attn.v_proj.weight_scale", (20, 2), -1), None,
     "values", "scales below (max - min)/15"),
    ("int4-rtn-clipped", "int4-w4a16",
     ("SRC", lambda d: requantize_int4(L1 + "self_attn.o_proj", d, lambda w: w, clip=0.9)), None,
     "values", "scales below (max - min)/15"),
    ("int4-rtn-from-other-weights", "int4-w4a16",
     ("SRC", lambda d: requantize_int4(L1 + "self_attn.o_proj", d, lambda w: w[::-1].copy())), None,
     "values", "exceed the error bound"),
    # ---- tensors
    ("int4-zero-point-along-input", "int4-w4a16",
     zero_points_along_input(L1 + "self_attn.k_proj.weight_zero_point", 64), None,
     "tensors", "weight_zero_point: is I32[64, 1], want I32[8, 3]"),
    ("int4-packed-as-int8", "int4-w4a16", reshape_tensor(L1 + "mlp.up_proj.weight_packed", (128, 48)), None,
     "tensors", "want I32[256, 24]"),
    ("int4-zero-point-missing", "int4-w4a16", drop(L0 + "mlp.gate_proj.weight_zero_point"), None,
     "tensors", "weight_zero_point: missing"),
    ("int4-weight-shape", "int4-w4a16", set_weight_shape(L1 + "mlp.down_proj.weight_shape", [256, 192]), None,
     "tensors", "holds [256, 192], want [192, 256]"),
    ("int4-scale-group-128", "int4-w4a16", reshape_tensor(L1 + "self_attn.q_proj.weight_scale", (288, 2)), None,
     "tensors", "want BF16[192, 3]"),
    # ---- config
    ("int4-config-bits", "int4-w4a16", None,
     edit_json("config.json", lambda o: _group("group_0")(o)["weights"].__setitem__("num_bits", 8)),
     "config", "group_0.weights.num_bits is 8, want 4"),
    ("int4-config-symmetric", "int4-w4a16", None,
     edit_json("config.json", lambda o: _group("group_1")(o)["weights"].__setitem__("symmetric", True)),
     "config", "group_1.weights.symmetric is True, want False"),
    ("int4-config-target-missing", "int4-w4a16", None,
     edit_json("config.json", lambda o: _group("group_1")(o)["targets"].remove(L1 + "mlp.up_proj")),
     "config", "group_1.targets lacks 'model.layers.1.mlp.up_proj'"),
    ("int4-config-target-extra", "int4-w4a16", None,
     edit_json("config.json", lambda o: _group("group_1")(o)["targets"].append(L0 + "mlp.down_proj")),
     "config", "group_1.targets names 'model.layers.0.mlp.down_proj'"),
    ("int4-config-fallback-size", "int4-w4a16", None,
     edit_json("config.json", lambda o: _group("group_1")(o)["weights"].__setitem__("group_size", 128)),
     "config", "group_1.weights.group_size is 128"),
    ("int4-config-no-fallback-group", "int4-w4a16", None,
     edit_json("config.json", lambda o: _qc(o)["config_groups"].pop("group_1")),
     "config", "config_groups must be exactly {group_0, group_1}"),
    ("int4-config-catch-all-64", "int4-w4a16", None,
     edit_json("config.json", lambda o: _group("group_0")(o)["weights"].__setitem__("group_size", 64)),
     "config", "group_0.weights.group_size is 64, want 128"),
    # ---- report
    ("int4-report-label", "int4-w4a16", None,
     edit_json("manifest.json", lambda o: o["passes"][0]["report"].__setitem__("scheme", "INT8 W8A16 (group 64)")),
     "report", "manifest report scheme is 'INT8 W8A16 (group 64)'"),
    # ---- AWQ: the folded scales
    ("awq-norm-not-divided", "int4-awq", ("SRC", lambda d: copy_source_tensor(L0 + "input_layernorm.weight", d)),
     None, "values", "channels are not the source divided by the scale q_proj/k_proj/v_proj were multiplied by"),
    ("awq-norm-divided-twice", "int4-awq",
     ("SRC", lambda d: lambda t: t.__setitem__(L0 + "post_attention_layernorm.weight", [
         "BF16", [192], ref.f32_to_bf16_bits(ref.to_f32("BF16", t[L0 + "post_attention_layernorm.weight"][2])
                                             / awq_scales(d, 0, 1))])),
     None, "values", "channels are not the source divided by the scale gate_proj were multiplied by"),
    ("awq-down-not-scaled", "int4-awq", ("SRC", lambda d: requantize_int4(L0 + "mlp.down_proj", d, lambda w: w)),
     None, "values", "no scale s3 puts both down_proj's column"),
    ("awq-up-rows-not-divided", "int4-awq",
     ("SRC", lambda d: requantize_int4(L0 + "mlp.up_proj", d, lambda w: w * awq_scales(d, 0, 1)[None, :])),
     None, "values", "no scale s3 puts both down_proj's column"),
    ("awq-gate-not-scaled", "int4-awq", ("SRC", lambda d: requantize_int4(L0 + "mlp.gate_proj", d, lambda w: w)),
     None, "values", "channels are not the source divided by the scale gate_proj were multiplied by"),
    ("awq-one-consumer-not-scaled", "int4-awq",
     ("SRC", lambda d: requantize_int4(L0 + "self_attn.k_proj", d, lambda w: w)),
     None, "values", "input channels where no single scale s puts every dequantized weight"),
    ("awq-o-proj-scaled", "int4-awq",
     ("SRC", lambda d: requantize_int4(L0 + "self_attn.o_proj", d, lambda w: w * awq_scales(d, 0, 0)[None, :])),
     None, "values", "model.layers.0.self_attn.o_proj.weight_scale: "),
    ("awq-clip-off-grid", "int4-awq",
     ("SRC", lambda d: requantize_int4(L1 + "self_attn.o_proj", d, lambda w: w, clip=0.97)), None,
     "values", "o_proj.weight_scale: 576 scales are not c (max - min)/15 rounded up to BF16 for any clip"),
    ("awq-clipped-code-not-saturated", "int4-awq", "CLIPPED-CODE", None,
     "values", "codes are not w/scale + zero rounded to nearest"),
    ("awq-model-norm-changed", "int4-awq", flip_bf16_bit("model.norm.weight", 4), None,
     "tensors", "model.norm.weight: 1 bytes differ from the source"),
    # ---- AWQ: the manifest's mappings against the artifact
    ("awq-alpha-null-but-folded", "int4-awq", None,
     edit_json("manifest.json", set_mapping(L0 + "input_layernorm.weight", alpha=None)),
     "awq", "input_layernorm.weight: alpha is null (s = 1) but the norm differs"),
    ("awq-alpha-but-not-folded", "int4-awq", None,
     edit_json("manifest.json", set_mapping(L1 + "input_layernorm.weight", alpha=0.5)),
     "awq", "model.layers.1.input_layernorm.weight: alpha is 0.5 but the norm is bit-identical"),
    ("awq-up-alpha-null-but-scaled", "int4-awq", None,
     edit_json("manifest.json", set_mapping(L0 + "mlp.up_proj.weight", alpha=None)),
     "awq", "mlp.up_proj.weight: alpha is null (s = 1) but"),
    ("awq-up-alpha-but-unscaled", "int4-awq", None,
     edit_json("manifest.json", set_mapping(L1 + "mlp.up_proj.weight", alpha=0.3)),
     "awq", "every channel admits s = 1"),
    ("awq-mapping-missing", "int4-awq", None,
     edit_json("manifest.json", drop_mapping(L1 + "post_attention_layernorm.weight")),
     "awq", "no AWQ mapping for model.layers.1.post_attention_layernorm.weight"),
    ("awq-mapping-consumers", "int4-awq", None,
     edit_json("manifest.json", set_mapping(L0 + "mlp.up_proj.weight", consumers=[L0 + "mlp.gate_proj"])),
     "awq", "consumers"),
]


@pytest.mark.parametrize("case", INT4_CORRUPTIONS, ids=[c[0] for c in INT4_CORRUPTIONS])
def test_selftest_int4_corruption_is_caught(case, tiny_int4_sources, tmp_path):
    cid, scheme, mutate, post, kind, needle = case
    src = tiny_int4_sources["BF16"]
    if isinstance(mutate, tuple):
        mutate = mutate[1](src)
    elif mutate == "CLIPPED-CODE":
        mutate = lower_a_saturated_code(L1 + "self_attn.o_proj", src)
    out = ref.make_artifact(src, tmp_path / scheme, scheme, mutate=mutate)
    if post is not None:
        post(out)
    problems = run_check(kind, scheme, out, src)
    assert any(needle in p for p in problems), (
        f"{cid}: the {kind} check did not report {needle!r}; it reported {_fmt(problems)}")
