"""An independent numpy forward of an EAGLE-3 draft head (`LlamaForCausalLMEagle3`).

Written from ../shared/design/EAGLE.md (sections 3.2, 3.6 and 4), not from temper: nothing
of temper is imported, and safetensors files are read by a small reader written here from
the container spec (8-byte little-endian header length, JSON header, data buffer), because
the target's `model.embed_tokens.weight` may be BF16, which numpy cannot represent.

Layout of a saved head (vLLM/SGLang, EAGLE.md 3.6), in `<artifact>/speculative/`:
  config.json        architectures ["LlamaForCausalLMEagle3"], num_hidden_layers 1,
                     hidden_size H, num_attention_heads, num_key_value_heads, (head_dim),
                     rms_norm_eps, rope_theta, (rope_scaling), intermediate_size,
                     draft_vocab_size Vd, vocab_size V (the target's)
  model.safetensors  fc.weight [H, 3H]            (no bias)
                     midlayer.input_layernorm.weight, midlayer.hidden_norm.weight,
                     midlayer.post_attention_layernorm.weight            [H]
                     midlayer.self_attn.q_proj.weight [heads*hd, 2H]
                     midlayer.self_attn.{k,v}_proj.weight [kv*hd, 2H]
                     midlayer.self_attn.o_proj.weight [H, heads*hd]
                     midlayer.mlp.{gate,up}_proj.weight [I, H], down_proj [H, I]
                     norm.weight [H], lm_head.weight [Vd, H]
                     d2t I64 [Vd]  (offset: target id = i + d2t[i])
                     t2d BOOL [V]  (t2d[v] = v is in the draft vocabulary)
The head has no embedding: token embeddings are the target's `model.embed_tokens.weight`
from `<artifact>/model.safetensors` (or the shards named by model.safetensors.index.json).

Forward (EAGLE.md 3.2 and 4), for target features g (n x 3H, fused residual streams of
three target layers at positions 0..n-1) and tokens x_0..x_n (x_n = the root token):
  row t:   h = g_t @ fc^T, e = E[x_{t+1}], RoPE position t, causal over rows 0..t;
           its argmax is the draft's guess of x_{t+2}.
  chain:   d_1 = argmax of row n-1; step j >= 2 feeds (out of step j-1, E[d_{j-1}]) at
           position n+j-2, skipping fc, attending to all real rows and earlier chain steps.

The compute dtype is a parameter: float64 gives a reference whose own rounding error is
negligible next to an f32 implementation's; float32 shows how far plain f32 arithmetic
strays, which is what the tolerance of the comparison must absorb.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ARCHITECTURE = "LlamaForCausalLMEagle3"
EMBED_KEY = "model.embed_tokens.weight"
# EAGLE.md 3.2: the official code uses 10000 when the draft config has no rope_theta.
DEFAULT_ROPE_THETA = 10000.0


# ---------------------------------------------------------------------------------------
# safetensors, from the container spec

_NUMPY_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1",
    "BOOL": "?",
    "BF16": "<u2",  # read as raw 16-bit words, widened by _widen
}


@dataclass
class TensorInfo:
    path: Path
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute file offset of the first byte

    def memmap(self) -> np.ndarray:
        """The stored values (BF16 as raw uint16 words), memory-mapped, not widened."""
        count = math.prod(self.shape)
        if count == 0:
            return np.zeros(self.shape, dtype=_NUMPY_DTYPES[self.dtype])
        return np.memmap(self.path, dtype=_NUMPY_DTYPES[self.dtype], mode="r",
                         offset=self.start, shape=self.shape)

    def load(self) -> np.ndarray:
        """The tensor as a numpy array; floating point types widened to float32."""
        return _widen(self.dtype, np.array(self.memmap()))


def _widen(dtype: str, raw: np.ndarray) -> np.ndarray:
    if dtype == "BF16":
        # bf16 is the top half of an f32: shift the 16-bit word up and reinterpret (exact).
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if dtype == "F16":
        return raw.astype(np.float32)  # exact
    return raw


def read_header(path: Path) -> dict[str, TensorInfo]:
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise ValueError(f"{path}: too short for a safetensors header")
        n = int.from_bytes(prefix, "little")
        if n > size - 8:
            raise ValueError(f"{path}: header length {n} exceeds the file ({size} bytes)")
        header = json.loads(f.read(n).decode("utf-8"))
    header.pop("__metadata__", None)
    base = 8 + n
    infos = {}
    for name, meta in header.items():
        dtype, shape = meta["dtype"], tuple(int(d) for d in meta["shape"])
        if dtype not in _NUMPY_DTYPES:
            raise ValueError(f"{path}: {name} has unsupported dtype {dtype}")
        begin, end = meta["data_offsets"]
        expected = math.prod(shape) * np.dtype(_NUMPY_DTYPES[dtype]).itemsize
        if end - begin != expected or base + end > size:
            raise ValueError(f"{path}: {name} ({dtype} {list(shape)}) has data_offsets "
                             f"{[begin, end]}, expected {expected} bytes within the file")
        infos[name] = TensorInfo(path, dtype, shape, base + begin)
    return infos


def load_safetensors(path: Path) -> dict[str, np.ndarray]:
    return {name: info.load() for name, info in read_header(path).items()}


def checkpoint_index(directory: Path) -> dict[str, TensorInfo]:
    """Every tensor of a Hugging Face checkpoint directory: model.safetensors, or the
    shards listed by model.safetensors.index.json."""
    directory = Path(directory)
    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    if single.exists():
        return read_header(single)
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        infos: dict[str, TensorInfo] = {}
        for shard in sorted(set(weight_map.values())):
            infos.update(read_header(directory / shard))
        missing = sorted(set(weight_map) - set(infos))
        if missing:
            raise ValueError(f"{index}: tensors not in their shards: {missing[:5]}")
        return infos
    raise FileNotFoundError(f"{directory} has neither model.safetensors nor "
                            "model.safetensors.index.json")


class EmbeddingTable:
    """The target's token embedding, read row by row on demand (memory-mapped)."""

    def __init__(self, info: TensorInfo):
        if len(info.shape) != 2:
            raise ValueError(f"{EMBED_KEY} has shape {list(info.shape)}, expected [V, H]")
        if info.dtype not in ("F32", "F16", "BF16"):
            raise ValueError(f"{EMBED_KEY} has dtype {info.dtype}; expected F32, F16 or BF16")
        self.info = info
        self.vocab, self.hidden = info.shape
        self._raw = info.memmap()

    @classmethod
    def from_checkpoint(cls, directory: Path) -> "EmbeddingTable":
        infos = checkpoint_index(directory)
        if EMBED_KEY not in infos:
            raise KeyError(f"{directory}: no {EMBED_KEY} in the target checkpoint")
        return cls(infos[EMBED_KEY])

    def rows(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab):
            raise IndexError(f"token ids {ids.tolist()} outside the vocabulary of {self.vocab}")
        return _widen(self.info.dtype, np.array(self._raw[ids]))


# ---------------------------------------------------------------------------------------
# configuration

@dataclass(frozen=True)
class HeadConfig:
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    eps: float
    rope_theta: float
    draft_vocab: int
    vocab: int
    target_hidden: int
    raw: dict = field(compare=False, repr=False)

    @classmethod
    def from_dict(cls, cfg: dict) -> "HeadConfig":
        hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
        head_dim = cfg.get("head_dim")
        if head_dim is None:
            if hidden % heads:
                raise ValueError(f"hidden_size {hidden} is not a multiple of {heads} heads")
            head_dim = hidden // heads
        kv = int(cfg.get("num_key_value_heads") or heads)
        if heads % kv:
            raise ValueError(f"{heads} attention heads do not group over {kv} kv heads")
        if int(head_dim) % 2:
            raise ValueError(f"head_dim {head_dim} is odd; rotate-half RoPE needs it even")
        scaling = cfg.get("rope_scaling")
        if scaling is not None:
            kind = scaling.get("rope_type", scaling.get("type"))
            if kind != "default":
                raise NotImplementedError(f"rope_scaling {scaling!r}: only null/default is "
                                          "implemented by this reference")
        theta = cfg.get("rope_theta")
        return cls(
            hidden=hidden, heads=heads, kv_heads=kv, head_dim=int(head_dim),
            intermediate=int(cfg["intermediate_size"]), eps=float(cfg["rms_norm_eps"]),
            rope_theta=float(DEFAULT_ROPE_THETA if theta is None else theta),
            draft_vocab=int(cfg["draft_vocab_size"]), vocab=int(cfg["vocab_size"]),
            target_hidden=int(cfg.get("target_hidden_size") or hidden), raw=cfg)

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor of the head and its shape (EAGLE.md 3.6); nothing else belongs."""
        H, I, hd = self.hidden, self.intermediate, self.head_dim
        return {
            "fc.weight": (H, 3 * self.target_hidden),
            "midlayer.input_layernorm.weight": (H,),
            "midlayer.hidden_norm.weight": (H,),
            "midlayer.post_attention_layernorm.weight": (H,),
            "midlayer.self_attn.q_proj.weight": (self.heads * hd, 2 * H),
            "midlayer.self_attn.k_proj.weight": (self.kv_heads * hd, 2 * H),
            "midlayer.self_attn.v_proj.weight": (self.kv_heads * hd, 2 * H),
            "midlayer.self_attn.o_proj.weight": (H, self.heads * hd),
            "midlayer.mlp.gate_proj.weight": (I, H),
            "midlayer.mlp.up_proj.weight": (I, H),
            "midlayer.mlp.down_proj.weight": (H, I),
            "norm.weight": (H,),
            "lm_head.weight": (self.draft_vocab, H),
            "d2t": (self.draft_vocab,),
            "t2d": (self.vocab,),
        }


def layout_problems(cfg: dict, tensors: dict[str, np.ndarray]) -> list[str]:
    """Everything about a saved head that departs from EAGLE.md 3.6 (empty if none)."""
    problems = []
    if cfg.get("architectures") != [ARCHITECTURE]:
        problems.append(f"architectures is {cfg.get('architectures')!r}, not [{ARCHITECTURE!r}]")
    if cfg.get("num_hidden_layers") != 1:
        problems.append(f"num_hidden_layers is {cfg.get('num_hidden_layers')!r}, not 1")
    try:
        hc = HeadConfig.from_dict(cfg)
    except (KeyError, ValueError, NotImplementedError, TypeError) as e:
        return problems + [f"config.json: {e!r}"]
    embeds = sorted(k for k in tensors if "embed" in k)
    if embeds:
        problems.append(f"the head stores embeddings (they are the target's): {embeds}")
    expected = hc.expected_shapes()
    unknown = sorted(set(tensors) - set(expected))
    if unknown:
        problems.append(f"tensors outside the documented layout: {unknown}")
    missing = sorted(set(expected) - set(tensors))
    if missing:
        problems.append(f"documented tensors missing: {missing}")
    for name, shape in expected.items():
        if name in tensors and tuple(tensors[name].shape) != shape:
            problems.append(f"{name} has shape {list(tensors[name].shape)}, expected {list(shape)}")
    for name in expected:
        if name not in ("d2t", "t2d") and name in tensors and tensors[name].dtype.kind != "f":
            problems.append(f"{name} has dtype {tensors[name].dtype}, expected floating point")
    if "d2t" in tensors and tensors["d2t"].dtype != np.int64:
        problems.append(f"d2t has dtype {tensors['d2t'].dtype}, expected int64")
    if "t2d" in tensors and tensors["t2d"].dtype != np.bool_:
        problems.append(f"t2d has dtype {tensors['t2d'].dtype}, expected bool")
    if "lm_head.weight" in tensors and "d2t" in tensors:
        if not (hc.draft_vocab == tensors["lm_head.weight"].shape[0] == len(tensors["d2t"])):
            problems.append(f"draft_vocab_size {hc.draft_vocab}, lm_head rows "
                            f"{tensors['lm_head.weight'].shape[0]} and len(d2t) "
                            f"{len(tensors['d2t'])} disagree")
    if "t2d" in tensors and "d2t" in tensors:
        t2d, d2t = tensors["t2d"], tensors["d2t"].astype(np.int64)
        if len(t2d) != hc.vocab:
            problems.append(f"len(t2d) {len(t2d)} != vocab_size {hc.vocab}")
        targets = np.arange(len(d2t)) + d2t
        if targets.size and (targets.min() < 0 or targets.max() >= hc.vocab):
            problems.append("d2t maps draft ids outside the target vocabulary")
        elif len(np.unique(targets)) != len(targets):
            problems.append("d2t maps two draft ids to the same target id")
        n_true = int(np.count_nonzero(t2d))
        if n_true != hc.draft_vocab:
            problems.append(f"t2d has {n_true} true entries, expected draft_vocab_size {hc.draft_vocab}")
        if set(np.flatnonzero(t2d).tolist()) != set(targets.tolist()):
            problems.append("the true entries of t2d are not exactly {i + d2t[i]}")
    return problems


# ---------------------------------------------------------------------------------------
# building blocks

def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """Llama RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * w."""
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(x: np.ndarray) -> np.ndarray:
    # x * sigmoid(x), with sigmoid written through tanh so no exp can overflow.
    return x * (0.5 * (1.0 + np.tanh(0.5 * x)))


def rope_cos_sin(positions, head_dim: int, theta: float, dtype) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin tables [m, hd] in Hugging Face's rotate-half layout: inv_freq[i] =
    theta^(-2i/hd) for i < hd/2, and the table repeats it for the second half, so that
    dimension i and dimension i + hd/2 rotate together by angle position * inv_freq[i]."""
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    angles = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq[None, :]
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def rotate_half(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x: [heads, m, hd]; cos/sin: [m, hd]."""
    return x * cos[None] + rotate_half(x) * sin[None]


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return z / np.sum(z, axis=axis, keepdims=True)


@dataclass
class KV:
    """The draft's attention cache: keys (already rotated) and values, [kv, T, hd]."""
    k: np.ndarray
    v: np.ndarray

    @property
    def length(self) -> int:
        return self.k.shape[1]

    def extend(self, k: np.ndarray, v: np.ndarray) -> "KV":
        # A new cache, never an in-place append: chain steps extend a scratch copy and
        # the real-row cache stays as it was (EAGLE.md 4, "scratch draft KV").
        return KV(np.concatenate([self.k, k], axis=1), np.concatenate([self.v, v], axis=1))


@dataclass
class Chain:
    tokens: np.ndarray    # target ids d_1..d_K
    logits: np.ndarray    # [K, Vd] draft-vocab logits that chose (or scored) each step
    margins: np.ndarray   # [K] top-1 minus top-2 draft logit
    outs: np.ndarray      # [K, H] pre-norm outputs of each step


# ---------------------------------------------------------------------------------------
# the head

class Eagle3Head:
    def __init__(self, config: dict, tensors: dict[str, np.ndarray], embed: EmbeddingTable,
                 dtype=np.float64):
        self.config = config
        self.cfg = HeadConfig.from_dict(config)
        self.dtype = np.dtype(dtype)
        self.embedding = embed
        self.tensors = tensors  # as stored (kept for the layout checks)
        if embed.hidden != self.cfg.hidden:
            raise ValueError(f"target embedding width {embed.hidden} != draft hidden_size "
                             f"{self.cfg.hidden}")
        shapes = self.cfg.expected_shapes()
        for name, shape in shapes.items():
            if name not in tensors:
                raise KeyError(f"the head has no {name}")
            if tuple(tensors[name].shape) != shape:
                raise ValueError(f"{name} has shape {list(tensors[name].shape)}, expected {list(shape)}")
        w = {k: np.asarray(v, dtype=self.dtype) for k, v in tensors.items()
             if k in shapes and k not in ("d2t", "t2d")}
        self.w = w
        self.d2t = np.asarray(tensors["d2t"], dtype=np.int64)
        self.t2d = np.asarray(tensors["t2d"], dtype=bool)

    @classmethod
    def load(cls, artifact: Path, dtype=np.float64) -> "Eagle3Head":
        artifact = Path(artifact)
        spec = artifact / "speculative"
        config = json.loads((spec / "config.json").read_text())
        tensors = load_safetensors(spec / "model.safetensors")
        return cls(config, tensors, EmbeddingTable.from_checkpoint(artifact), dtype)

    def with_tensors(self, replace: dict[str, np.ndarray], dtype=None) -> "Eagle3Head":
        """A copy with some stored tensors replaced (tampering tests) and/or another
        compute dtype; the embedding table is shared."""
        tensors = dict(self.tensors)
        tensors.update(replace)
        return Eagle3Head(self.config, tensors, self.embedding, dtype or self.dtype)

    # -- pieces -------------------------------------------------------------------------

    def embed(self, ids) -> np.ndarray:
        return self.embedding.rows(ids).astype(self.dtype)

    def fuse(self, g: np.ndarray) -> np.ndarray:
        """h = g @ fc^T: the 3H target features to the draft's width (no bias). Only
        real rows go through it; chain steps feed the draft's own H-wide output."""
        return np.asarray(g, dtype=self.dtype) @ self.w["fc.weight"].T

    def empty_kv(self) -> KV:
        c = self.cfg
        z = np.zeros((c.kv_heads, 0, c.head_dim), dtype=self.dtype)
        return KV(z, z.copy())

    def midlayer(self, e: np.ndarray, h: np.ndarray, positions, past: KV) -> tuple[np.ndarray, KV]:
        """The one decoder layer on m new rows (embeddings e, hidden h, [m, H]) at the
        given RoPE positions. Row i attends to every cached entry and to new rows 0..i
        (the new rows come after the cache). Returns the pre-norm outputs [m, H] and the
        cache extended by the new rows' keys and values."""
        c, w = self.cfg, self.w
        m = e.shape[0]
        residual = h
        a = rms_norm(e, w["midlayer.input_layernorm.weight"], c.eps)
        b = rms_norm(h, w["midlayer.hidden_norm.weight"], c.eps)
        # Embedding FIRST, then hidden (EAGLE.md 3.2; official cnets.py, SpecForge and
        # vLLM all concatenate [input_emb, hidden_states]). The q/k/v weights' first H
        # columns therefore multiply the normed embedding.
        x = np.concatenate([a, b], axis=-1)

        def heads_of(y: np.ndarray, count: int) -> np.ndarray:  # [m, count*hd] -> [count, m, hd]
            return y.reshape(m, count, c.head_dim).transpose(1, 0, 2)

        q = heads_of(x @ w["midlayer.self_attn.q_proj.weight"].T, c.heads)
        k = heads_of(x @ w["midlayer.self_attn.k_proj.weight"].T, c.kv_heads)
        v = heads_of(x @ w["midlayer.self_attn.v_proj.weight"].T, c.kv_heads)
        cos, sin = rope_cos_sin(positions, c.head_dim, c.rope_theta, self.dtype)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        kv = past.extend(k, v)

        # Grouped-query attention: query head j reads kv head j // (heads / kv);
        # np.repeat along the head axis lays the kv heads out as [0,0,..,1,1,..].
        group = c.heads // c.kv_heads
        keys = np.repeat(kv.k, group, axis=0)      # [heads, T+m, hd]
        values = np.repeat(kv.v, group, axis=0)
        scores = q @ keys.transpose(0, 2, 1) / np.sqrt(np.asarray(c.head_dim, dtype=self.dtype))
        total, before = kv.length, past.length
        # causal: new row i sees cache columns 0..before-1 and new columns 0..i
        visible = np.arange(total)[None, :] <= (before + np.arange(m))[:, None]
        scores = np.where(visible[None], scores, -np.inf)
        attn = softmax(scores, axis=-1) @ values   # [heads, m, hd]
        attn = attn.transpose(1, 0, 2).reshape(m, c.heads * c.head_dim)
        h1 = residual + attn @ w["midlayer.self_attn.o_proj.weight"].T

        n = rms_norm(h1, w["midlayer.post_attention_layernorm.weight"], c.eps)
        mlp = (silu(n @ w["midlayer.mlp.gate_proj.weight"].T) * (n @ w["midlayer.mlp.up_proj.weight"].T)) \
            @ w["midlayer.mlp.down_proj.weight"].T
        return h1 + mlp, kv

    def logits(self, out: np.ndarray) -> np.ndarray:
        """Draft-vocab logits [m, Vd] from pre-norm outputs. The final norm is applied
        here only: the value carried to the next chain step is the PRE-norm output (vLLM
        returns (normed, prenorm) and feeds prenorm back; EAGLE.md 3.2)."""
        return rms_norm(out, self.w["norm.weight"], self.cfg.eps) @ self.w["lm_head.weight"].T

    def to_target(self, draft_ids) -> np.ndarray:
        draft_ids = np.asarray(draft_ids, dtype=np.int64)
        return draft_ids + self.d2t[draft_ids]

    def to_draft(self, target_ids) -> np.ndarray:
        """Inverse of to_target; -1 for target ids outside the draft vocabulary."""
        inverse = np.full(self.cfg.vocab, -1, dtype=np.int64)
        inverse[self.to_target(np.arange(self.cfg.draft_vocab))] = np.arange(self.cfg.draft_vocab)
        target_ids = np.asarray(target_ids, dtype=np.int64)
        ok = (target_ids >= 0) & (target_ids < self.cfg.vocab)
        return np.where(ok, inverse[np.clip(target_ids, 0, self.cfg.vocab - 1)], -1)

    # -- rows and chain -------------------------------------------------------------------

    def _check_rows(self, g: np.ndarray, tokens) -> tuple[np.ndarray, np.ndarray]:
        g = np.asarray(g)
        tokens = np.asarray(tokens, dtype=np.int64)
        if g.ndim != 2 or g.shape[1] != 3 * self.cfg.target_hidden:
            raise ValueError(f"features have shape {list(g.shape)}, expected [n, {3 * self.cfg.target_hidden}]")
        if tokens.shape != (g.shape[0] + 1,):
            raise ValueError(f"{len(tokens)} tokens for {g.shape[0]} feature rows; expected n+1 "
                             "(the prompt, then the root token)")
        return g, tokens

    def rows(self, g: np.ndarray, tokens, one_by_one: bool = False) -> tuple[np.ndarray, np.ndarray, KV]:
        """The real rows t = 0..n-1: (pre-norm outputs [n, H], logits [n, Vd], cache).
        Row t pairs the feature of position t with the embedding of x_{t+1} at RoPE
        position t (EAGLE.md's alignment rule). `one_by_one` runs them as n single-row
        calls on a growing cache instead of one causal block (the two must agree)."""
        g, tokens = self._check_rows(g, tokens)
        n = g.shape[0]
        h, e = self.fuse(g), self.embed(tokens[1:])
        past = self.empty_kv()
        if one_by_one:
            outs = []
            for t in range(n):
                out, past = self.midlayer(e[t:t + 1], h[t:t + 1], [t], past)
                outs.append(out)
            out = np.concatenate(outs, axis=0) if outs else np.zeros((0, self.cfg.hidden), self.dtype)
        else:
            out, past = self.midlayer(e, h, np.arange(n), past)
        return out, self.logits(out), past

    def chain(self, g: np.ndarray, tokens, k: int, forced=None) -> Chain:
        """Greedy chain d_1..d_k. d_1 = argmax of row n-1. Step j >= 2 runs the midlayer
        on (out of step j-1, E[d_{j-1}]) at position n+j-2, no fc, attending to every real
        row and the earlier chain steps. With `forced` (target ids d_1..d_{k-1} from
        elsewhere, e.g. temper's chain), step j feeds forced[j-2] instead of its own
        argmax, so each step is scored in exactly the context the other side used."""
        g, tokens = self._check_rows(g, tokens)
        n = g.shape[0]
        if n == 0:
            raise ValueError("a chain needs at least one real row")
        out, logits, past = self.rows(g, tokens)
        prev_out, step_logits = out[-1:], logits[-1:]
        chosen, all_logits, outs = [], [], []
        for j in range(1, k + 1):
            if j >= 2:
                token = chosen[-1] if forced is None else int(forced[j - 2])
                if self.to_draft([token])[0] < 0:
                    raise ValueError(f"chain token {token} is not in the draft vocabulary")
                prev_out, past = self.midlayer(self.embed([token]), prev_out, [n + j - 2], past)
                step_logits = self.logits(prev_out)
            chosen.append(int(self.to_target([int(np.argmax(step_logits[0]))])[0]))
            all_logits.append(step_logits[0])
            outs.append(prev_out[0])
        all_logits = np.array(all_logits).reshape(k, self.cfg.draft_vocab)
        return Chain(np.array(chosen, dtype=np.int64), all_logits, top2_margin(all_logits),
                     np.array(outs).reshape(k, self.cfg.hidden))


def top2_margin(logits: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 logit per row (inf with a single column)."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.shape[-1] < 2:
        return np.full(logits.shape[:-1], np.inf)
    top = np.sort(logits, axis=-1)[..., -2:]
    return top[..., 1] - top[..., 0]
