"""Tensor-parallel rank files, checked byte for byte against the unsharded tensors.

Self-contained: numpy, hashlib and a safetensors reader written here from the container
spec. Nothing of temper is imported (not even this directory's ct_reader), and the manifest
is not trusted: the split is derived from config.json by the Megatron/vLLM rules that
vLLM's `sharded_state` loader expects, and the manifest's record must say the same.

Rules, for degree N (H heads, K kv heads, head_dim d, intermediate I, vocab V):
- q/k/v_proj fuse into `<layer>.self_attn.qkv_proj.<suffix>`: rank r holds q rows
  r*H/N*d .. (r+1)*H/N*d, then the rows of its kv head group for k, then the same for v
  (K >= N: heads r*K/N ..; N > K: head r // (N/K), replicated on N/K consecutive ranks);
- gate/up_proj fuse into `<layer>.mlp.gate_up_proj.<suffix>`: gate rows then up rows,
  I/N of each per rank;
- o_proj/down_proj split by input columns (packed/group scale columns follow);
  their per-channel and per-tensor scales are replicated;
- per-tensor scales of fused members stack into a [members] tensor at the member's index;
- `weight_shape` (I64 [2]) holds the rank's own [rows, cols];
- embed_tokens/lm_head: the vocabulary padded to a multiple of 64, equal row ranges per
  rank, padding rows zero; tied embeddings are stored once as `lm_head.weight`;
- norms replicated.

Artifacts are made here with the release binary ($TEMPER_BIN_DIR/optimize, default
target/release/optimize; build it with `cargo build --release -p temper-cli`):
- SmolLM2 ($TEMPER_SOURCE_MODEL) at degree 3: dense, `--quantize int8` (W8A16 pack-quantized)
  and `--quantize fp8 --scheme FP8` (per-tensor scales, stacked for fused layers); the
  quantized ones are compared with the unsharded artifact the same binary writes;
- a small random F16 Llama written here with a vocabulary that is not a multiple of 64
  and 2 kv heads, at degrees 2 and 4 (kv heads replicated, real padding rows), untied.

Run: TEMPER_SOURCE_MODEL=.cache/models/smollm2-135m-instruct python3 -m pytest -q \
     tests/python/test_tp_rank_files.py      (scripts/test.sh runs it with the rest)
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
RANK_FILE = re.compile(r"^model-rank-(\d+)-part-(\d+)\.safetensors$")
VOCAB_PADDING = 64
INSTANCE = "ml.g6.12xlarge"  # 4 GPUs: degrees 2, 3 and 4 fit.

DTYPE_SIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}


# ----------------------------------------------------------------------------------------
# safetensors, from the spec: u64 LE header length, JSON header, data buffer
# ----------------------------------------------------------------------------------------


@dataclass
class Tensor:
    dtype: str
    shape: tuple
    data: np.ndarray  # uint8, exactly prod(shape) * itemsize bytes

    @property
    def itemsize(self) -> int:
        return DTYPE_SIZE[self.dtype]

    def rows(self) -> np.ndarray:
        """The bytes as [dim 0, bytes per dim-0 row] (a scalar is one row)."""
        return self.data.reshape(self.shape[0] if self.shape else 1, -1)


def read_safetensors(path: Path) -> dict[str, Tensor]:
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size < 8:
        raise ValueError(f"{path.name}: too short for a safetensors header")
    n = int.from_bytes(raw[:8].tobytes(), "little")
    if 8 + n > raw.size:
        raise ValueError(f"{path.name}: header length {n} exceeds the file")
    header = json.loads(raw[8:8 + n].tobytes().decode("utf-8"))
    header.pop("__metadata__", None)
    buf = raw[8 + n:]
    out, spans = {}, []
    for name, info in header.items():
        dtype, shape, (b, e) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        want = math.prod(shape) * DTYPE_SIZE[dtype]
        if e - b != want or not 0 <= b <= e <= buf.size:
            raise ValueError(f"{path.name}: {name}: offsets {b}..{e} for {want} bytes")
        spans.append((b, e))
        out[name] = Tensor(dtype, shape, buf[b:e])
    pos = 0
    for b, e in sorted(spans):
        if b != pos:
            raise ValueError(f"{path.name}: data buffer has a gap or overlap at byte {pos}")
        pos = e
    if pos != buf.size:
        raise ValueError(f"{path.name}: {buf.size - pos} trailing bytes after the tensors")
    return out


def read_checkpoint(directory: Path) -> dict[str, Tensor]:
    """Every tensor of an unsharded checkpoint (one or more *.safetensors files)."""
    tensors: dict[str, Tensor] = {}
    files = sorted(p for p in directory.glob("*.safetensors") if not RANK_FILE.match(p.name))
    assert files, f"{directory} has no safetensors files"
    for path in files:
        for name, t in read_safetensors(path).items():
            assert name not in tensors, f"{name} is in two files of {directory}"
            tensors[name] = t
    return tensors


def write_safetensors(path: Path, tensors: dict[str, tuple[str, tuple, bytes]]) -> None:
    """A plain writer for the synthetic test model: {name: (dtype, shape, bytes)}."""
    header, pos = {}, 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [pos, pos + len(data)]}
        pos += len(data)
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for _, _, data in tensors.values():
            f.write(data)


# ----------------------------------------------------------------------------------------
# The split, derived from config.json
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dims:
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    degree: int

    @staticmethod
    def of(config: dict, degree: int) -> "Dims":
        heads = config["num_attention_heads"]
        return Dims(
            hidden=config["hidden_size"], heads=heads,
            kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or config["hidden_size"] // heads,
            intermediate=config["intermediate_size"], vocab=config["vocab_size"],
            tied=bool(config.get("tie_word_embeddings", False)), degree=degree,
        )

    @property
    def padded_vocab(self) -> int:
        return -(-self.vocab // VOCAB_PADDING) * VOCAB_PADDING

    @property
    def vocab_per_rank(self) -> int:
        return self.padded_vocab // self.degree

    @property
    def q_rows(self) -> int:
        return self.heads // self.degree * self.head_dim

    @property
    def kv_rows(self) -> int:
        return max(1, self.kv_heads // self.degree) * self.head_dim

    def first_kv_head(self, rank: int) -> int:
        if self.degree > self.kv_heads:
            return rank // (self.degree // self.kv_heads)
        return rank * (self.kv_heads // self.degree)

    @property
    def ffn_rows(self) -> int:
        return self.intermediate // self.degree

    def splittable(self) -> None:
        n = self.degree
        assert self.heads % n == 0, "heads must divide by the degree"
        if n > self.kv_heads:
            assert n % self.kv_heads == 0, "the degree must be a multiple of the kv heads"
        else:
            assert self.kv_heads % n == 0, "kv heads must divide by the degree"
        assert self.intermediate % n == 0 and self.padded_vocab % n == 0


QKV = ("q_proj", "k_proj", "v_proj")
GATE_UP = ("gate_proj", "up_proj")


def copy(rank, target, dim, start, end, at):
    return {"rank": rank, "target": target, "copy": {"dim": dim, "range": [start, end], "at": at}}


def derive(dims: Dims, source: dict[str, Tensor]):
    """(pieces {source name: [piece as the manifest writes it]},
        specs [{target name: (dtype, shape)} per rank])."""
    dims.splittable()
    n = dims.degree
    pieces: dict[str, list] = {}
    specs: list[dict] = [{} for _ in range(n)]

    def declare(rank, target, dtype, shape):
        shape = tuple(shape)
        have = specs[rank].setdefault(target, (dtype, shape))
        assert have == (dtype, shape), f"{target}: members disagree: {have} vs {(dtype, shape)}"

    for name, t in source.items():
        module, _, suffix = name.rpartition(".")
        parent, _, leaf = module.rpartition(".")
        out = pieces[name] = []
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            assert len(t.shape) == 2 and t.shape[0] == dims.vocab, f"{name} {t.shape}"
            target = "lm_head.weight" if name == "model.embed_tokens.weight" and dims.tied else name
            per = dims.vocab_per_rank
            for r in range(n):
                end = min((r + 1) * per, dims.vocab)
                out.append(copy(r, target, 0, min(r * per, end), end, 0))
                declare(r, target, t.dtype, (per, t.shape[1]))
        elif leaf in QKV or leaf in GATE_UP:
            members = QKV if leaf in QKV else GATE_UP
            fused = "qkv_proj" if leaf in QKV else "gate_up_proj"
            index = members.index(leaf)
            target = f"{parent}.{fused}.{suffix}"
            if leaf in QKV:
                full = (dims.heads if index == 0 else dims.kv_heads) * dims.head_dim
                fused_rows = dims.q_rows + 2 * dims.kv_rows
            else:
                full, fused_rows = dims.intermediate, 2 * dims.ffn_rows
            for r in range(n):
                if leaf == "q_proj":
                    rows, at = (r * dims.q_rows, (r + 1) * dims.q_rows), 0
                elif leaf in QKV:
                    start = dims.first_kv_head(r) * dims.head_dim
                    rows, at = (start, start + dims.kv_rows), dims.q_rows + (index - 1) * dims.kv_rows
                else:
                    rows, at = (r * dims.ffn_rows, (r + 1) * dims.ffn_rows), index * dims.ffn_rows
                if suffix == "weight_shape":
                    if index == 0:  # one shape for the fused tensor
                        out.append({"rank": r, "target": target,
                                    "shape": {"rows": fused_rows, "cols": dims.hidden}})
                        declare(r, target, t.dtype, (2,))
                elif math.prod(t.shape) == 1:  # per-tensor scale: stacked by member
                    out.append(copy(r, target, None, 0, 1, index))
                    declare(r, target, t.dtype, (len(members),))
                else:
                    assert t.shape[0] == full, f"{name}: {t.shape}, expected {full} rows"
                    out.append(copy(r, target, 0, rows[0], rows[1], at))
                    declare(r, target, t.dtype, (fused_rows,) + t.shape[1:])
        elif leaf in ("o_proj", "down_proj"):
            cols = dims.heads * dims.head_dim if leaf == "o_proj" else dims.intermediate
            per = cols // n
            for r in range(n):
                if suffix == "weight_shape":
                    out.append({"rank": r, "target": name, "shape": {"rows": dims.hidden, "cols": per}})
                    declare(r, name, t.dtype, (2,))
                elif len(t.shape) == 2 and t.shape[1] > 1:  # weight, packed weight, group scales
                    assert cols % t.shape[1] == 0 and per % (cols // t.shape[1]) == 0, name
                    c = per // (cols // t.shape[1])
                    out.append(copy(r, name, 1, r * c, (r + 1) * c, 0))
                    declare(r, name, t.dtype, (t.shape[0], c))
                else:  # per-channel or per-tensor scales: replicated
                    out.append(copy(r, name, None, 0, t.shape[0] if t.shape else 1, 0))
                    declare(r, name, t.dtype, t.shape)
        elif "norm" in module and len(t.shape) <= 1:
            for r in range(n):
                out.append(copy(r, name, None, 0, t.shape[0] if t.shape else 1, 0))
                declare(r, name, t.dtype, t.shape)
        else:
            raise AssertionError(f"no sharding rule for {name} {t.shape}")
    return pieces, specs


# ----------------------------------------------------------------------------------------
# The checker
# ----------------------------------------------------------------------------------------


def check_rank_files(reference_dir: Path, sharded_dir: Path, degree: int) -> list[str]:
    """Problems found in `sharded_dir` (empty when it is exactly `reference_dir`'s tensors
    split `degree` ways by the rules). `reference_dir`: the unsharded checkpoint."""
    problems: list[str] = []
    config = json.loads((reference_dir / "config.json").read_text())
    dims = Dims.of(config, degree)
    source = read_checkpoint(reference_dir)
    want_pieces, want_specs = derive(dims, source)

    # config.json and serving.properties.
    if json.loads((sharded_dir / "config.json").read_text()) != config:
        problems.append("config.json differs from the unsharded checkpoint's")
    props = dict(
        line.split("=", 1) for line in (sharded_dir / "serving.properties").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    if props.get("option.tensor_parallel_degree") != str(degree) \
            or props.get("option.load_format") != "sharded_state":
        problems.append(f"serving.properties: {props}")

    # The manifest's sharding report.
    sharding = json.loads((sharded_dir / "manifest.json").read_text())["sharding"]
    for key, want in [("tensor_parallel_degree", degree), ("padded_vocab", dims.padded_vocab),
                      ("load_format", "sharded_state")]:
        if sharding.get(key) != want:
            problems.append(f"manifest sharding.{key} = {sharding.get(key)!r}, expected {want!r}")
    on_disk = {p.name for p in sharded_dir.iterdir() if p.name.endswith(".safetensors")}
    listed = set()
    if [r["rank"] for r in sharding["ranks"]] != list(range(degree)):
        problems.append(f"manifest ranks {[r['rank'] for r in sharding['ranks']]}")
    for entry in sharding["ranks"]:
        paths = [f["path"] for f in entry["files"]]
        if paths != [f"model-rank-{entry['rank']}-part-{p}.safetensors" for p in range(len(paths))]:
            problems.append(f"rank {entry['rank']}: files {paths}")
        total = 0
        for f in entry["files"]:
            listed.add(f["path"])
            path = sharded_dir / f["path"]
            if not path.is_file():
                problems.append(f"{f['path']} is in the manifest but not on disk")
                continue
            data = path.read_bytes()
            total += len(data)
            if len(data) != f["bytes"]:
                problems.append(f"{f['path']}: {len(data)} bytes, the manifest says {f['bytes']}")
            digest = hashlib.sha256(data).hexdigest()
            if digest != f["sha256"]:
                problems.append(f"{f['path']}: SHA-256 {digest}, the manifest says {f['sha256']}")
        if total != entry["bytes"]:
            problems.append(f"rank {entry['rank']}: {total} bytes, the manifest says {entry['bytes']}")
    if on_disk != listed:
        problems.append(f"safetensors files on disk {sorted(on_disk)} != manifest {sorted(listed)}")

    recorded = {s["source"]: s["pieces"] for s in sharding["tensors"]}
    if set(recorded) != set(source):
        problems.append(f"manifest sources: missing {sorted(set(source) - set(recorded))[:5]}, "
                        f"extra {sorted(set(recorded) - set(source))[:5]}")
    for name, want in want_pieces.items():
        if recorded.get(name) != want:
            problems.append(f"{name}: manifest pieces {recorded.get(name)} != the rules' {want}")

    # Rank files: exactly the expected tensors, names, dtypes, shapes.
    ranks: list[dict[str, Tensor]] = [{} for _ in range(degree)]
    for fname in sorted(on_disk):
        m = RANK_FILE.match(fname)
        if not m or int(m.group(1)) >= degree:
            problems.append(f"unexpected file {fname}")
            continue
        try:
            tensors = read_safetensors(sharded_dir / fname)
        except ValueError as e:
            problems.append(str(e))
            continue
        for tname, t in tensors.items():
            if tname in ranks[int(m.group(1))]:
                problems.append(f"{tname} is in two files of rank {m.group(1)}")
            ranks[int(m.group(1))][tname] = t
    for r in range(degree):
        got = {k: (t.dtype, t.shape) for k, t in ranks[r].items()}
        if got != want_specs[r]:
            diff = sorted(set(got.items()) ^ set(want_specs[r].items()))
            problems.append(f"rank {r}: tensors differ from the expected names/dtypes/shapes: {diff[:6]}")
            return problems  # the byte checks below assume the right shapes

    # Reassemble every source tensor from the rank files; mark every rank byte it used.
    used = [{k: np.zeros(t.rows().shape, dtype=np.uint8) for k, t in ranks[r].items()}
            for r in range(degree)]
    for name, src in source.items():
        s = src.rows()
        built = np.zeros_like(s)
        seen = np.zeros(s.shape, dtype=bool)
        e = src.itemsize
        for p in want_pieces[name]:
            r, target = p["rank"], p["target"]
            dst, mark = ranks[r][target].rows(), used[r][target]
            if "shape" in p:
                values = np.frombuffer(ranks[r][target].data.tobytes(), dtype="<i8").tolist()
                want = [p["shape"]["rows"], p["shape"]["cols"]]
                if values != want:
                    problems.append(f"rank {r} {target}: holds {values}, the rank's weight is {want}")
                packed = ranks[r].get(target[: -len("weight_shape")] + "weight_packed")
                if packed is not None and [packed.shape[0], packed.shape[1] * 4] != values:
                    problems.append(f"rank {r} {target}: {values}, weight_packed is {packed.shape}")
                mark += 1
                continue
            dim, (a, b), at = p["copy"]["dim"], p["copy"]["range"], p["copy"]["at"]
            if dim is None and math.prod(src.shape) == 1 and math.prod(ranks[r][target].shape) > 1:
                # one element of a stacked per-tensor scale
                part, used_part = dst.reshape(-1)[at * e:(at + 1) * e], mark.reshape(-1)[at * e:(at + 1) * e]
                into = (slice(None), slice(None))
            elif dim is None:
                part, used_part, into = dst, mark, (slice(None), slice(None))
            elif dim == 0:
                part, used_part, into = dst[at:at + b - a], mark[at:at + b - a], (slice(a, b), slice(None))
            else:
                part, used_part, into = dst, mark, (slice(None), slice(a * e, b * e))
            if part.size != s[into].size or not np.array_equal(part.reshape(s[into].shape), s[into]):
                problems.append(f"{name} -> rank {r} {target}: bytes differ from the unsharded tensor")
            built[into] = part.reshape(s[into].shape)
            seen[into] = True
            used_part += 1
        if not name.endswith(".weight_shape"):  # its pieces are the ranks' own shapes
            if not seen.all():
                problems.append(f"{name}: {int((~seen).sum())} bytes are on no rank")
            elif not np.array_equal(built, s):
                problems.append(f"{name}: reassembled from the ranks, differs from the unsharded tensor")

    # Every rank byte came from exactly one piece, except vocab padding rows: zeros.
    for r in range(degree):
        for tname, mark in used[r].items():
            if (mark > 1).any():
                problems.append(f"rank {r} {tname}: {int((mark > 1).sum())} bytes written twice")
            if tname in ("lm_head.weight", "model.embed_tokens.weight"):
                real = max(0, min(dims.vocab_per_rank, dims.vocab - r * dims.vocab_per_rank))
                if not (mark[:real] == 1).all() or (mark[real:] != 0).any():
                    problems.append(f"rank {r} {tname}: rows 0..{real} are not exactly the vocab rows")
                if (ranks[r][tname].rows()[real:] != 0).any():
                    problems.append(f"rank {r} {tname}: padding rows {real}.. are not zero")
            elif (mark == 0).any():
                problems.append(f"rank {r} {tname}: {int((mark == 0).sum())} bytes come from no source")
    return problems


# ----------------------------------------------------------------------------------------
# Artifacts
# ----------------------------------------------------------------------------------------


def optimize_bin() -> Path:
    path = Path(os.environ.get("TEMPER_BIN_DIR") or REPO / "target" / "release") / "optimize"
    if not path.is_file():
        pytest.fail(f"{path} does not exist: `cargo build --release -p temper-cli` "
                    "(or set TEMPER_BIN_DIR)", pytrace=False)
    return path


class Artifacts:
    def __init__(self, root: Path):
        self.root, self.made = root, {}

    def make(self, model: Path, *flags: str) -> Path:
        key = (str(model), flags)
        if key not in self.made:
            out = self.root / f"a{len(self.made)}"
            cmd = [str(optimize_bin()), "--model", str(model), "--instance-type", INSTANCE,
                   "--output", str(out), "--no-eval", "--json", *flags]
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if res.returncode != 0:
                pytest.fail(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-3000:]}",
                            pytrace=False)
            self.made[key] = out
        return self.made[key]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Artifacts:
    return Artifacts(tmp_path_factory.mktemp("tp-artifacts"))


# A small Llama: vocab 1000 (padded to 1024: the last rank has padding rows), 4 heads over
# 2 kv heads (degree 4 replicates each kv head on 2 ranks), untied lm_head, F16.
SMALL = dict(hidden=128, heads=4, kv=2, ffn=256, layers=2, vocab=1000)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small-llama")
    h, ffn = SMALL["hidden"], SMALL["ffn"]
    hd = h // SMALL["heads"]
    kvr = SMALL["kv"] * hd
    rng = np.random.default_rng(11)

    def w(*shape):
        return ("F16", shape, (rng.standard_normal(shape) * 0.05).astype("<f2").tobytes())

    def ones(n):
        return ("F16", (n,), (1 + 0.1 * rng.standard_normal(n)).astype("<f2").tobytes())

    tensors = {"model.embed_tokens.weight": w(SMALL["vocab"], h)}
    for i in range(SMALL["layers"]):
        p = f"model.layers.{i}."
        tensors |= {
            p + "input_layernorm.weight": ones(h),
            p + "self_attn.q_proj.weight": w(h, h),
            p + "self_attn.k_proj.weight": w(kvr, h),
            p + "self_attn.v_proj.weight": w(kvr, h),
            p + "self_attn.o_proj.weight": w(h, h),
            p + "post_attention_layernorm.weight": ones(h),
            p + "mlp.gate_proj.weight": w(ffn, h),
            p + "mlp.up_proj.weight": w(ffn, h),
            p + "mlp.down_proj.weight": w(h, ffn),
        }
    tensors |= {"model.norm.weight": ones(h), "lm_head.weight": w(SMALL["vocab"], h)}
    write_safetensors(out / "model.safetensors", tensors)
    (out / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": h,
        "intermediate_size": ffn, "num_hidden_layers": SMALL["layers"],
        "num_attention_heads": SMALL["heads"], "num_key_value_heads": SMALL["kv"],
        "head_dim": hd, "vocab_size": SMALL["vocab"], "rms_norm_eps": 1e-5,
        "max_position_embeddings": 256, "tie_word_embeddings": False, "torch_dtype": "float16",
    }, indent=2))
    return out


def assert_clean(problems: list[str]) -> None:
    assert problems == [], f"{len(problems)} problems:\n" + "\n".join(problems[:25])


# ----------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------


def test_the_rules_on_smollm2_dimensions():
    """The derivation itself, on SmolLM2's numbers (9 heads, 3 kv heads, head_dim 64)."""
    dims = Dims.of({"hidden_size": 576, "num_attention_heads": 9, "num_key_value_heads": 3,
                    "intermediate_size": 1536, "vocab_size": 49152, "tie_word_embeddings": True}, 3)
    assert (dims.q_rows, dims.kv_rows, dims.ffn_rows, dims.padded_vocab) == (192, 64, 512, 49152)
    src = {f"l.{m}.weight": Tensor("BF16", (rows, 576), np.zeros(0, np.uint8))
           for m, rows in [("q_proj", 576), ("k_proj", 192), ("v_proj", 192)]}
    pieces, specs = derive(dims, src)
    assert [p["copy"]["range"] + [p["copy"]["at"]] for p in pieces["l.v_proj.weight"]] == \
        [[0, 64, 256], [64, 128, 256], [128, 192, 256]]
    assert specs[2] == {"l.qkv_proj.weight": ("BF16", (320, 576))}
    # 4 ranks over 2 kv heads: ranks 0, 1 hold head 0; ranks 2, 3 head 1.
    four = Dims(128, 4, 2, 32, 256, 1000, False, 4)
    assert [four.first_kv_head(r) for r in range(4)] == [0, 0, 1, 1]
    assert (four.padded_vocab, four.vocab_per_rank) == (1024, 256)


def test_dense_smollm2_degree_3(env, artifacts):
    model = env.source()
    out = artifacts.make(model, "--tensor-parallel", "3")
    assert_clean(check_rank_files(model, out, 3))


def test_int8_smollm2_degree_3_matches_the_unsharded_int8_artifact(env, artifacts):
    model = env.source()
    unsharded = artifacts.make(model, "--quantize", "int8")
    sharded = artifacts.make(model, "--quantize", "int8", "--tensor-parallel", "3")
    ref = read_checkpoint(unsharded)
    assert ref["model.layers.0.self_attn.q_proj.weight_packed"].dtype == "I32"
    assert ref["model.layers.0.self_attn.q_proj.weight_packed"].shape == (576, 144)
    assert ref["model.layers.0.self_attn.q_proj.weight_scale"].shape == (576, 1)
    assert_clean(check_rank_files(unsharded, sharded, 3))


def test_fp8_static_smollm2_degree_3_stacks_per_tensor_scales(env, artifacts):
    model = env.source()
    unsharded = artifacts.make(model, "--quantize", "fp8", "--scheme", "FP8")
    sharded = artifacts.make(model, "--quantize", "fp8", "--scheme", "FP8", "--tensor-parallel", "3")
    rank0 = read_safetensors(sharded / "model-rank-0-part-0.safetensors")
    assert rank0["model.layers.0.self_attn.qkv_proj.weight_scale"].shape == (3,)
    assert rank0["model.layers.0.mlp.gate_up_proj.input_scale"].shape == (2,)
    assert_clean(check_rank_files(unsharded, sharded, 3))


@pytest.mark.parametrize("degree", [2, 4])
@pytest.mark.parametrize("quantize", [None, "int8"])
def test_small_llama_padding_and_kv_replication(small_model, artifacts, degree, quantize):
    flags = ("--quantize", quantize) if quantize else ()
    reference = artifacts.make(small_model, *flags) if quantize else small_model
    sharded = artifacts.make(small_model, *flags, "--tensor-parallel", str(degree))
    assert_clean(check_rank_files(reference, sharded, degree))
    last = read_safetensors(sharded / f"model-rank-{degree - 1}-part-0.safetensors")
    per = 1024 // degree
    assert last["lm_head.weight"].shape == (per, 128)
    assert last["model.embed_tokens.weight"].shape == (per, 128)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _tensor_byte(path: Path, name: str, index: int) -> int:
    """The file offset of byte `index` of tensor `name`."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return 8 + n + header[name]["data_offsets"][0] + index


def test_a_flipped_byte_is_reported(env, artifacts, tmp_path):
    """The checker can fail: one changed byte of a rank file is a SHA-256 mismatch and a
    byte mismatch of the source tensor it came from."""
    model = env.source()
    bad = _copy(artifacts.make(model, "--tensor-parallel", "3"), tmp_path / "tp3")
    victim = bad / "model-rank-1-part-0.safetensors"
    data = bytearray(victim.read_bytes())
    # Byte 70 of rank 1's qkv_proj row 200 (k rows start at 192): from k_proj row 72.
    at = _tensor_byte(victim, "model.layers.5.self_attn.qkv_proj.weight", 200 * 576 * 2 + 70)
    data[at] ^= 0x01
    victim.write_bytes(bytes(data))
    problems = check_rank_files(model, bad, 3)
    assert any("model-rank-1-part-0.safetensors: SHA-256" in p for p in problems), problems
    assert any(p.startswith("model.layers.5.self_attn.k_proj.weight -> rank 1") for p in problems), problems


def test_a_wrong_manifest_or_padding_is_reported(small_model, artifacts, tmp_path):
    """The manifest is checked against the rules, not trusted; padding must be zero."""
    bad = _copy(artifacts.make(small_model, "--tensor-parallel", "4"), tmp_path / "tp4")
    manifest = json.loads((bad / "manifest.json").read_text())
    for split in manifest["sharding"]["tensors"]:
        if split["source"] == "model.layers.1.self_attn.v_proj.weight":
            split["pieces"][3]["copy"]["range"] = [0, 32]  # rank 3 holds kv head 1: 32..64
    (bad / "manifest.json").write_text(json.dumps(manifest))
    victim = bad / "model-rank-3-part-0.safetensors"
    data = bytearray(victim.read_bytes())
    data[_tensor_byte(victim, "lm_head.weight", 250 * 128 * 2 + 3)] = 0x3C  # a padding row
    victim.write_bytes(bytes(data))
    problems = check_rank_files(small_model, bad, 4)
    assert any(p.startswith("model.layers.1.self_attn.v_proj.weight: manifest pieces") for p in problems), problems
    assert any("rank 3 lm_head.weight: padding rows" in p for p in problems), problems
