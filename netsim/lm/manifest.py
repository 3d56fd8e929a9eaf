"""The manifest of a model directory: `<model_dir>/model.yaml`.

A manifest says which files make up a model, what they hash to, what the model costs (its geometry, read
from the ONNX graph by the exporter, never typed by hand) and how it was made. A run records the hashes
as provenance, so a result can always be traced to the exact weights that produced its tokens.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from netsim.errors import InputError, ModelError
from netsim.inputfile import load_yaml, show_loc
from netsim.lm.geometry import ModelGeometry

MANIFEST_FILE = "model.yaml"
"""Name of the manifest inside a model directory."""

_CHUNK_NBYTES = 1 << 20


class Manifest(BaseModel):
    """What a model directory holds and where it came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="name the model store finds the model by")
    role: Literal["slm", "llm", "any"] = Field(description="the part it is meant to play in collaboration")
    description: str
    architecture: str = Field(description="HF model_type of the source model, e.g. llama, qwen3")
    files: dict[str, str] = Field(description='"model", "tokenizer" (and "config") → file name in the dir')
    sha256: dict[str, str] = Field(description="file name → hex sha256 digest")
    geometry: ModelGeometry
    weights_storage_dtype: str = Field(description="dtype the ONNX file stores its float weights in")
    license: str
    provenance: dict[str, Any] = Field(default_factory=dict, description="how the model was made")

    @model_validator(mode="after")
    def _files_are_hashed(self) -> Manifest:
        missing = {"model", "tokenizer"} - set(self.files)
        if missing:
            raise ValueError(f"files lacks {sorted(missing)}")
        unhashed = [f for f in self.files.values() if f not in self.sha256]
        if unhashed:
            raise ValueError(f"no sha256 for {unhashed}")
        return self


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so a 500 MB model does not sit in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK_NBYTES):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(model_dir: Path) -> Manifest:
    """Parse and validate `<model_dir>/model.yaml`; every failure is a one-line ModelError."""
    path = Path(model_dir) / MANIFEST_FILE
    if not os.path.lexists(path):
        raise ModelError(f"{path}: no manifest")
    try:  # a FIFO, an oversized or non-UTF-8 file, bad YAML: one line naming the file, never a hang
        data = load_yaml(path, "model manifest")
    except InputError as exc:
        raise ModelError(str(exc)) from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a mapping at the top level")
    try:
        return Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = show_loc(first["loc"]) or "<root>"  # keys that are no field names are not echoed
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ModelError(f"{path}: {loc}: {first['msg']}{more}") from exc


def write_manifest(model_dir: Path, manifest: Manifest) -> None:
    """Write `<model_dir>/model.yaml` with keys in field order, so diffs of committed manifests stay small."""
    data = manifest.model_dump(mode="json")
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)
    (Path(model_dir) / MANIFEST_FILE).write_text(text, encoding="utf-8")
