"""Cost cards: the geometry of real public models, so a run can charge bytes and compute *as* one.

A node may produce its tokens with a small bundled model while its weights, KV cache and FLOPs are
charged as, say, Qwen3-0.6B (`charged_as: qwen3-0.6b` in a scenario). A card is only numbers —
`models/cards/<name>.yaml` holds `{name, source, geometry}` — and every number comes from the public
model's config.json; `source` says which. Reports name the card whenever one is in use.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from netsim.errors import ModelError
from netsim.lm.geometry import ModelGeometry
from netsim.paths import PROJECT_ROOT


def cards_dir() -> Path:
    return PROJECT_ROOT / "models" / "cards"


class Card(BaseModel):
    """One public model's geometry and where its numbers come from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    source: str = Field(min_length=1, description="where the numbers come from")
    geometry: ModelGeometry


def list_cards(directory: Path | None = None) -> list[str]:
    """Card names, sorted."""
    directory = directory or cards_dir()
    return sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []


def read_card(name: str, directory: Path | None = None) -> Card:
    """The card `name`; an unknown name or a malformed file is a one-line ModelError."""
    directory = directory or cards_dir()
    path = directory / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(list_cards(directory)) or "none"
        raise ModelError(f"unknown cost card {name!r} (known: {known})")
    try:
        card = Card.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as exc:
        raise ModelError(f"{path}: not valid YAML") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ModelError(f"{path}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from exc
    if card.name != name:
        raise ModelError(f"{path}: card says name {card.name!r}, file is named {name!r}")
    return card


def load_card(name: str, directory: Path | None = None) -> ModelGeometry:
    """Geometry of the card `name` (what `charged_as: NAME` charges)."""
    return read_card(name, directory).geometry
