"""A causal language model in ONNX (Hugging Face Optimum layout) run by onnxruntime, with its KV cache.

The layout: inputs `input_ids`, `attention_mask`, optional `position_ids`, `past_key_values.{i}.key/value`
(batch, kv_heads, past_len, head_dim); outputs `logits` (batch, seq, vocab) and `present.{i}.key/value`
(batch, kv_heads, past_len + seq, head_dim). One graph serves prefill (past of length 0), single-token
decode, multi-token verify and batched decode, and `optimum-cli export onnx --task
text-generation-with-past` writes the same thing, so such a directory loads as-is.

Speed: the decode step is a thin layer over `InferenceSession.run` — the present tensors of one step are
fed back as the next step's past without copying, and the only per-step allocations are the three tiny
index arrays (benchmarks/bench_decode.py measures it against a bare `session.run` loop). Threads: one
intra-op thread by default. Sweeps run one process per core, and the target machines have few cores
shared with other work; measured on this project's 2-core machine under a background training job, two
threads made the 2.4M-parameter bundled model's decode step 3× slower, not faster (small models are
dispatch-bound; threads only help large ones on an idle machine). Callers that own the machine pass
`threads=2` or more.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from netsim.errors import ModelError
from netsim.lm.geometry import ModelGeometry
from netsim.lm.manifest import MANIFEST_FILE, Manifest, read_manifest, sha256_file
from netsim.lm.tokenizer import Tokenizer

MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"
OTHER_MODEL_FILES = ("decoder_model_merged.onnx", "decoder_with_past_model.onnx")
"""File names older Optimum versions give the with-past graph; used when model.onnx is absent."""

_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
_PRESENT = re.compile(r"^present(?:_key_values)?\.(\d+)\.(key|value)$")
_KV_DTYPE_NAME = {np.float32: "float32", np.float16: "float16"}
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                onnx.TensorProto.DOUBLE}
_VOCAB_PADDING_SLACK = 512
"""Logit rows a model may have beyond its tokenizer's vocabulary (Qwen pads 151,665 tokens to 151,936)."""


# ---------------------------------------------------------------------------------------------------
# KV cache
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class KVCache:
    """The keys and values of every layer for one sequence: `layers[i] = (key, value)`, each array
    (1, kv_heads, T, head_dim). Immutable: the arrays are read-only and every model call returns a new
    cache, so a cache can be shared between branches (speculative drafts, memo entries) safely."""

    layers: tuple[tuple[np.ndarray, np.ndarray], ...]

    @classmethod
    def empty(cls, n_layers: int, n_kv_heads: int, head_dim: int, dtype: Any = np.float32) -> KVCache:
        blank = np.zeros((1, n_kv_heads, 0, head_dim), dtype=dtype)
        blank.flags.writeable = False
        return cls(tuple((blank, blank) for _ in range(n_layers)))

    @classmethod
    def from_present(cls, present: Sequence[np.ndarray], row: int | None = None) -> KVCache:
        """Wrap onnxruntime outputs (key, value, key, value, …); `row` picks one sequence of a batch."""
        arrays = [a if row is None else a[row:row + 1] for a in present]
        for a in arrays:
            a.flags.writeable = False
        return cls(tuple((arrays[i], arrays[i + 1]) for i in range(0, len(arrays), 2)))

    @property
    def length(self) -> int:
        """Tokens held (T)."""
        return self.layers[0][0].shape[2]

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self.layers)

    def truncate(self, n_tokens: int) -> KVCache:
        """The cache of the first `n_tokens` tokens (a view, no copy); rolls back rejected drafts."""
        if not 0 <= n_tokens <= self.length:
            raise ValueError(f"truncate({n_tokens}) outside 0..{self.length} for {self!r}")
        if n_tokens == self.length:
            return self
        return KVCache(tuple((k[:, :, :n_tokens], v[:, :, :n_tokens]) for k, v in self.layers))

    def flat(self) -> list[np.ndarray]:
        """key0, value0, key1, value1, … — the order of the graph's past inputs."""
        return [a for pair in self.layers for a in pair]

    def __repr__(self) -> str:
        k = self.layers[0][0]
        return (f"KVCache({self.length} tokens × {len(self.layers)} layers, kv_heads={k.shape[1]}, "
                f"head_dim={k.shape[3]}, {self.nbytes / 1e6:.2f} MB)")


# ---------------------------------------------------------------------------------------------------
# Reading the graph
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphIO:
    """Names and element types of a graph's inputs and outputs in the Optimum layout."""

    past_names: tuple[str, ...]
    present_names: tuple[str, ...]
    has_position_ids: bool
    has_cache_branch: bool
    ids_dtype: Any
    mask_dtype: Any
    kv_dtype: Any
    n_kv_heads: int | str
    head_dim: int | str
    vocab_size: int | str


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param
            for d in value_info.type.tensor_type.shape.dim]


def read_graph_io(graph: onnx.GraphProto, where: Path) -> GraphIO:
    """Check the inputs/outputs against the Optimum layout; a ModelError names what is missing."""
    inputs = {i.name: i for i in graph.input}
    outputs = {o.name: o for o in graph.output}
    past: dict[tuple[int, str], str] = {}
    for name in inputs:
        if m := _PAST.match(name):
            past[int(m.group(1)), m.group(2)] = name
    present: dict[tuple[int, str], str] = {}
    for name in outputs:
        if m := _PRESENT.match(name):
            present[int(m.group(1)), m.group(2)] = name
    missing = [n for n in ("input_ids", "attention_mask") if n not in inputs]
    missing += [] if "logits" in outputs else ["output logits"]
    n_layers = len({layer for layer, _ in past})
    if n_layers == 0:
        missing.append("past_key_values.* inputs")
    slots = [(layer, kind) for layer in range(n_layers) for kind in ("key", "value")]
    missing += [f"past_key_values.{i}.{k}" for i, k in slots if (i, k) not in past]
    missing += [f"present.{i}.{k}" for i, k in slots if (i, k) not in present]
    if missing:
        raise ModelError(f"{where}: not an Optimum-layout causal LM with KV cache "
                         f"(missing {', '.join(missing[:3])}{' …' if len(missing) > 3 else ''})")

    def elem(value_info: onnx.ValueInfoProto) -> Any:
        return onnx.helper.tensor_dtype_to_np_dtype(value_info.type.tensor_type.elem_type).type

    key0 = inputs[past[0, "key"]]
    kv_dims, logit_dims = _dims(key0), _dims(outputs["logits"])
    if len(kv_dims) != 4 or len(logit_dims) != 3:
        raise ModelError(f"{where}: past_key_values.0.key has shape {kv_dims} and logits {logit_dims}; "
                         "expected (batch, kv_heads, past, head_dim) and (batch, seq, vocab)")
    return GraphIO(
        past_names=tuple(past[s] for s in slots),
        present_names=tuple(present[s] for s in slots),
        has_position_ids="position_ids" in inputs,
        has_cache_branch="use_cache_branch" in inputs,
        ids_dtype=elem(inputs["input_ids"]),
        mask_dtype=elem(inputs["attention_mask"]),
        kv_dtype=elem(key0),
        n_kv_heads=kv_dims[1],
        head_dim=kv_dims[3],
        vocab_size=logit_dims[2],
    )


def _float_initializers(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Float initializers by the name the graph computes with: `X = Cast(X_fp16)` resolves to X, so a
    float16-stored weight counts once. Tensors stay protobufs; only the few inspected become arrays."""
    tensors = {i.name: i for i in graph.initializer if i.data_type in _FLOAT_TYPES}
    for node in graph.node:
        if node.op_type == "Cast" and node.input[0] in tensors:
            tensors[node.output[0]] = tensors.pop(node.input[0])
    return tensors


def _shape(tensor: onnx.TensorProto) -> tuple[int, ...]:
    return tuple(int(d) for d in tensor.dims)


def _embedding_name(graph: onnx.GraphProto, tensors: dict[str, onnx.TensorProto]) -> str | None:
    """The table a Gather indexes with `input_ids` (possibly through a Cast of the ids)."""
    ids_aliases = {"input_ids"}
    for node in graph.node:
        if node.op_type == "Cast" and node.input[0] in ids_aliases:
            ids_aliases.add(node.output[0])
    for node in graph.node:
        if node.op_type == "Gather" and node.input[1] in ids_aliases and node.input[0] in tensors:
            return node.input[0]
    return None


def _n_params(graph: onnx.GraphProto, tensors: dict[str, onnx.TensorProto],
              embedding_name: str | None) -> tuple[int, bool]:
    """Sum of float initializer sizes, and whether the output head is the embedding (tied).

    A tied head shows up as the embedding table feeding a second node besides the input Gather (a
    Transpose or MatMul for the head), or as an initializer holding the table transposed (a
    constant-folded `MatMul(x, Wᵀ)`); either way it is counted once.
    """
    total = sum(int(np.prod(_shape(t))) for t in tensors.values())
    if embedding_name is None:
        return total, False
    consumers = sum(1 for node in graph.node for name in node.input if name == embedding_name)
    if consumers > 1:
        return total, True
    embedding = numpy_helper.to_array(tensors[embedding_name])
    flipped = embedding.shape[::-1]
    candidates = [t for t in tensors.values() if _shape(t) == flipped]
    if any(np.array_equal(numpy_helper.to_array(t).T, embedding) for t in candidates):
        return total - int(embedding.size), True
    return total, False


def _heads_and_ffn(tensors: dict[str, onnx.TensorProto], hidden: int, n_layers: int, kv_dim: int,
                   head_dim: int) -> tuple[int, int] | None:
    """Attention heads and MLP width from weight shapes, for graphs without a config.json.

    A Llama-family layer has q (hidden → heads·head_dim), k and v (hidden → kv_dim), o (back), and
    gate, up (hidden → ffn), down (back): so among the matrices with one side equal to `hidden`, the
    other side occurring 3 times per layer is the MLP width, the one occurring 2 (or 4 with kv_dim)
    times is heads·head_dim. Ambiguous shapes return None.
    """
    counts: dict[int, int] = {}
    for tensor in tensors.values():
        shape = _shape(tensor)
        if len(shape) == 2 and hidden in shape:
            other = shape[1] if shape[0] == hidden else shape[0]
            counts[other] = counts.get(other, 0) + 1
    ffn = [d for d, c in counts.items() if c == 3 * n_layers]
    q_dims = [d for d, c in counts.items() if c == 2 * n_layers and d != kv_dim]
    if kv_dim in counts and counts[kv_dim] == 4 * n_layers:
        q_dims.append(kv_dim)
    if len(ffn) != 1 or len(q_dims) != 1 or q_dims[0] % head_dim:
        return None
    return q_dims[0] // head_dim, ffn[0]


def geometry_from_onnx(model_path: Path, config: dict | None = None) -> ModelGeometry:
    """Geometry read from the graph: layers from the past inputs, kv heads and head_dim from their static
    dims, vocabulary from the logits (or the embedding table), hidden size from the embedding table,
    parameters by summing initializers, dtype from the KV element type. Heads, MLP width and the
    architecture come from `config` (the HF config.json) when given, else from weight shapes."""
    model_path = Path(model_path)
    model = _load_onnx(model_path)
    return _geometry(model, read_graph_io(model.graph, model_path), config, model_path)[0]


def _geometry(model: onnx.ModelProto, io: GraphIO, config: dict | None,
              where: Path) -> tuple[ModelGeometry, np.ndarray | None]:
    """Geometry plus the input-embedding table (vocab, hidden) as float32, when the graph has one."""
    config = config or {}
    tensors = _float_initializers(model.graph)
    name = _embedding_name(model.graph, tensors)
    embedding = numpy_helper.to_array(tensors[name]) if name else None
    n_layers = len(io.past_names) // 2

    def static(value: int | str, key: str) -> int:
        if isinstance(value, int) and value > 0:
            return value
        if key in config:
            return int(config[key])
        raise ModelError(f"{where}: {key} is symbolic ({value!r}) in the graph and no config.json gives it")

    n_kv_heads = static(io.n_kv_heads, "num_key_value_heads")
    head_dim = static(io.head_dim, "head_dim")
    if isinstance(io.vocab_size, int) and io.vocab_size > 0:
        vocab = io.vocab_size
    elif embedding is not None:
        vocab = int(embedding.shape[0])
    else:
        vocab = static(io.vocab_size, "vocab_size")
    if embedding is not None:
        hidden = int(embedding.shape[1])
    elif "hidden_size" in config:
        hidden = int(config["hidden_size"])
    else:
        raise ModelError(f"{where}: no input-embedding table found and no config.json gives hidden_size")
    n_params, tied = _n_params(model.graph, tensors, name)
    if "num_attention_heads" in config and "intermediate_size" in config:
        n_heads, ffn = int(config["num_attention_heads"]), int(config["intermediate_size"])
    elif (found := _heads_and_ffn(tensors, hidden, n_layers, n_kv_heads * head_dim, head_dim)) is not None:
        n_heads, ffn = found
    else:
        raise ModelError(f"{where}: cannot tell attention heads / MLP width from the weights; "
                         "put the model's config.json beside it")
    dtype = _KV_DTYPE_NAME.get(io.kv_dtype)
    if dtype is None:
        raise ModelError(f"{where}: KV cache element type {io.kv_dtype.__name__} is not supported")
    geometry = ModelGeometry(
        architecture=str(config.get("model_type", "unknown")),
        n_layers=n_layers, hidden_size=hidden, n_heads=n_heads, n_kv_heads=n_kv_heads, head_dim=head_dim,
        vocab_size=vocab, intermediate_size=ffn, n_params=n_params, dtype=dtype,
        tied_embeddings=bool(config.get("tie_word_embeddings", tied)),
    )
    table = None if embedding is None else np.ascontiguousarray(embedding, dtype=np.float32)
    return geometry, table


def _load_onnx(model_path: Path) -> onnx.ModelProto:
    if not model_path.is_file():
        raise ModelError(f"{model_path}: model file missing")
    try:
        return onnx.load(str(model_path))
    except Exception as exc:  # protobuf DecodeError, missing external data, truncated file …
        raise ModelError(f"{model_path}: not a readable ONNX model ({type(exc).__name__})") from exc


# ---------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------


class OnnxCausalLM:
    """One loaded model: an onnxruntime session, its tokenizer, geometry and the input-embedding table.

    Every call is pure (cache in, new cache out); the object holds no per-sequence state, so one
    instance serves all the nodes and requests of a simulation.
    """

    def __init__(self, *, name: str, session: ort.InferenceSession, io: GraphIO, geometry: ModelGeometry,
                 tokenizer: Tokenizer, sha256: str, manifest: Manifest | None,
                 embedding: np.ndarray | None, model_dir: Path, threads: int) -> None:
        self.name = name
        self.session = session
        self.io = io
        self.geometry = geometry
        self.tokenizer = tokenizer
        self.sha256 = sha256
        self.manifest = manifest
        self.model_dir = model_dir
        self.threads = threads
        self._embedding = embedding
        self._empty = KVCache.empty(geometry.n_layers, geometry.n_kv_heads, geometry.head_dim, io.kv_dtype)
        self._cache_branch = np.array([True])

    # -- loading ---------------------------------------------------------------------------------

    @classmethod
    def load(cls, model_dir: Path, *, threads: int = 1, name: str | None = None) -> OnnxCausalLM:
        """Load and check a model directory. Each failure is one ModelError line: a missing file, a hash
        that disagrees with `model.yaml`, a graph that is not the Optimum layout, a tokenizer whose
        vocabulary does not fit the logits."""
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise ModelError(f"{model_dir}: no such model directory")
        manifest = read_manifest(model_dir) if (model_dir / MANIFEST_FILE).is_file() else None
        files = _model_files(model_dir, manifest)
        for role in ("model", "tokenizer"):
            if not files[role].is_file():
                raise ModelError(f"{model_dir}: {role} file {files[role].name} missing")
        hashes = {path.name: sha256_file(path) for path in files.values() if path.is_file()}
        if manifest is not None:
            for file_name, expected in manifest.sha256.items():
                if file_name not in hashes:
                    raise ModelError(f"{model_dir}: {file_name} listed in {MANIFEST_FILE} is missing")
                if hashes[file_name] != expected:
                    raise ModelError(f"{model_dir / file_name}: sha256 {hashes[file_name][:12]}… does not "
                                     f"match {MANIFEST_FILE} ({expected[:12]}…); file corrupt or replaced")
        config = _read_config(files["config"])
        model_path = files["model"]
        graph_model = _load_onnx(model_path)
        io = read_graph_io(graph_model.graph, model_path)
        geometry, embedding = _geometry(graph_model, io, config, model_path)
        del graph_model
        if manifest is not None:
            geometry = _reconcile(manifest.geometry, geometry, model_dir)
        tokenizer = Tokenizer.from_file(files["tokenizer"], eos_id=_config_id(config, "eos_token_id"),
                                        bos_id=_config_id(config, "bos_token_id"))
        slack = geometry.vocab_size - tokenizer.vocab_size
        if not 0 <= slack <= _VOCAB_PADDING_SLACK:
            raise ModelError(f"{files['tokenizer']}: tokenizer has {tokenizer.vocab_size} tokens but the "
                             f"model has {geometry.vocab_size} logits; wrong tokenizer for this model")
        session = cpu_session(model_path, threads)
        return cls(name=name or (manifest.name if manifest else model_dir.name), session=session, io=io,
                   geometry=geometry, tokenizer=tokenizer, sha256=hashes[model_path.name], manifest=manifest,
                   embedding=embedding, model_dir=model_dir, threads=threads)

    # -- calls -----------------------------------------------------------------------------------

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.io.has_cache_branch:
            feeds["use_cache_branch"] = self._cache_branch
        return self.session.run(None, feeds)

    def empty_cache(self) -> KVCache:
        return self._empty

    def prefill(self, ids: Sequence[int]) -> tuple[np.ndarray, KVCache]:
        """Logits (T, V) float32 for every position of `ids`, and the cache of all T tokens."""
        return self.verify(ids, self._empty)

    def decode(self, token: int, cache: KVCache) -> tuple[np.ndarray, KVCache]:
        """One token on top of `cache`: logits (V,) and the cache one token longer."""
        past_len = cache.layers[0][0].shape[2]
        feeds = dict(zip(self.io.past_names, cache.flat(), strict=True))
        feeds["input_ids"] = np.array([[token]], dtype=self.io.ids_dtype)
        feeds["attention_mask"] = np.ones((1, past_len + 1), dtype=self.io.mask_dtype)
        if self.io.has_position_ids:
            feeds["position_ids"] = np.array([[past_len]], dtype=np.int64)
        out = self._run(feeds)
        return out[0][0, 0], KVCache.from_present(out[1:])

    def verify(self, tokens: Sequence[int], cache: KVCache) -> tuple[np.ndarray, KVCache]:
        """k tokens on top of `cache` in one call: logits (k, V), row i the next-token logits after
        tokens[:i+1] — what speculative decoding checks its drafts against — and the cache k longer."""
        n_new = len(tokens)
        if n_new == 0:
            raise ValueError("verify needs at least one token")
        past_len = cache.length
        feeds = dict(zip(self.io.past_names, cache.flat(), strict=True))
        feeds["input_ids"] = np.asarray(tokens, dtype=self.io.ids_dtype).reshape(1, n_new)
        feeds["attention_mask"] = np.ones((1, past_len + n_new), dtype=self.io.mask_dtype)
        if self.io.has_position_ids:
            feeds["position_ids"] = np.arange(past_len, past_len + n_new, dtype=np.int64).reshape(1, n_new)
        out = self._run(feeds)
        return out[0][0], KVCache.from_present(out[1:])

    def decode_batch(self, tokens: Sequence[int],
                     caches: Sequence[KVCache]) -> tuple[np.ndarray, list[KVCache]]:
        """One token for each of several sequences in one call: logits (B, V) and B new caches.

        Caches of different lengths are left-padded with zeros that the attention mask hides, and each
        sequence gets its own position. Graphs without a `position_ids` input derive positions from the
        padded length, so for them only caches of equal length share a call (the others run in groups).
        """
        if len(tokens) != len(caches) or not tokens:
            raise ValueError(f"decode_batch: {len(tokens)} tokens for {len(caches)} caches")
        lengths = [c.length for c in caches]
        if not self.io.has_position_ids and len(set(lengths)) > 1:
            return self._decode_groups(tokens, caches, lengths)
        batch, width = len(tokens), max(lengths)
        mask = np.zeros((batch, width + 1), dtype=self.io.mask_dtype)
        past: list[np.ndarray] = []
        for slot in range(2 * self.geometry.n_layers):
            layer, kind = divmod(slot, 2)
            first = caches[0].layers[layer][kind]
            stacked = np.zeros((batch, first.shape[1], width, first.shape[3]), dtype=first.dtype)
            for row, cache in enumerate(caches):
                # (1, kv_heads, T_row, head_dim) → right-aligned in (B, kv_heads, width, head_dim)
                stacked[row, :, width - lengths[row]:] = cache.layers[layer][kind][0]
            past.append(stacked)
        for row, length in enumerate(lengths):
            mask[row, width - length:] = 1
        feeds = dict(zip(self.io.past_names, past, strict=True))
        feeds["input_ids"] = np.asarray(tokens, dtype=self.io.ids_dtype).reshape(batch, 1)
        feeds["attention_mask"] = mask
        if self.io.has_position_ids:
            feeds["position_ids"] = np.asarray(lengths, dtype=np.int64).reshape(batch, 1)
        out = self._run(feeds)
        new_caches = []
        for row, length in enumerate(lengths):
            # drop the row's left padding: keep its last length + 1 positions
            kept = [a[row:row + 1, :, width - length:] for a in out[1:]]
            new_caches.append(KVCache.from_present(kept))
        return out[0][:, -1], new_caches

    def _decode_groups(self, tokens: Sequence[int], caches: Sequence[KVCache],
                       lengths: list[int]) -> tuple[np.ndarray, list[KVCache]]:
        logits = np.empty((len(tokens), self.geometry.vocab_size), dtype=np.float32)
        new_caches: list[KVCache | None] = [None] * len(tokens)
        for length in sorted(set(lengths)):
            rows = [i for i, n in enumerate(lengths) if n == length]
            group_logits, group_caches = self.decode_batch([tokens[i] for i in rows],
                                                           [caches[i] for i in rows])
            logits[rows] = group_logits
            for i, cache in zip(rows, group_caches, strict=True):
                new_caches[i] = cache
        return logits, [c for c in new_caches if c is not None]

    def embed(self, ids: Sequence[int]) -> np.ndarray:
        """Input-embedding rows (n, hidden) float32 of `ids`, read from the graph's embedding table."""
        if self._embedding is None:
            raise ModelError(f"{self.name}: the graph has no input-embedding table netsim can read")
        return self._embedding[np.asarray(ids, dtype=np.int64)]

    def __repr__(self) -> str:
        g = self.geometry
        return (f"OnnxCausalLM({self.name!r}, {g.architecture}, {g.n_params / 1e6:.1f}M params, "
                f"{g.n_layers} layers, vocab {g.vocab_size}, {self.threads} thread(s))")


# ---------------------------------------------------------------------------------------------------
# Loading helpers
# ---------------------------------------------------------------------------------------------------


def _model_files(model_dir: Path, manifest: Manifest | None) -> dict[str, Path]:
    if manifest is not None:
        files = {role: model_dir / file_name for role, file_name in manifest.files.items()}
        files.setdefault("config", model_dir / CONFIG_FILE)
        return files
    model = model_dir / MODEL_FILE
    if not model.is_file():
        model = next((model_dir / f for f in OTHER_MODEL_FILES if (model_dir / f).is_file()), model)
    return {"model": model, "tokenizer": model_dir / TOKENIZER_FILE, "config": model_dir / CONFIG_FILE}


def _read_config(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: not valid JSON") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    # multimodal / nested configs keep the decoder's numbers under text_config
    return {**data.get("text_config", {}), **data} if isinstance(data.get("text_config"), dict) else data


def _config_id(config: dict, key: str) -> int | None:
    value = config.get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, int) else None


def _reconcile(declared: ModelGeometry, read: ModelGeometry, model_dir: Path) -> ModelGeometry:
    """The manifest's geometry is kept (its n_params is the exporter's exact count) but must agree with
    the graph on every number the graph states."""
    checked = ("n_layers", "n_kv_heads", "head_dim", "vocab_size", "hidden_size")
    wrong = [f"{k} {getattr(declared, k)} vs graph {getattr(read, k)}" for k in checked
             if getattr(declared, k) != getattr(read, k)]
    if wrong:
        raise ModelError(f"{model_dir / MANIFEST_FILE}: geometry disagrees with the ONNX graph ({wrong[0]})")
    return declared


def cpu_session(model_path: Path, threads: int) -> ort.InferenceSession:
    """One onnxruntime CPU session, sequential, `threads` intra-op threads (models and fusers alike);
    a file onnxruntime cannot load is one ModelError line."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        first_line = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ModelError(f"{model_path}: onnxruntime cannot load it ({first_line})") from exc
