"""Cost cards: the geometry of real public models, so a run can charge bytes and compute *as* one.

A node may produce its tokens with a small bundled model while its weights, KV cache and FLOPs are
charged as, say, Qwen3-0.6B (`charged_as: qwen3-0.6b` in a scenario). A card is only numbers —
`models/cards/<name>.yaml` holds `{name, source, geometry}` — and every number comes from the public
model's config.json; `source` says which. Reports name the card whenever one is in use. A user bills a
model the zoo has no card for by giving `charged_as` the path of their own card file instead of a name.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from netsim.errors import InputError, ModelError
from netsim.inputfile import load_yaml, show_loc, show_path
from netsim.lm.geometry import ModelGeometry
from netsim.paths import cards_dir, is_file_reference

__all__ = ["Card", "cards_dir", "list_cards", "load_card", "read_card"]


class Card(BaseModel):
    """One public model's geometry and where its numbers come from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    source: str = Field(min_length=1, description="where the numbers come from")
    geometry: ModelGeometry


_CARD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A bundled card's name (a file stem in cards_dir()); anything else cannot name one."""


def list_cards(directory: Path | None = None) -> list[str]:
    """Card names, sorted."""
    directory = directory or cards_dir()
    return sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []


def read_card(name: str, directory: Path | None = None) -> Card:
    """The bundled card `name`, or the card file `name` names (see `is_file_reference`).

    A bundled card must carry its file's name, since the name is how scenarios find it; a card given
    by path is found by its path, so its `name:` is free. Every failure is a one-line ModelError that
    says "cost card", which the scenario check relies on to blame `charged_as` rather than the model.
    """
    if is_file_reference(name):
        return _read(Path(name))
    directory = directory or cards_dir()
    path = directory / f"{name}.yaml"
    if not (_CARD_NAME.fullmatch(name) and path.is_file()):  # a 10,000-character name never reaches stat()
        known = ", ".join(list_cards(directory)) or "none"
        raise ModelError(f"unknown cost card {show_path(name, 60)!r} (known: {known})")
    card = _read(path)
    if card.name != name:
        raise ModelError(f"cost card {show_path(path)}: card says name {card.name!r}, file is named {name!r}")
    return card


def _read(path: Path) -> Card:
    try:
        data = load_yaml(path, "cost card")  # a missing file, a FIFO, bad YAML: one line naming the file
    except InputError as exc:
        raise ModelError(str(exc)) from None
    try:
        return Card.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ModelError(f"cost card {show_path(path)}: {show_loc(first['loc']) or 'card'}: "
                         f"{first['msg']}") from None


def load_card(name: str, directory: Path | None = None) -> ModelGeometry:
    """Geometry of the card `name` (what `charged_as: NAME` charges); a name or a card file's path."""
    return read_card(name, directory).geometry
