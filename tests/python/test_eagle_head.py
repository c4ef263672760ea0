"""temper's EAGLE-3 draft tokens, checked against an independent numpy forward of the head.

The reference (eagle_head.py) is written from ../shared/design/EAGLE.md; nothing of temper
is imported. For each artifact name in TRACE_ARTIFACTS, temper leaves:

  $TEMPER_ARTIFACTS/<name>/                     the artifact: the target checkpoint
                                                (config.json, model.safetensors or an index
                                                with shards, holding model.embed_tokens.weight)
                                                and speculative/{config.json,model.safetensors}
  $TEMPER_ARTIFACTS/<name>.trace.safetensors    what temper computed on one prompt:
      tokens      I64 [n+1]   prompt tokens x_0..x_{n-1}, then the root token x_n
      aux         F32 [n, 3H] the fused target features g_t temper fed the head
      row_draft   I64 [n]     temper's argmax per real row, mapped to target ids
      chain       I64 [K]     temper's greedy chain d_1..d_K (target ids)
      row_logits  F32 [n, Vd] temper's draft-vocab logits per real row
      chain_logits F32 [K, Vd] optional: the logits that chose each chain token

The reference runs the head on temper's own `aux` and `tokens` (the target's features are
taken as given: this checks the head's forward and chain, not the target's aux layers).

Tolerance for the logits: max|numpy - temper| <= 1e-3 * max|numpy logit| + 1e-4.
The numpy side computes in float64, so the difference is temper's own f32 rounding plus
summation-order effects. One f32 dot product of length k (k <= 3H here) has a relative
error of order sqrt(k) * 6e-8 in practice; the head chains about six such products
(fc, q/k/v, o, gate/up, down, lm_head) with RMSNorms and a softmax between them, which
puts plain f32 at ~1e-5 of the logit scale (the self-test below measures f32 against f64
and requires it to stay under a tenth of the tolerance). A convention error (hidden before
embedding in the concat, interleaved instead of rotate-half RoPE, a missing norm, the normed
output carried forward, fc row order) moves logits by a sizeable fraction of their scale,
and the tampering tests show such a change fails this tolerance. The 1e-4 absolute term
covers heads whose logits are all near zero.

Argmax comparisons exempt near ties: a row or chain step whose numpy top-2 margin is below
TIE_MARGIN may legitimately resolve the other way in f32; exemptions are counted and shown.

Skips only when TEMPER_ARTIFACTS is unset (the self-tests still run); with it set, a
missing trace or artifact FAILS.

Run: python3 -m pytest -q tests/python/test_eagle_head.py
     TEMPER_ARTIFACTS=<dir> python3 -m pytest -q -s tests/python/test_eagle_head.py
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))

import eagle_head as eh  # noqa: E402

TRACE_ARTIFACTS = ("eagle-tiny",)
REL_TOL = 1e-3
ABS_TOL = 1e-4
TIE_MARGIN = 1e-4
TRACE_KEYS = {"tokens": "I64", "aux": "F32", "row_draft": "I64", "chain": "I64", "row_logits": "F32"}
OPTIONAL_TRACE_KEYS = {"chain_logits": "F32"}


def logit_tolerance(reference: np.ndarray) -> float:
    return REL_TOL * float(np.max(np.abs(reference), initial=0.0)) + ABS_TOL


# ---------------------------------------------------------------------------------------
# the trace and its comparison with the reference

@dataclass
class Trace:
    tokens: np.ndarray
    aux: np.ndarray
    row_draft: np.ndarray
    chain: np.ndarray
    row_logits: np.ndarray
    chain_logits: np.ndarray | None = None


def read_trace(path: Path) -> Trace:
    infos = eh.read_header(path)
    missing = sorted(set(TRACE_KEYS) - set(infos))
    assert not missing, f"{path}: trace lacks {missing} (has {sorted(infos)})"
    for name, dtype in {**TRACE_KEYS, **OPTIONAL_TRACE_KEYS}.items():
        if name in infos:
            assert infos[name].dtype == dtype, f"{path}: {name} is {infos[name].dtype}, expected {dtype}"
    t = {name: infos[name].load() for name in {**TRACE_KEYS, **OPTIONAL_TRACE_KEYS} if name in infos}
    trace = Trace(**t)
    n = trace.aux.shape[0] if trace.aux.ndim == 2 else -1
    assert trace.aux.ndim == 2 and n >= 1, f"aux has shape {list(trace.aux.shape)}, expected [n>=1, 3H]"
    assert trace.tokens.shape == (n + 1,), f"tokens has shape {list(trace.tokens.shape)}, expected [{n + 1}]"
    assert trace.row_draft.shape == (n,), f"row_draft has shape {list(trace.row_draft.shape)}, expected [{n}]"
    assert trace.row_logits.ndim == 2 and trace.row_logits.shape[0] == n, \
        f"row_logits has shape {list(trace.row_logits.shape)}, expected [{n}, Vd]"
    assert trace.chain.ndim == 1 and len(trace.chain) >= 1, f"chain has shape {list(trace.chain.shape)}"
    if trace.chain_logits is not None:
        assert trace.chain_logits.shape == (len(trace.chain), trace.row_logits.shape[1]), \
            f"chain_logits has shape {list(trace.chain_logits.shape)}"
    return trace


@dataclass
class Comparison:
    problems: list[str] = field(default_factory=list)
    facts: dict = field(default_factory=dict)

    def summary(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.facts.items())


def compare_trace(head: eh.Eagle3Head, trace: Trace) -> Comparison:
    """Every disagreement between temper's trace and the reference head (float64)."""
    c = Comparison()
    cfg = head.cfg
    n, k = trace.aux.shape[0], len(trace.chain)
    c.facts.update(n=n, K=k)
    if trace.aux.shape[1] != 3 * cfg.target_hidden:
        c.problems.append(f"aux is [{n}, {trace.aux.shape[1]}], expected 3H = {3 * cfg.target_hidden} columns")
        return c
    if trace.row_logits.shape[1] != cfg.draft_vocab:
        c.problems.append(f"row_logits has {trace.row_logits.shape[1]} columns, draft vocab is {cfg.draft_vocab}")
        return c
    if not np.all(np.isfinite(trace.row_logits)):
        c.problems.append("temper's row_logits are not all finite")
        return c

    # (a) row logits
    _, logits, _ = head.rows(trace.aux, trace.tokens)
    diff = float(np.max(np.abs(logits - trace.row_logits)))
    tol = logit_tolerance(logits)
    c.facts.update(max_abs_logit=f"{float(np.max(np.abs(logits))):.4g}", max_diff=f"{diff:.3g}", tol=f"{tol:.3g}")
    if diff > tol:
        t, v = np.unravel_index(np.argmax(np.abs(logits - trace.row_logits)), logits.shape)
        c.problems.append(f"row logits differ by {diff:.4g} > {tol:.4g} (worst at row {t}, draft id {v}: "
                          f"numpy {logits[t, v]:.6g}, temper {trace.row_logits[t, v]:.6g})")

    # temper's row_draft must be the (mapped) argmax of its own row_logits, exactly
    own = head.to_draft(trace.row_draft)
    bad = [t for t in range(n) if own[t] < 0 or trace.row_logits[t, own[t]] != trace.row_logits[t].max()]
    if bad:
        c.problems.append(f"row_draft is not the d2t-mapped argmax of temper's own row_logits at rows {bad[:10]}")

    # (b) per-row argmax
    margins = eh.top2_margin(logits)
    ours = head.to_target(np.argmax(logits, axis=-1))
    exempt = [t for t in range(n) if margins[t] < TIE_MARGIN]
    wrong = [t for t in range(n) if ours[t] != trace.row_draft[t] and margins[t] >= TIE_MARGIN]
    c.facts.update(rows_near_tie=len(exempt),
                   rows_near_tie_disagreeing=int(sum(ours[t] != trace.row_draft[t] for t in exempt)))
    if wrong:
        c.problems.append(f"row argmax differs at {len(wrong)} rows, e.g. " + "; ".join(
            f"row {t}: numpy {ours[t]} (margin {margins[t]:.3g}), temper {trace.row_draft[t]}" for t in wrong[:5]))

    # (c) chain. d_1 is the argmax of the last real row.
    if trace.chain[0] != trace.row_draft[-1]:
        c.problems.append(f"chain[0] = {trace.chain[0]} is not row_draft[-1] = {trace.row_draft[-1]}")
    for j, tok in enumerate(trace.chain):
        if head.to_draft([tok])[0] < 0:
            c.problems.append(f"chain token d_{j + 1} = {tok} is outside the draft vocabulary")
            return c
    # Free-running numpy chain: identical up to the first near-tie step, where the two
    # may part legitimately; nothing after it is compared.
    free = head.chain(trace.aux, trace.tokens, k)
    stop = next((j for j in range(k) if free.margins[j] < TIE_MARGIN), k)
    c.facts.update(chain_compared_steps=stop, chain_first_near_tie=(stop + 1 if stop < k else None))
    diverge = next((j for j in range(stop) if free.tokens[j] != trace.chain[j]), None)
    if diverge is not None:
        c.problems.append(f"chain differs at d_{diverge + 1}: numpy {free.tokens.tolist()}, temper "
                          f"{trace.chain.tolist()} (numpy margin there {free.margins[diverge]:.3g})")
    # Teacher-forced: each step scored in temper's own context (fed temper's d_{j-1}),
    # so every step is checked, even after a near tie.
    forced = head.chain(trace.aux, trace.tokens, k, forced=trace.chain[:-1])
    wrong = [j for j in range(k) if forced.tokens[j] != trace.chain[j] and forced.margins[j] >= TIE_MARGIN]
    c.facts.update(chain_near_tie_forced=int(np.sum(forced.margins < TIE_MARGIN)))
    if wrong:
        c.problems.append("fed temper's own chain, numpy picks otherwise at " + "; ".join(
            f"d_{j + 1}: numpy {forced.tokens[j]} (margin {forced.margins[j]:.3g}), temper {trace.chain[j]}"
            for j in wrong[:5]))
    if trace.chain_logits is not None:
        cdiff = float(np.max(np.abs(forced.logits - trace.chain_logits)))
        ctol = logit_tolerance(forced.logits)
        c.facts.update(chain_max_diff=f"{cdiff:.3g}")
        if not cdiff <= ctol:
            c.problems.append(f"chain logits differ by {cdiff:.4g} > {ctol:.4g}")
    return c


# ---------------------------------------------------------------------------------------
# temper's traces

def _trace_paths(name: str) -> tuple[Path, Path]:
    root = os.environ.get("TEMPER_ARTIFACTS")
    if not root:
        pytest.skip(f"TEMPER_ARTIFACTS is not set: no temper trace to check ({name}.trace.safetensors); "
                    "the reference's self-tests ran")
    artifact, trace = Path(root) / name, Path(root) / f"{name}.trace.safetensors"
    if not trace.is_file():
        pytest.fail(f"{trace} does not exist: temper writes it next to the {name} artifact", pytrace=False)
    for need in ("speculative/config.json", "speculative/model.safetensors"):
        if not (artifact / need).is_file():
            pytest.fail(f"{artifact / need} does not exist", pytrace=False)
    return artifact, trace


@functools.lru_cache(maxsize=None)
def _load(artifact: str, trace: str) -> tuple[eh.Eagle3Head, Trace]:
    return eh.Eagle3Head.load(Path(artifact)), read_trace(Path(trace))


@pytest.mark.parametrize("name", TRACE_ARTIFACTS)
def test_head_layout(name):
    artifact, _ = _trace_paths(name)
    spec = artifact / "speculative"
    config = json.loads((spec / "config.json").read_text())
    tensors = eh.load_safetensors(spec / "model.safetensors")
    problems = eh.layout_problems(config, tensors)
    assert not problems, f"{spec}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("name", TRACE_ARTIFACTS)
def test_trace_matches_reference(name):
    artifact, trace_path = _trace_paths(name)
    head, trace = _load(str(artifact), str(trace_path))
    c = compare_trace(head, trace)
    print(f"\n{name}: {c.summary()}")
    assert not c.problems, f"{name}: {c.summary()}\n  " + "\n  ".join(c.problems)


@pytest.mark.parametrize("name", TRACE_ARTIFACTS)
def test_trace_tampering_is_detected(name):
    """The comparison can fail: small changes to the head, made in memory, break it."""
    artifact, trace_path = _trace_paths(name)
    head, trace = _load(str(artifact), str(trace_path))
    for label, tampered in _tamperings(head).items():
        c = compare_trace(tampered, trace)
        assert any("row logits differ" in p for p in c.problems), \
            f"{name}: {label} went unnoticed ({c.summary()})"


def _tamperings(head: eh.Eagle3Head) -> dict[str, eh.Eagle3Head]:
    t, H = head.tensors, head.cfg.hidden
    fc = t["fc.weight"].copy()
    fc[0] = -fc[0]
    # "hidden first" instead of "embedding first": swap the two norms and the two column
    # halves of q/k/v, which is exactly evaluating x = [b ; a].
    swapped = {f"midlayer.self_attn.{p}_proj.weight": np.concatenate(
        [t[f"midlayer.self_attn.{p}_proj.weight"][:, H:], t[f"midlayer.self_attn.{p}_proj.weight"][:, :H]], axis=1)
        for p in "qkv"}
    swapped["midlayer.input_layernorm.weight"] = t["midlayer.hidden_norm.weight"]
    swapped["midlayer.hidden_norm.weight"] = t["midlayer.input_layernorm.weight"]
    return {
        "fc.weight row 0 sign flipped": head.with_tensors({"fc.weight": fc}),
        "hidden-first concatenation": head.with_tensors(swapped),
    }


# ---------------------------------------------------------------------------------------
# self-tests of the reference (no temper)

def write_safetensors(path: Path, tensors: dict[str, tuple[str, tuple, bytes]]) -> None:
    """A minimal writer (safetensors.numpy cannot write BF16)."""
    header, pos = {}, 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + len(data)]}
        pos += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        for _, _, data in tensors.values():
            f.write(data)


def to_bf16_words(x: np.ndarray) -> np.ndarray:
    """Truncate float32 to bf16 (round toward zero; exactness of the round trip is all
    that matters here)."""
    return (np.ascontiguousarray(x, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)


def make_tiny_artifact(directory: Path, seed: int = 0, hidden: int = 16, heads: int = 2, kv: int = 1,
                       head_dim: int = 8, inter: int = 32, vd: int = 7, vocab: int = 11,
                       embed: str = "BF16", sharded: bool = False, theta: float = 10000.0) -> Path:
    """A random head laid out as EAGLE.md 3.6 says, with a target checkpoint holding only
    the embedding."""
    rng = np.random.default_rng(seed)
    H = hidden

    def lin(rows, cols):
        return (rng.standard_normal((rows, cols)) / math.sqrt(cols)).astype(np.float32)

    def norm():
        return (1.0 + 0.2 * rng.standard_normal(H)).astype(np.float32)

    used = np.sort(rng.choice(vocab, size=vd, replace=False)).astype(np.int64)
    t2d = np.zeros(vocab, dtype=bool)
    t2d[used] = True
    tensors = {
        "fc.weight": lin(H, 3 * H),
        "midlayer.input_layernorm.weight": norm(),
        "midlayer.hidden_norm.weight": norm(),
        "midlayer.post_attention_layernorm.weight": norm(),
        "midlayer.self_attn.q_proj.weight": 2.0 * lin(heads * head_dim, 2 * H),
        "midlayer.self_attn.k_proj.weight": 2.0 * lin(kv * head_dim, 2 * H),
        "midlayer.self_attn.v_proj.weight": lin(kv * head_dim, 2 * H),
        "midlayer.self_attn.o_proj.weight": lin(H, heads * head_dim),
        "midlayer.mlp.gate_proj.weight": lin(inter, H),
        "midlayer.mlp.up_proj.weight": lin(inter, H),
        "midlayer.mlp.down_proj.weight": lin(H, inter),
        "norm.weight": norm(),
        "lm_head.weight": 3.0 * lin(vd, H),
        "d2t": used - np.arange(vd, dtype=np.int64),
        "t2d": t2d,
    }
    config = {
        "architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama", "num_hidden_layers": 1,
        "hidden_size": H, "intermediate_size": inter, "num_attention_heads": heads,
        "num_key_value_heads": kv, "head_dim": head_dim, "rms_norm_eps": 1e-5, "rope_theta": theta,
        "rope_scaling": None, "max_position_embeddings": 256, "vocab_size": vocab,
        "draft_vocab_size": vd, "tie_word_embeddings": False,
        "eagle_config": {"eagle_aux_hidden_state_layer_ids": [1, 2, 3], "use_aux_hidden_state": True},
    }
    spec = directory / "speculative"
    spec.mkdir(parents=True)
    (spec / "config.json").write_text(json.dumps(config, indent=1))
    save_file(tensors, str(spec / "model.safetensors"))

    emb = rng.standard_normal((vocab, H)).astype(np.float32)
    if embed == "BF16":
        emb_entry = ("BF16", emb.shape, to_bf16_words(emb).tobytes())
        expected = (emb.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
    elif embed == "F16":
        emb_entry = ("F16", emb.shape, emb.astype(np.float16).tobytes())
        expected = emb.astype(np.float16).astype(np.float32)
    else:
        emb_entry = ("F32", emb.shape, emb.tobytes())
        expected = emb
    np.save(directory / "embed_expected.npy", expected)  # what a correct reader returns
    other = ("F32", (H,), np.ones(H, np.float32).tobytes())
    if sharded:
        write_safetensors(directory / "model-00001-of-00002.safetensors", {"model.norm.weight": other})
        write_safetensors(directory / "model-00002-of-00002.safetensors", {eh.EMBED_KEY: emb_entry})
        (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": {
            "model.norm.weight": "model-00001-of-00002.safetensors",
            eh.EMBED_KEY: "model-00002-of-00002.safetensors"}}))
    else:
        write_safetensors(directory / "model.safetensors", {eh.EMBED_KEY: emb_entry, "model.norm.weight": other})
    return directory


def tiny_inputs(head: eh.Eagle3Head, n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n, 3 * head.cfg.target_hidden)).astype(np.float32)
    tokens = rng.integers(0, head.cfg.vocab, size=n + 1).astype(np.int64)
    return g, tokens


@pytest.fixture
def tiny(tmp_path) -> eh.Eagle3Head:
    return eh.Eagle3Head.load(make_tiny_artifact(tmp_path / "tiny"))


def test_reader_against_library_and_known_bf16_bits(tmp_path):
    rng = np.random.default_rng(3)
    ref = {"f32": rng.standard_normal((3, 5)).astype(np.float32), "i64": np.arange(-3, 4, dtype=np.int64),
           "bool": np.array([True, False, True]), "f16": rng.standard_normal(6).astype(np.float16)}
    save_file(ref, str(tmp_path / "a.safetensors"), metadata={"format": "np"})
    got = eh.load_safetensors(tmp_path / "a.safetensors")
    assert set(got) == set(ref)
    for k in ("f32", "i64", "bool"):
        assert got[k].dtype == ref[k].dtype and np.array_equal(got[k], ref[k]), k
    assert got["f16"].dtype == np.float32 and np.array_equal(got["f16"], ref["f16"].astype(np.float32))
    # bf16 bit patterns with known values: 0x3F80 = 1.0, 0xC020 = -2.5, 0x4049 = 3.140625, 0x0000 = 0
    words = np.array([0x3F80, 0xC020, 0x4049, 0x0000], dtype="<u2")
    write_safetensors(tmp_path / "b.safetensors", {"x": ("BF16", (2, 2), words.tobytes())})
    x = eh.load_safetensors(tmp_path / "b.safetensors")["x"]
    assert x.dtype == np.float32 and x.tolist() == [[1.0, -2.5], [3.140625, 0.0]]
    # a header whose offsets disagree with the shape is refused
    write_safetensors(tmp_path / "c.safetensors", {"x": ("F32", (2, 2), b"\0" * 12)})
    with pytest.raises(ValueError):
        eh.read_header(tmp_path / "c.safetensors")


@pytest.mark.parametrize("embed,sharded", [("BF16", False), ("F16", True), ("F32", False)])
def test_embedding_rows(tmp_path, embed, sharded):
    d = make_tiny_artifact(tmp_path / "t", seed=5, embed=embed, sharded=sharded)
    table = eh.EmbeddingTable.from_checkpoint(d)
    expected = np.load(d / "embed_expected.npy")  # widened by numpy casts, not by the reader
    full = eh.checkpoint_index(d)[eh.EMBED_KEY].load()
    assert full.dtype == np.float32 and np.array_equal(full, expected)
    ids = [3, 0, 10, 3]
    assert np.array_equal(table.rows(ids), expected[ids])
    with pytest.raises(IndexError):
        table.rows([11])


def test_rms_norm_by_hand():
    # mean(x^2) = (9 + 16) / 2 = 12.5
    got = eh.rms_norm(np.array([3.0, 4.0]), np.array([1.0, 2.0]), 0.0)
    assert np.allclose(got, [3 / math.sqrt(12.5), 2 * 4 / math.sqrt(12.5)], rtol=1e-15)
    got = eh.rms_norm(np.array([0.0, 0.0]), np.array([1.0, 1.0]), 1e-5)
    assert np.array_equal(got, [0.0, 0.0])


def test_rope_is_rotate_half_by_hand():
    # hd = 4, theta = 100: inv_freq = [1, 100^(-1/2)] = [1, 0.1]. Dimension 0 pairs with 2,
    # dimension 1 with 3 (not 0 with 1, as the interleaved GPT-J layout would).
    cos, sin = eh.rope_cos_sin([3], 4, 100.0, np.float64)
    e = np.eye(4)[:, None, :]  # four "heads", one row each, holding the unit vectors
    r = eh.apply_rope(e, cos, sin)[:, 0, :]
    assert np.allclose(r[0], [math.cos(3), 0, math.sin(3), 0])
    assert np.allclose(r[1], [0, math.cos(0.3), 0, math.sin(0.3)])
    assert np.allclose(r[2], [-math.sin(3), 0, math.cos(3), 0])
    assert np.allclose(r[3], [0, -math.sin(0.3), 0, math.cos(0.3)])
    # scores depend only on relative position
    rng = np.random.default_rng(0)
    q, k = rng.standard_normal((1, 1, 8)), rng.standard_normal((1, 1, 8))

    def score(p, s):
        cq, sq = eh.rope_cos_sin([p], 8, 10000.0, np.float64)
        ck, sk = eh.rope_cos_sin([s], 8, 10000.0, np.float64)
        return float(np.sum(eh.apply_rope(q, cq, sq) * eh.apply_rope(k, ck, sk)))

    assert math.isclose(score(5, 2), score(12, 9), rel_tol=1e-12)
    assert not math.isclose(score(5, 2), score(5, 3), rel_tol=1e-6)


def test_single_row_by_hand(tiny):
    """One row at position 0: RoPE is the identity and the softmax over one key is 1, so
    attention is o_proj applied to each query head's copy of its kv head's value."""
    g, tokens = tiny_inputs(tiny, 1)
    w, c = {k: v.astype(np.float64) for k, v in tiny.tensors.items()}, tiny.cfg
    h = w["fc.weight"] @ g[0].astype(np.float64)
    e = tiny.embedding.rows([tokens[1]])[0].astype(np.float64)

    def rms(x, wt):
        return x / math.sqrt(float(np.mean(x * x)) + c.eps) * wt

    x = np.concatenate([rms(e, w["midlayer.input_layernorm.weight"]), rms(h, w["midlayer.hidden_norm.weight"])])
    v = w["midlayer.self_attn.v_proj.weight"] @ x            # [kv * hd]
    group = c.heads // c.kv_heads
    per_head = [v[(j // group) * c.head_dim:(j // group + 1) * c.head_dim] for j in range(c.heads)]
    h1 = h + w["midlayer.self_attn.o_proj.weight"] @ np.concatenate(per_head)
    n = rms(h1, w["midlayer.post_attention_layernorm.weight"])
    gate, up = w["midlayer.mlp.gate_proj.weight"] @ n, w["midlayer.mlp.up_proj.weight"] @ n
    out = h1 + w["midlayer.mlp.down_proj.weight"] @ (gate / (1 + np.exp(-gate)) * up)
    logits = w["lm_head.weight"] @ rms(out, w["norm.weight"])

    got_out, got_logits, kv = tiny.rows(g, tokens)
    assert kv.length == 1
    assert np.allclose(got_out[0], out, rtol=1e-12, atol=1e-12)
    assert np.allclose(got_logits[0], logits, rtol=1e-12, atol=1e-12)
    # the root token's draft guess is the d2t-mapped argmax
    chain = tiny.chain(g, tokens, 1)
    assert chain.tokens[0] == int(np.argmax(logits)) + int(w["d2t"][int(np.argmax(logits))])


def _slow_rows(head: eh.Eagle3Head, g: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Loop-by-loop rows: explicit pairs (i, i + hd/2) for RoPE, explicit kv head j // group,
    explicit causal range. A second path to the same numbers for many rows."""
    c = head.cfg
    w = {k: v.astype(np.float64) for k, v in head.tensors.items()}
    n, hd, half = g.shape[0], c.head_dim, c.head_dim // 2
    h = g.astype(np.float64) @ w["fc.weight"].T
    e = head.embedding.rows(tokens[1:]).astype(np.float64)
    x = np.concatenate([eh.rms_norm(e, w["midlayer.input_layernorm.weight"], c.eps),
                        eh.rms_norm(h, w["midlayer.hidden_norm.weight"], c.eps)], axis=1)
    q = x @ w["midlayer.self_attn.q_proj.weight"].T
    k = x @ w["midlayer.self_attn.k_proj.weight"].T
    v = x @ w["midlayer.self_attn.v_proj.weight"].T

    def rot(vec, pos):
        out = vec.copy()
        for i in range(half):
            a = pos * c.rope_theta ** (-2.0 * i / hd)
            out[i] = vec[i] * math.cos(a) - vec[i + half] * math.sin(a)
            out[i + half] = vec[i + half] * math.cos(a) + vec[i] * math.sin(a)
        return out

    group = c.heads // c.kv_heads
    attn = np.zeros((n, c.heads * hd))
    for t in range(n):
        for j in range(c.heads):
            kvh = j // group
            qj = rot(q[t, j * hd:(j + 1) * hd], t)
            scores = np.array([rot(k[s, kvh * hd:(kvh + 1) * hd], s) @ qj / math.sqrt(hd) for s in range(t + 1)])
            p = np.exp(scores - scores.max())
            p /= p.sum()
            attn[t, j * hd:(j + 1) * hd] = sum(p[s] * v[s, kvh * hd:(kvh + 1) * hd] for s in range(t + 1))
    h1 = h + attn @ w["midlayer.self_attn.o_proj.weight"].T
    nn_ = eh.rms_norm(h1, w["midlayer.post_attention_layernorm.weight"], c.eps)
    gate = nn_ @ w["midlayer.mlp.gate_proj.weight"].T
    return h1 + (gate / (1 + np.exp(-gate)) * (nn_ @ w["midlayer.mlp.up_proj.weight"].T)) \
        @ w["midlayer.mlp.down_proj.weight"].T


@pytest.mark.parametrize("heads,kv", [(2, 1), (4, 2), (4, 4)])
def test_rows_match_loop_reference(tmp_path, heads, kv):
    head = eh.Eagle3Head.load(make_tiny_artifact(tmp_path / "t", seed=heads * 10 + kv, heads=heads, kv=kv,
                                                 theta=50.0))
    g, tokens = tiny_inputs(head, 6)
    out, _, _ = head.rows(g, tokens)
    assert np.allclose(out, _slow_rows(head, g, tokens), rtol=1e-11, atol=1e-11)


def test_rows_one_by_one_equal_rows_at_once(tiny):
    g, tokens = tiny_inputs(tiny, 9)
    out_a, logits_a, kv_a = tiny.rows(g, tokens)
    out_b, logits_b, kv_b = tiny.rows(g, tokens, one_by_one=True)
    assert np.allclose(out_a, out_b, rtol=1e-12, atol=1e-12)
    assert np.allclose(logits_a, logits_b, rtol=1e-12, atol=1e-12)
    assert np.allclose(kv_a.k, kv_b.k, rtol=1e-12, atol=1e-12) and np.allclose(kv_a.v, kv_b.v, rtol=1e-12, atol=1e-12)
    # and a row's output does not depend on later rows (causality)
    out_c, _, _ = tiny.rows(g[:4], tokens[:5])
    assert np.allclose(out_c, out_a[:4], rtol=1e-12, atol=1e-12)


def test_chain_equals_one_causal_block(tiny):
    """Chain step j >= 2 is a row with h = previous pre-norm output, e = E[d_{j-1}] at
    position n + j - 2: running the real rows and those chain rows as one causal block
    gives the same outputs as the step-by-step chain."""
    n, k = 5, 4
    g, tokens = tiny_inputs(tiny, n, seed=7)
    chain = tiny.chain(g, tokens, k)
    h = np.concatenate([tiny.fuse(g), chain.outs[:-1]])
    e = tiny.embed(np.concatenate([tokens[1:], chain.tokens[:-1]]))
    out, _ = tiny.midlayer(e, h, np.arange(n + k - 1), tiny.empty_kv())
    assert np.allclose(out[n - 1:], chain.outs, rtol=1e-11, atol=1e-11)
    assert np.allclose(tiny.logits(out[n - 1:]), chain.logits, rtol=1e-11, atol=1e-11)
    assert [int(tiny.to_target([np.argmax(r)])[0]) for r in chain.logits] == chain.tokens.tolist()
    # feeding the chain its own tokens changes nothing
    forced = tiny.chain(g, tokens, k, forced=chain.tokens[:-1])
    assert np.array_equal(forced.tokens, chain.tokens) and np.allclose(forced.logits, chain.logits)
    # the carried value is the pre-norm output: carrying the normed one would differ
    assert not np.allclose(chain.outs, eh.rms_norm(chain.outs, tiny.w["norm.weight"], tiny.cfg.eps))


def test_layout_problems(tiny):
    cfg, t = tiny.config, tiny.tensors
    assert eh.layout_problems(cfg, t) == []

    def problems(cfg_change=None, tensor_change=None, drop=()):
        c = {**cfg, **(cfg_change or {})}
        ts = {k: v for k, v in {**t, **(tensor_change or {})}.items() if k not in drop}
        return eh.layout_problems(c, ts)

    flipped = t["t2d"].copy()
    flipped[np.flatnonzero(~flipped)[0]] = True
    moved = t["t2d"].copy()
    on, off = np.flatnonzero(moved)[0], np.flatnonzero(~moved)[0]
    moved[on], moved[off] = False, True
    d2t_dup = t["d2t"].copy()
    d2t_dup[1] = d2t_dup[0] - 1   # draft id 1 -> same target as draft id 0
    cases = {
        "architectures": problems({"architectures": ["LlamaForCausalLM"]}),
        "layers": problems({"num_hidden_layers": 2}),
        "embed key": problems(tensor_change={"embed_tokens.weight": np.zeros((11, 16), np.float32)}),
        "unknown key": problems(tensor_change={"midlayer.self_attn.q_proj.bias": np.zeros(16, np.float32)}),
        "missing key": problems(drop=("midlayer.hidden_norm.weight",)),
        "shape": problems(tensor_change={"fc.weight": np.zeros((16, 32), np.float32)}),
        "draft vocab": problems({"draft_vocab_size": 6}),
        "t2d count": problems(tensor_change={"t2d": flipped}),
        "t2d set": problems(tensor_change={"t2d": moved}),
        "t2d length": problems(tensor_change={"t2d": np.concatenate([t["t2d"], [False]])}),
        "d2t duplicate": problems(tensor_change={"d2t": d2t_dup}),
        "d2t dtype": problems(tensor_change={"d2t": t["d2t"].astype(np.int32)}),
    }
    quiet = [k for k, v in cases.items() if not v]
    assert not quiet, f"layout_problems missed: {quiet}"


def test_config_rope_scaling():
    base = {"hidden_size": 16, "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 32,
            "rms_norm_eps": 1e-5, "draft_vocab_size": 7, "vocab_size": 11}
    assert eh.HeadConfig.from_dict(base).rope_theta == eh.DEFAULT_ROPE_THETA
    assert eh.HeadConfig.from_dict(base).head_dim == 8
    assert eh.HeadConfig.from_dict({**base, "rope_scaling": {"rope_type": "default"}}).head_dim == 8
    with pytest.raises(NotImplementedError):
        eh.HeadConfig.from_dict({**base, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})


def _fake_trace(path: Path, head32: eh.Eagle3Head, g: np.ndarray, tokens: np.ndarray, k: int) -> None:
    """What temper would write, made by the float32 reference (an honest f32 stand-in)."""
    _, logits, _ = head32.rows(g, tokens)
    chain = head32.chain(g, tokens, k)
    save_file({"tokens": tokens.astype(np.int64), "aux": g.astype(np.float32),
               "row_draft": head32.to_target(np.argmax(logits, axis=-1)).astype(np.int64),
               "chain": chain.tokens.astype(np.int64), "row_logits": logits.astype(np.float32),
               "chain_logits": chain.logits.astype(np.float32)}, str(path))


def test_compare_trace_accepts_f32_and_catches_tampering(tmp_path):
    head = eh.Eagle3Head.load(make_tiny_artifact(tmp_path / "t", seed=11, heads=4, kv=2))
    head32 = head.with_tensors({}, dtype=np.float32)
    g, tokens = tiny_inputs(head, 24, seed=12)
    _fake_trace(tmp_path / "t.trace.safetensors", head32, g, tokens, k=5)
    trace = read_trace(tmp_path / "t.trace.safetensors")

    c = compare_trace(head, trace)
    assert not c.problems, c.problems
    # plain f32 sits far inside the tolerance (its justification, measured)
    _, l64, _ = head.rows(g, tokens)
    spread = float(np.max(np.abs(l64 - trace.row_logits)))
    assert spread < 0.1 * logit_tolerance(l64), (spread, logit_tolerance(l64))

    for label, tampered in _tamperings(head).items():
        assert any("row logits differ" in p for p in compare_trace(tampered, trace).problems), label

    def broken(**change) -> list[str]:
        return compare_trace(head, Trace(**{**trace.__dict__, **change})).problems

    # a confident row answered differently (row_logits changed consistently with it)
    margins = eh.top2_margin(l64)
    t = int(np.argmax(margins))
    other = int(np.argsort(l64[t])[-2])
    rl = trace.row_logits.copy()
    rl[t, other] = rl[t].max() + 1.0
    rd = trace.row_draft.copy()
    rd[t] = head.to_target([other])[0]
    assert any("row logits differ" in p for p in broken(row_logits=rl, row_draft=rd))
    assert any("row argmax differs" in p for p in broken(row_logits=rl, row_draft=rd))
    # row_draft not the argmax of temper's own logits
    assert any("own row_logits" in p for p in broken(row_draft=rd))
    # a chain token replaced by another draft-vocab token
    for j in range(1, len(trace.chain)):
        ch = trace.chain.copy()
        alternatives = [x for x in head.to_target(np.arange(head.cfg.draft_vocab)) if x != ch[j]]
        ch[j] = alternatives[0]
        assert any("chain" in p for p in broken(chain=ch)), j
    # a chain token outside the draft vocabulary
    outside = int(np.flatnonzero(~head.t2d)[0])
    assert any("outside the draft vocabulary" in p for p in broken(chain=np.r_[trace.chain[:-1], outside]))
    # chain logits off
    assert any("chain logits" in p for p in broken(chain_logits=trace.chain_logits + 0.5))


def test_trace_paths_skip_or_fail(monkeypatch, tmp_path):
    monkeypatch.delenv("TEMPER_ARTIFACTS", raising=False)
    with pytest.raises(pytest.skip.Exception):
        _trace_paths("eagle-tiny")
    monkeypatch.setenv("TEMPER_ARTIFACTS", str(tmp_path))
    with pytest.raises(pytest.fail.Exception):
        _trace_paths("eagle-tiny")
