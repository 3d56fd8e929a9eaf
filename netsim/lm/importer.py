"""Bring an outside model into the model store: a GGUF file, a Hugging Face directory or an ONNX directory.

Every source ends as the same thing — an Optimum-layout ONNX directory with `tokenizer.json` and a
`model.yaml` — under `cache_dir()/models/<name>/`, where `netsim.paths.models_dirs()` finds it. GGUF and
HF weights go through `export_causal_lm`, so they are checked against torch like every netsim export; an
ONNX directory is copied as-is and must load and run in `OnnxCausalLM` before it is accepted.

The directory is assembled beside its final place and renamed into it only when complete, so a failed
import never leaves a half-written model that the store would later find.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import yaml

from netsim.errors import ModelError
from netsim.lm.manifest import Manifest, sha256_file, write_manifest
from netsim.lm.onnx_lm import CONFIG_FILE, MODEL_FILE, OTHER_MODEL_FILES, TOKENIZER_FILE, OnnxCausalLM
from netsim.paths import cache_dir, staged_dir

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_HF_WEIGHTS = ("*.safetensors", "pytorch_model*.bin")


def import_model(path: Path, name: str | None = None, out_root: Path | None = None, *,
                 force: bool = False) -> Path:
    """Import `path` as model `name` (default: from the file or directory name) into
    `out_root/<name>/` (default `cache_dir()/models`); returns that directory.

    An existing model of that name is an error unless `force`, which replaces it.
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file or directory")
    convert = _converter(path)
    name = name or default_name(path)
    if not _NAME.match(name):
        raise ModelError(f"model name {name!r}: use lowercase letters, digits, '.', '_' and '-'")
    out_root = Path(out_root) if out_root is not None else cache_dir() / "models"
    target = out_root / name
    if target.exists() and not force:
        raise ModelError(f"{target}: a model named {name!r} exists; remove it or pass --force")
    with staged_dir(target, replace=force) as staging:
        convert(path, staging, name)
    return target


def default_name(path: Path) -> str:
    """`SmolLM2-135M-Instruct.Q4_1.gguf` → `smollm2-135m-instruct.q4_1`."""
    stem = path.stem if path.suffix.lower() == ".gguf" else path.name
    return re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._") or "model"


def _converter(path: Path) -> Callable[[Path, Path, str], None]:
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return _from_gguf
        raise ModelError(f"{path}: expected a .gguf file or a model directory")
    if (path / MODEL_FILE).is_file() or any((path / f).is_file() for f in OTHER_MODEL_FILES):
        return _from_onnx_dir
    if (path / CONFIG_FILE).is_file() and any(next(path.glob(p), None) for p in _HF_WEIGHTS):
        return _from_hf_dir
    raise ModelError(f"{path}: not a model directory (no {MODEL_FILE}, and no {CONFIG_FILE} with "
                     "safetensors weights)")


# ---------------------------------------------------------------------------------------------------
# Sources that carry torch weights: load with transformers, export like any netsim model
# ---------------------------------------------------------------------------------------------------


def load_gguf(path: Path) -> tuple[Any, Any, dict[str, Any]]:
    """(transformers model in float32, its tokenizer, the GGUF's `general.*` metadata) from a GGUF file.

    transformers dequantises the weights and undoes llama.cpp's rotary row order; the tokenizer is
    rebuilt from the vocabulary and merges stored in the GGUF metadata.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer  # train extra; the runtime never needs it

    metadata = gguf_metadata(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True,
                                                     dtype="float32")
    except Exception as exc:  # transformers and gguf raise many types for an unreadable file
        raise ModelError(f"{path}: cannot load this GGUF ({_first_line(exc)})") from exc
    # The weights are plain float32 now; a leftover quantization_config would mislead any later reader.
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    return model.eval(), tokenizer, metadata


def write_tokenizer_json(tokenizer: Any, path: Path) -> None:
    """Save a transformers tokenizer in the tokenizers-library form netsim loads (`tokenizer.json`)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelError(f"{type(tokenizer).__name__}: no tokenizers-library form to write as {path.name}")
    backend.save(str(path))


def _from_gguf(path: Path, out_dir: Path, name: str) -> None:
    model, tokenizer, metadata = load_gguf(path)
    provenance = {
        "imported_from": "gguf", "source_file": path.name, "source_sha256": sha256_file(path),
        "source_name": metadata.get("general.name"), "source_file_type": metadata.get("general.file_type"),
        "note": "weights dequantised to float32 by transformers; ONNX computes in float32",
    }
    _export(model, tokenizer, out_dir, name=name, license=str(metadata.get("general.license", "unknown")),
            description=f"{metadata.get('general.name', path.stem)} (imported from {path.name})",
            provenance=provenance)


def _from_hf_dir(path: Path, out_dir: Path, name: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype="float32")
    except Exception as exc:
        raise ModelError(f"{path}: cannot load this Hugging Face model ({_first_line(exc)})") from exc
    provenance = {"imported_from": "huggingface", "source_dir": path.name,
                  "source_sha256": {p.name: sha256_file(p) for p in sorted(path.iterdir()) if p.is_file()}}
    _export(model, tokenizer, out_dir, name=name, license=_readme_license(path),
            description=f"{path.name} (imported Hugging Face model)", provenance=provenance)


def _export(model: Any, tokenizer: Any, out_dir: Path, *, name: str, license: str, description: str,
            provenance: dict[str, Any]) -> None:
    from netsim.lm.export import export_causal_lm

    with tempfile.TemporaryDirectory() as scratch:
        tokenizer_json = Path(scratch) / TOKENIZER_FILE
        write_tokenizer_json(tokenizer, tokenizer_json)
        export_causal_lm(model, out_dir, tokenizer_json=tokenizer_json, name=name, role="any",
                         description=description, license=license, provenance=provenance)


# ---------------------------------------------------------------------------------------------------
# An ONNX directory already in the layout: copy, then prove it loads and runs
# ---------------------------------------------------------------------------------------------------


def _from_onnx_dir(path: Path, out_dir: Path, name: str) -> None:
    model_path = path / MODEL_FILE
    if not model_path.is_file():
        model_path = next(path / f for f in OTHER_MODEL_FILES if (path / f).is_file())
    if not (path / TOKENIZER_FILE).is_file():
        raise ModelError(f"{path}: {TOKENIZER_FILE} missing")
    try:
        graph = onnx.load(str(model_path), load_external_data=False).graph
    except Exception as exc:
        raise ModelError(f"{model_path}: not a readable ONNX model ({type(exc).__name__})") from exc
    data_files = sorted({entry.value for init in graph.initializer for entry in init.external_data
                         if entry.key == "location"})
    for file_name in [model_path.name, *data_files, TOKENIZER_FILE, CONFIG_FILE]:
        if (path / file_name).is_file():
            shutil.copyfile(path / file_name, out_dir / file_name)
        elif file_name in data_files:
            raise ModelError(f"{path}: external weights file {file_name} missing")

    # Load without a manifest first: this reads the geometry from the graph (with config.json, if any)
    # and checks layout and tokenizer; one prefill proves the graph runs.
    lm = OnnxCausalLM.load(out_dir, name=name)
    lm.prefill(lm.tokenizer.encode("To be, or not to be") or [0])
    files = {"model": model_path.name, "tokenizer": TOKENIZER_FILE}
    if (out_dir / CONFIG_FILE).is_file():
        files["config"] = CONFIG_FILE
    # External weights are files of the model too, so loading checks their hashes as well.
    files |= {("model_data" if k == 0 else f"model_data_{k}"): f for k, f in enumerate(data_files)}
    hashed = list(files.values())
    manifest = Manifest(
        name=name, role="any", description=f"{path.name} (imported ONNX directory)",
        architecture=lm.geometry.architecture, files=files,
        sha256={f: sha256_file(out_dir / f) for f in hashed},
        geometry=lm.geometry, weights_storage_dtype=_storage_dtype(graph),
        license=_readme_license(path),
        provenance={"imported_from": "onnx", "source_dir": path.name},
    )
    write_manifest(out_dir, manifest)


def _storage_dtype(graph: onnx.GraphProto) -> str:
    """The float type holding most of the initializer elements."""
    names = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
             onnx.TensorProto.BFLOAT16: "bfloat16"}
    totals: dict[str, int] = {}
    for init in graph.initializer:
        if init.data_type in names:
            totals[names[init.data_type]] = totals.get(names[init.data_type], 0) + int(np.prod(init.dims))
    return max(totals, key=totals.__getitem__) if totals else "float32"


# ---------------------------------------------------------------------------------------------------
# Metadata
# ---------------------------------------------------------------------------------------------------


def gguf_metadata(path: Path) -> dict[str, Any]:
    """The `general.*` key-value pairs of a GGUF file (name, license, file type …)."""
    from gguf import GGUFReader

    try:
        fields = GGUFReader(path).fields
    except Exception as exc:
        raise ModelError(f"{path}: not a readable GGUF file ({_first_line(exc)})") from exc
    out: dict[str, Any] = {}
    for key, field in fields.items():
        if key.startswith("general."):
            value = field.contents()
            out[key] = value if isinstance(value, str | int | float | bool) else json.dumps(value)
    return out


def _readme_license(path: Path) -> str:
    """The `license:` of a model card's YAML front matter, as the Hugging Face hub writes it."""
    readme = path / "README.md"
    if not readme.is_file():
        return "unknown"
    text = readme.read_text(encoding="utf-8", errors="replace")
    if not text.startswith("---"):
        return "unknown"
    front = text.split("---", 2)[1]
    try:
        data = yaml.safe_load(front)
    except yaml.YAMLError:
        return "unknown"
    return str(data.get("license", "unknown")) if isinstance(data, dict) else "unknown"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0][:200] if text else "") or type(exc).__name__
