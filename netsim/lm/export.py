"""Export a transformers causal LM to netsim's runtime format: ONNX in the Hugging Face Optimum layout.

The layout (inputs `input_ids`, `attention_mask`, `position_ids`, `past_key_values.{i}.key/value`;
outputs `logits`, `present.{i}.key/value`) is the one `optimum-cli export onnx --task
text-generation-with-past` writes, so models exported elsewhere load unchanged. One graph serves prefill
(past of length 0), single-token decode, multi-token verify and batched decode.

Why the legacy tracer (`dynamo=False`): with torch 2.13 / transformers 5.23 it exports Llama, Qwen2 and
Qwen3 in well under a second and matches torch to ~1e-6 (DESIGN.md "Models"). Every export is checked
against torch before a manifest is written, so a tracer that baked in a wrong branch fails here, not in a
simulation. This module needs the `train` extra (torch, transformers); the runtime never imports it.
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer as HfTokenizer
from transformers import DynamicCache, PretrainedConfig, PreTrainedModel

from netsim.errors import ModelError
from netsim.lm.geometry import ModelGeometry
from netsim.lm.manifest import Manifest, sha256_file, write_manifest
from netsim.lm.onnx_lm import CONFIG_FILE, MODEL_FILE, TOKENIZER_FILE, geometry_from_onnx

OPSET = 17

ROLES = ("slm", "llm", "any")
GRAPH_STATED = ("n_layers", "hidden_size", "n_kv_heads", "head_dim", "vocab_size")
"""Geometry fields the ONNX graph fixes by itself (shapes of the cache, logits and embedding)."""
FP16_MIN_ELEMENTS = 1024
"""Initializers at least this large are stored as float16 (norm gains and the like stay float32)."""


# ---------------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------------


def _head_dim(config: PretrainedConfig) -> int:
    head_dim = getattr(config, "head_dim", None)
    return int(head_dim) if head_dim else config.hidden_size // config.num_attention_heads


def count_params(config: PretrainedConfig) -> int:
    """Parameter count of a Llama/Qwen2/Qwen3 decoder from its config (tied embeddings counted once).

    Per layer: q/k/v/o projections, Qwen2's q/k/v biases, Qwen3's per-head q/k RMSNorm gains, the gated
    MLP (gate, up, down) and two RMSNorm gains; plus the embedding, the final norm and an untied head.
    """
    model_type = config.model_type
    if model_type not in ("llama", "qwen2", "qwen3"):
        raise ModelError(f"no parameter formula for architecture {model_type!r}; pass n_params")
    hidden, inter = config.hidden_size, config.intermediate_size
    q_dim = config.num_attention_heads * _head_dim(config)
    kv_dim = config.num_key_value_heads * _head_dim(config)
    attention = hidden * q_dim + 2 * hidden * kv_dim + q_dim * hidden
    if model_type == "qwen2":
        attention += q_dim + 2 * kv_dim
    elif getattr(config, "attention_bias", False):
        attention += q_dim + 2 * kv_dim + hidden
    if model_type == "qwen3":
        attention += 2 * _head_dim(config)
    mlp = 3 * hidden * inter + (2 * inter + hidden if getattr(config, "mlp_bias", False) else 0)
    per_layer = attention + mlp + 2 * hidden
    embedding = config.vocab_size * hidden
    head = 0 if config.tie_word_embeddings else config.vocab_size * hidden
    return embedding + config.num_hidden_layers * per_layer + hidden + head


def geometry_from_config(config: PretrainedConfig, n_params: int | None = None) -> ModelGeometry:
    """ModelGeometry of a HF decoder config; `n_params` defaults to the closed form of `count_params`.

    Weights and KV cache are charged as float32: netsim computes in float32 whatever the storage dtype.
    """
    return ModelGeometry(
        architecture=config.model_type,
        n_layers=config.num_hidden_layers,
        hidden_size=config.hidden_size,
        n_heads=config.num_attention_heads,
        n_kv_heads=config.num_key_value_heads,
        head_dim=_head_dim(config),
        vocab_size=config.vocab_size,
        intermediate_size=config.intermediate_size,
        n_params=count_params(config) if n_params is None else n_params,
        dtype="float32",
        tied_embeddings=bool(config.tie_word_embeddings),
    )


# ---------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------


class _OptimumSignature(torch.nn.Module):
    """Flat tensors in and out, in the Optimum order, around a HF model that wants a Cache object."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model
        self.n_layers = model.config.num_hidden_layers

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        # past[2i], past[2i+1]: layer i key, value, each (batch, kv_heads, past_len, head_dim)
        cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(self.n_layers)])
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True)
        present: list[torch.Tensor] = []
        for layer in out.past_key_values.layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


def io_names(n_layers: int) -> tuple[list[str], list[str]]:
    """Input and output names of the Optimum layout, in graph order."""
    kinds = ("key", "value")
    inputs = ["input_ids", "attention_mask", "position_ids"]
    inputs += [f"past_key_values.{i}.{k}" for i in range(n_layers) for k in kinds]
    outputs = ["logits"] + [f"present.{i}.{k}" for i in range(n_layers) for k in kinds]
    return inputs, outputs


def _dynamic_axes(n_layers: int) -> dict[str, dict[int, str]]:
    inputs, outputs = io_names(n_layers)
    axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch_size", 1: "sequence_length"},
        "attention_mask": {0: "batch_size", 1: "total_sequence_length"},
        "position_ids": {0: "batch_size", 1: "sequence_length"},
        "logits": {0: "batch_size", 1: "sequence_length"},
    }
    axes |= {name: {0: "batch_size", 2: "past_sequence_length"} for name in inputs[3:]}
    axes |= {name: {0: "batch_size", 2: "total_sequence_length"} for name in outputs[1:]}
    return axes


def _trace_inputs(config: PretrainedConfig) -> tuple[torch.Tensor, ...]:
    """Example inputs for the tracer: batch 2, 3 past positions, 5 new ones (all axes > 1, so none is
    specialised to a size the runtime later changes)."""
    batch, past_len, new_len = 2, 3, 5
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, config.vocab_size, (batch, new_len), generator=generator)
    attention_mask = torch.ones(batch, past_len + new_len, dtype=torch.long)
    position_ids = torch.arange(past_len, past_len + new_len).expand(batch, new_len).contiguous()
    shape = (batch, config.num_key_value_heads, past_len, _head_dim(config))
    past = [torch.randn(shape, generator=generator) for _ in range(2 * config.num_hidden_layers)]
    return (input_ids, attention_mask, position_ids, *past)


def _share_transposed_copies(graph: onnx.GraphProto) -> int:
    """Replace an initializer that is the transpose of another by a Transpose node; returns bytes saved.

    Constant folding turns a tied lm_head (logits = h · Eᵀ) into a second, transposed copy of the
    embedding, which would store the largest matrix of a small model twice in the file.
    """
    matrices = {i.name: i for i in graph.initializer if len(i.dims) == 2}
    by_shape: dict[tuple[int, int], list[str]] = {}
    for name, init in matrices.items():
        by_shape.setdefault((init.dims[0], init.dims[1]), []).append(name)
    copies: dict[str, str] = {}  # transposed copy → source it equals
    for (rows, cols), names in by_shape.items():
        for name in names:
            if name in copies or rows == cols:
                continue
            source = numpy_helper.to_array(matrices[name])
            for other in by_shape.get((cols, rows), []):
                if other not in copies and other not in copies.values() and np.array_equal(
                        numpy_helper.to_array(matrices[other]), source.T):
                    copies[other] = name
    if not copies:
        return 0
    kept = [i for i in graph.initializer if i.name not in copies]
    saved_nbytes = sum(numpy_helper.to_array(matrices[c]).nbytes for c in copies)
    transposes = [helper.make_node("Transpose", [source], [copy], perm=[1, 0], name=f"{copy}__transpose")
                  for copy, source in copies.items()]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = [*transposes, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    return saved_nbytes


def _store_fp16(graph: onnx.GraphProto) -> int:
    """Store each large float32 initializer as float16 + Cast(to=float32); returns bytes saved.

    Only initializers that float16 represents exactly are converted, so the graph computes the same
    float32 numbers as before; onnxruntime folds the Casts into float32 constants at session load.
    """
    kept: list[TensorProto] = []
    casts: list[onnx.NodeProto] = []
    saved_nbytes = 0
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < FP16_MIN_ELEMENTS:
            kept.append(init)
            continue
        values = numpy_helper.to_array(init)
        halved = values.astype(np.float16)
        if not np.array_equal(halved.astype(np.float32), values):
            kept.append(init)
            continue
        stored_name = f"{init.name}__fp16"
        kept.append(numpy_helper.from_array(halved, stored_name))
        casts.append(helper.make_node("Cast", [stored_name], [init.name], to=TensorProto.FLOAT,
                                      name=f"{init.name}__to_fp32"))
        saved_nbytes += values.nbytes - halved.nbytes
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = [*casts, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    return saved_nbytes


def _compact(model_path: Path, *, store_fp16: bool) -> dict[str, int]:
    """Shrink the exported file without changing a single computed number; returns bytes saved."""
    model = onnx.load(str(model_path))
    saved = {"transposed_copies_nbytes": _share_transposed_copies(model.graph)}
    if store_fp16:
        saved["fp16_nbytes"] = _store_fp16(model.graph)
    onnx.checker.check_model(model)
    onnx.save(model, str(model_path))
    return saved


def _verify_against_torch(model: PreTrainedModel, model_path: Path, *, seed: int = 0) -> float:
    """Max |Δlogit| between ONNX and torch: a left-padded batch of random sequences, prefill + 2 decodes.

    Padding exercises the attention mask the way batched decode uses it; only positions that attend to
    something are compared (a fully masked query row has no defined output).
    """
    config = model.config
    lengths = (9, 5, 2)
    batch, width = len(lengths), max(lengths)
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(0, config.vocab_size, (batch, width), dtype=np.int64)
    mask = np.zeros((batch, width), dtype=np.int64)
    for row, length in enumerate(lengths):
        mask[row, width - length:] = 1
    session = ort.InferenceSession(str(model_path), _session_options(), providers=["CPUExecutionProvider"])
    in_names, _ = io_names(config.num_hidden_layers)
    kv_shape = (batch, config.num_key_value_heads, 0, _head_dim(config))
    onnx_past = [np.zeros(kv_shape, dtype=np.float32) for _ in range(2 * config.num_hidden_layers)]
    torch_cache: DynamicCache | None = None
    worst = 0.0
    step_ids, valid = input_ids, mask.astype(bool)
    for _step in range(3):  # prefill, then two single-token decodes
        # Positions count only real tokens, as generate() does with left padding.
        position_ids = np.clip(mask.cumsum(axis=1) - 1, 0, None)[:, -step_ids.shape[1]:]
        feeds = dict(zip(in_names, [step_ids, mask, position_ids, *onnx_past], strict=True))
        onnx_out = session.run(None, feeds)
        with torch.no_grad():
            torch_out = model(input_ids=torch.from_numpy(step_ids), attention_mask=torch.from_numpy(mask),
                              position_ids=torch.from_numpy(position_ids), past_key_values=torch_cache,
                              use_cache=True)
        delta = np.abs(onnx_out[0] - torch_out.logits.float().numpy())[valid]
        worst = max(worst, float(delta.max()))
        onnx_past, torch_cache = onnx_out[1:], torch_out.past_key_values
        step_ids = rng.integers(0, config.vocab_size, (batch, 1), dtype=np.int64)
        mask = np.concatenate([mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
        valid = np.ones((batch, 1), dtype=bool)
    return worst


def _session_options() -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return options


def export_causal_lm(
    model: PreTrainedModel,
    out_dir: Path,
    *,
    tokenizer_json: Path,
    name: str,
    role: str,
    description: str,
    license: str,
    provenance: dict[str, Any],
    store_fp16: bool = False,
    max_abs_logit_diff: float = 1e-3,
) -> Manifest:
    """Write `out_dir/{model.onnx, tokenizer.json, config.json, model.yaml}` and return the manifest.

    The ONNX graph is checked against `model` (prefill + 2 decode steps on a padded batch) and the
    export fails if any logit differs by more than `max_abs_logit_diff`; the measured maximum goes into
    `provenance["export"]`. With `store_fp16` the weights must already be float16-representable (call
    `model.half().float()` first) so that the stored model is exactly the torch model.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    config = model.config
    tokenizer_json = Path(tokenizer_json)
    n_tokens = HfTokenizer.from_file(str(tokenizer_json)).get_vocab_size()
    if n_tokens > config.vocab_size:
        raise ModelError(f"{tokenizer_json}: {n_tokens} tokens but the model has {config.vocab_size} logits")
    if store_fp16:
        unrepresentable = [n for n, p in model.named_parameters() if not torch.equal(p, p.half().float())]
        if unrepresentable:
            raise ValueError(f"store_fp16: {unrepresentable[0]} (+{len(unrepresentable) - 1}) not "
                             "float16-representable; call model.half().float() first")
    model = model.eval()
    if any(p.dtype != torch.float32 for p in model.parameters()):
        model = model.float()  # netsim computes in float32 (a GGUF-loaded model is, and refuses .float())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / MODEL_FILE

    started = time.perf_counter()
    in_names, out_names = io_names(config.num_hidden_layers)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python branches; verified below instead
        torch.onnx.export(
            _OptimumSignature(model), _trace_inputs(config), str(model_path),
            input_names=in_names, output_names=out_names,
            dynamic_axes=_dynamic_axes(config.num_hidden_layers), opset_version=OPSET,
            do_constant_folding=True, dynamo=False,
        )
    saved = _compact(model_path, store_fp16=store_fp16)
    export_time_s = time.perf_counter() - started

    # Exact parameter count from torch (a graph sum would merge identical initializers); every number
    # the graph itself states must agree with the config.
    geometry = geometry_from_config(config, n_params=sum(p.numel() for p in model.parameters()))
    read_back = geometry_from_onnx(model_path, config.to_dict())
    wrong = [f"{k} {getattr(read_back, k)} (config {getattr(geometry, k)})" for k in GRAPH_STATED
             if getattr(read_back, k) != getattr(geometry, k)]
    if wrong:
        raise ModelError(f"{model_path}: the exported graph disagrees with the config: {', '.join(wrong)}")

    started = time.perf_counter()
    worst = _verify_against_torch(model, model_path)
    verify_time_s = time.perf_counter() - started
    if not worst <= max_abs_logit_diff:  # also catches NaN
        raise ModelError(f"{model_path}: ONNX differs from torch by {worst:.3g} in a logit "
                         f"(limit {max_abs_logit_diff:g})")

    shutil.copyfile(tokenizer_json, out_dir / TOKENIZER_FILE)
    (out_dir / CONFIG_FILE).write_text(config.to_json_string(use_diff=False), encoding="utf-8")
    files = {"model": MODEL_FILE, "tokenizer": TOKENIZER_FILE, "config": CONFIG_FILE}
    manifest = Manifest(
        name=name, role=role, description=description, architecture=config.model_type, files=files,
        sha256={f: sha256_file(out_dir / f) for f in files.values()},
        geometry=geometry,
        weights_storage_dtype="float16" if store_fp16 else "float32",
        license=license,
        provenance={
            **provenance,
            "export": {
                "tool": f"netsim.lm.export (torch.onnx legacy tracer, opset {OPSET})",
                "torch": torch.__version__, "transformers": transformers.__version__,
                "onnx_vs_torch_max_abs_logit_diff": worst,
                "export_time_s": round(export_time_s, 3), "verify_time_s": round(verify_time_s, 3),
                "bytes_saved": saved,
            },
        },
    )
    write_manifest(out_dir, manifest)
    return manifest
