"""TensorRT-LLM checkpoints written by `optimize --compile`, read back by their documented
layout and checked against the source weights.

Self-contained (numpy and a safetensors reader written here; nothing of temper imported).
The layout, from TensorRT-LLM's source (models/modeling_utils.py PretrainedConfig and
QuantConfig, models/llama/convert.py, quantization/layers.py), for tp_size t:
- config.json: architecture LlamaForCausalLM, dtype, dimensions, hidden_act silu,
  mapping {world_size, tp_size, pp_size}, quantization {quant_algo, kv_cache_quant_algo};
- rank{r}.safetensors, names `transformer.layers.{i}.*`:
  attention.qkv = rank r's q rows, then its k rows, then its v rows (a kv head repeated
  t / kv_heads times on consecutive ranks when there are fewer kv heads than ranks);
  attention.dense = o_proj columns r; mlp.fc = gate_proj rows r; mlp.gate = up_proj rows r;
  mlp.proj = down_proj columns r; input_layernorm, post_layernorm (post_attention_layernorm)
  whole; transformer.vocab_embedding whole; lm_head padded with zero rows to a multiple of
  t, rows r; transformer.ln_f = model.norm;
- FP8 (per tensor): weight F8_E4M3, weights_scaling_factor and activation_scaling_factor
  f32 [1]; the fused qkv takes the largest of the three scales, each part re-rounded to it,
  and the largest activation scale;
- FP8_PER_CHANNEL_PER_TOKEN: weight F8_E4M3 and per_channel_scale f32 [rows].

Artifacts are made here with $TEMPER_BIN_DIR/optimize (default target/release/optimize).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
NP = {"BF16": "<u2", "F16": "<f2", "F32": "<f4", "F8_E4M3": "u1", "I8": "i1"}


def read_safetensors(path: Path) -> dict[str, tuple[str, tuple, np.ndarray]]:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        a, b = h["data_offsets"]
        arr = np.frombuffer(body[a:b], dtype=NP[h["dtype"]]).reshape(h["shape"])
        out[name] = (h["dtype"], tuple(h["shape"]), arr)
    return out


def read_dir(d: Path) -> dict:
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(read_safetensors(f))
    return out


def to_f32(dtype: str, a: np.ndarray) -> np.ndarray:
    if dtype == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


def _fp8_values() -> np.ndarray:
    v = np.zeros(256, np.float32)
    for c in range(256):
        s, e, m = c >> 7, (c >> 3) & 15, c & 7
        mag = np.nan if (c & 0x7F) == 0x7F else (2.0 ** (e - 7) * (1 + m / 8) if e else 2.0 ** -6 * m / 8)
        v[c] = -mag if s else mag
    return v


FP8 = _fp8_values()


def fp8_round(x: np.ndarray) -> np.ndarray:
    """Nearest E4M3 code, ties to the even code, saturating at 448 (values here are small)."""
    pos = np.arange(0x7F)  # non-negative codes, increasing value
    vals = FP8[pos]
    a = np.minimum(np.abs(x), 448.0)
    hi = np.clip(np.searchsorted(vals, a), 1, len(vals) - 1)
    lo = hi - 1
    dlo, dhi = a - vals[lo], vals[hi] - a
    code = np.where(dhi < dlo, hi, np.where(dlo < dhi, lo, np.where(lo % 2 == 0, lo, hi)))
    return (code | np.where(np.signbit(x), 0x80, 0)).astype(np.uint8)


def optimize_bin() -> Path:
    path = Path(os.environ.get("TEMPER_BIN_DIR") or REPO / "target" / "release") / "optimize"
    if not path.is_file():
        pytest.fail(f"{path} does not exist: cargo build --release -p temper-cli", pytrace=False)
    return path


def source_model() -> Path:
    v = os.environ.get("TEMPER_SOURCE_MODEL")
    if not v or not (Path(v) / "config.json").is_file():
        pytest.fail("TEMPER_SOURCE_MODEL must name the SmolLM2 model directory (scripts/test.sh)",
                    pytrace=False)
    return Path(v)


def run(model: Path, out: Path, instance: str, *flags: str) -> dict:
    p = subprocess.run([str(optimize_bin()), "--model", str(model), "--instance-type", instance,
                        "--output", str(out), "--overwrite", "--json", *flags],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


class Layout:
    def __init__(self, hf: dict, t: int):
        self.H, self.nh = hf["hidden_size"], hf["num_attention_heads"]
        self.nkv = hf.get("num_key_value_heads") or self.nh
        self.d = hf.get("head_dim") or self.H // self.nh
        self.I, self.V, self.L, self.t = hf["intermediate_size"], hf["vocab_size"], hf["num_hidden_layers"], t

    def q(self, r):
        n = self.nh // self.t * self.d
        return slice(r * n, (r + 1) * n)

    def kv(self, r):
        if self.nkv >= self.t:
            n = self.nkv // self.t * self.d
            return slice(r * n, (r + 1) * n)
        h = r // (self.t // self.nkv)
        return slice(h * self.d, (h + 1) * self.d)


def check_config(cfg: dict, hf: dict, t: int, algo):
    assert cfg["architecture"] == "LlamaForCausalLM"
    assert cfg["hidden_act"] == "silu" and cfg["position_embedding_type"] == "rope_gpt_neox"
    for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"):
        assert cfg[k] == hf[k], k
    assert cfg["num_key_value_heads"] == (hf.get("num_key_value_heads") or hf["num_attention_heads"])
    assert cfg["mapping"] == {"world_size": t, "tp_size": t, "pp_size": 1}
    assert set(cfg["quantization"]) <= {"quant_algo", "kv_cache_quant_algo", "group_size",
                                        "smoothquant_val", "clamp_val", "use_meta_recipe",
                                        "has_zero_point", "pre_quant_scale", "exclude_modules"}
    assert cfg["quantization"]["quant_algo"] == algo
    assert cfg["rotary_base"] == hf.get("rope_theta", 10000.0)


def check_dense(out: Path, model: Path, t: int):
    """Every rank tensor is exactly the source's bytes in its documented place."""
    hf = json.loads((model / "config.json").read_text())
    cfg = json.loads((out / "config.json").read_text())
    check_config(cfg, hf, t, None)
    src = read_dir(model)
    lay = Layout(hf, t)
    ranks = [read_safetensors(out / f"rank{r}.safetensors") for r in range(t)]
    assert sorted(p.name for p in out.glob("rank*.safetensors")) == [f"rank{r}.safetensors" for r in range(t)]
    w = lambda n: src[n][2]
    lm = w("lm_head.weight") if "lm_head.weight" in src else w("model.embed_tokens.weight")
    per = -(-lay.V // t)
    padded = np.zeros((per * t, lay.H), lm.dtype)
    padded[:lay.V] = lm
    for r, rk in enumerate(ranks):
        g = lambda n: rk[n][2]
        assert np.array_equal(g("transformer.vocab_embedding.weight"), w("model.embed_tokens.weight"))
        assert np.array_equal(g("lm_head.weight"), padded[r * per:(r + 1) * per])
        assert np.array_equal(g("transformer.ln_f.weight"), w("model.norm.weight"))
        for i in range(lay.L):
            s = lambda m: w(f"model.layers.{i}.{m}.weight")
            o = lambda m: g(f"transformer.layers.{i}.{m}.weight")
            want = np.concatenate([s("self_attn.q_proj")[lay.q(r)], s("self_attn.k_proj")[lay.kv(r)],
                                   s("self_attn.v_proj")[lay.kv(r)]])
            assert np.array_equal(o("attention.qkv"), want), (r, i)
            a = lay.nh * lay.d // t
            assert np.array_equal(o("attention.dense"), s("self_attn.o_proj")[:, r * a:(r + 1) * a])
            m = lay.I // t
            assert np.array_equal(o("mlp.fc"), s("mlp.gate_proj")[r * m:(r + 1) * m])
            assert np.array_equal(o("mlp.gate"), s("mlp.up_proj")[r * m:(r + 1) * m])
            assert np.array_equal(o("mlp.proj"), s("mlp.down_proj")[:, r * m:(r + 1) * m])
            assert np.array_equal(o("input_layernorm"), s("input_layernorm"))
            assert np.array_equal(o("post_layernorm"), s("post_attention_layernorm"))
        assert len(rk) == 3 + 7 * lay.L, "no tensor beyond the documented ones"
    props = (out / "serving.properties").read_text()
    assert "option.rolling_batch=trtllm" in props and f"option.tensor_parallel_degree={t}" in props


def test_dense_smollm2_three_ranks(tmp_path):
    model = source_model()
    out = tmp_path / "trt"
    s = run(model, out, "ml.g6.12xlarge", "--compile")
    assert s["tensor_parallel_degree"] == 3
    assert "tensorrtllm" in s["recommended_image"]
    check_dense(out, model, 3)
    build = json.loads((out / "trtllm-build.json").read_text())
    assert build["max_seq_len"] == 1536 and "--max_seq_len" in build["command"]


def write_safetensors(path: Path, tensors: dict) -> None:
    header, pos = {}, 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + len(data)]}
        pos += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(d for _, _, d in tensors.values()))


def test_replicated_kv_heads_and_vocab_padding(tmp_path):
    """A random f16 Llama with 2 kv heads over 4 ranks and a vocabulary of 1001, untied."""
    model = tmp_path / "tiny"
    model.mkdir()
    H, nh, nkv, I, V, L = 128, 8, 2, 256, 1001, 2
    rng = np.random.default_rng(1)
    t = {}
    def add(name, shape):
        t[name] = ("F16", shape, rng.standard_normal(shape).astype("<f2").tobytes())
    add("model.embed_tokens.weight", (V, H))
    add("lm_head.weight", (V, H))
    add("model.norm.weight", (H,))
    for i in range(L):
        p = f"model.layers.{i}."
        add(p + "self_attn.q_proj.weight", (H, H))
        add(p + "self_attn.k_proj.weight", (nkv * H // nh, H))
        add(p + "self_attn.v_proj.weight", (nkv * H // nh, H))
        add(p + "self_attn.o_proj.weight", (H, H))
        add(p + "mlp.gate_proj.weight", (I, H))
        add(p + "mlp.up_proj.weight", (I, H))
        add(p + "mlp.down_proj.weight", (H, I))
        add(p + "input_layernorm.weight", (H,))
        add(p + "post_attention_layernorm.weight", (H,))
    write_safetensors(model / "model.safetensors", t)
    (model / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H,
        "intermediate_size": I, "num_hidden_layers": L, "num_attention_heads": nh,
        "num_key_value_heads": nkv, "vocab_size": V, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": False,
        "torch_dtype": "float16"}))
    out = tmp_path / "trt"
    run(model, out, "ml.g6.12xlarge", "--compile", "--tensor-parallel", "4")
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"
    check_dense(out, model, 4)


def fp8_case(tmp_path, scheme: str, algo: str):
    """The compiled FP8 checkpoint against the unsharded compressed-tensors artifact the same
    binary writes (the quantizer's own tests check that one against the source)."""
    model = source_model()
    ref, out = tmp_path / "ref", tmp_path / "trt"
    run(model, ref, "ml.g6.12xlarge", "--quantize", "fp8", "--scheme", scheme, "--env", "OPTION_EVAL=false")
    run(model, out, "ml.g6.12xlarge", "--quantize", "fp8", "--scheme", scheme, "--compile",
        "--env", "OPTION_EVAL=false")
    hf = json.loads((model / "config.json").read_text())
    t = 3
    check_config(json.loads((out / "config.json").read_text()), hf, t, algo)
    a = read_dir(ref)
    src = read_dir(model)
    lay = Layout(hf, t)
    ranks = [read_safetensors(out / f"rank{r}.safetensors") for r in range(t)]
    codes = lambda n: a[n + ".weight"][2]
    scale = lambda n: to_f32(*a[n + ".weight_scale"][::2]).reshape(-1)
    for r, rk in enumerate(ranks):
        for i in range(lay.L):
            p = f"model.layers.{i}."
            g = lambda m, suf: rk[f"transformer.layers.{i}.{m}.{suf}"]
            m = lay.I // t
            at = lay.nh * lay.d // t
            for trt, hfm, rows, cols in [("mlp.fc", "mlp.gate_proj", slice(r * m, (r + 1) * m), slice(None)),
                                         ("mlp.gate", "mlp.up_proj", slice(r * m, (r + 1) * m), slice(None)),
                                         ("mlp.proj", "mlp.down_proj", slice(None), slice(r * m, (r + 1) * m)),
                                         ("attention.dense", "self_attn.o_proj", slice(None), slice(r * at, (r + 1) * at))]:
                dt, _, w = g(trt, "weight")
                assert dt == "F8_E4M3"
                assert np.array_equal(w, codes(p + hfm)[rows, cols]), (r, i, trt)
                if algo == "FP8":
                    assert g(trt, "weights_scaling_factor")[2].tolist() == scale(p + hfm).tolist()
                    assert g(trt, "activation_scaling_factor")[2].tolist() == \
                        to_f32(*a[p + hfm + ".input_scale"][::2]).reshape(-1).tolist()
                else:
                    assert np.array_equal(g(trt, "per_channel_scale")[2], scale(p + hfm)[rows])
            parts = [(p + "self_attn.q_proj", lay.q(r)), (p + "self_attn.k_proj", lay.kv(r)),
                     (p + "self_attn.v_proj", lay.kv(r))]
            qkv = g("attention.qkv", "weight")[2]
            if algo == "FP8":
                top = max(scale(n)[0] for n, _ in parts)
                want = np.concatenate([codes(n)[rows] if scale(n)[0] == top
                                       else fp8_round(FP8[codes(n)[rows]] * scale(n)[0] / top)
                                       for n, rows in parts])
                assert g("attention.qkv", "weights_scaling_factor")[2].tolist() == [top]
                acts = [to_f32(*a[n + ".input_scale"][::2])[0] for n, _ in parts]
                assert g("attention.qkv", "activation_scaling_factor")[2].tolist() == [max(acts)]
                deq = FP8[qkv].astype(np.float64) * top
            else:
                want = np.concatenate([codes(n)[rows] for n, rows in parts])
                ch = np.concatenate([scale(n)[rows] for n, rows in parts])
                assert np.array_equal(g("attention.qkv", "per_channel_scale")[2], ch)
                deq = FP8[qkv].astype(np.float64) * ch[:, None]
            # The re-rounded codes equal numpy's round-half-even exactly.
            differ = np.count_nonzero(qkv != want)
            assert differ == 0, f"rank {r} layer {i}: {differ} qkv codes differ"
            # And the fused weights still are the source's, within FP8's error.
            srcw = np.concatenate([to_f32(src[n + ".weight"][0], src[n + ".weight"][2])[rows]
                                   for n, rows in parts]).astype(np.float64)
            rel = np.linalg.norm(deq - srcw) / np.linalg.norm(srcw)
            assert rel < 0.06, (r, i, rel)


def test_fp8_static_per_tensor_scales(tmp_path):
    fp8_case(tmp_path, "FP8", "FP8")


def test_fp8_dynamic_per_channel_scales(tmp_path):
    fp8_case(tmp_path, "FP8_DYNAMIC", "FP8_PER_CHANNEL_PER_TOKEN")
