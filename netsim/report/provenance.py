"""Where a result's numbers come from: netsim version, model hashes, cost cards, tokenizers, profiles.

The run dirs record the netsim version (summary.json), the model files' sha256 (`provenance:` of
scenario.resolved.yaml), which node kinds ran which model billed as which cost card (`models`) and which
tokenizer counted the tokens (`token_accounting`). Device profiles and cost cards are recorded by name
only, so their numbers and sources are read from the installed netsim's data when the report is drawn;
the page says so. A profile number whose source begins with "derived" was computed or fitted rather than
measured or read off a data sheet (device_profiles/*.yaml, docs/hardware.md), and is marked as such.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from netsim.errors import InputError
from netsim.report.load import RunData

_SI = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "µ"),
       (1e-9, "n"))
_FIELD_UNITS = (("_bytes_per_s", "B/s"), ("_bytes", "B"), ("_s", "s"), ("_w", "W"), ("_j_per_bit", "J/bit"))


@dataclass(frozen=True)
class ProfileNumber:
    field: str
    value: str
    source: str

    @property
    def derived(self) -> bool:
        return self.source.strip().lower().startswith("derived")


@dataclass(frozen=True)
class ProfileInfo:
    name: str
    description: str = ""
    runtime: str = ""
    numbers: tuple[ProfileNumber, ...] = ()
    problem: str | None = None
    """why the profile could not be read now (renamed, a path that no longer exists)"""


@dataclass(frozen=True)
class CardInfo:
    name: str
    source: str = ""
    geometry: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None


@dataclass(frozen=True)
class Provenance:
    netsim_versions: tuple[str, ...]
    model_hashes: tuple[tuple[str, str], ...]
    """(model, sha256), one row per distinct pair"""
    nodes: tuple[dict[str, Any], ...]
    """summary.json `models` rows: role, profile, model, charged_as, n_nodes (distinct over the runs)"""
    token_accounting: tuple[dict[str, Any], ...]
    """one row per (model, card): tokenizer_vocab, card_vocab, chars_per_token min and max over runs"""
    profiles: tuple[ProfileInfo, ...]
    cards: tuple[CardInfo, ...]


def provenance(runs: Iterable[RunData], extra_versions: Iterable[str] = ()) -> Provenance:
    runs = list(runs)
    versions = {str(v) for v in extra_versions}
    hashes: dict[tuple[str, str], None] = {}
    nodes: dict[tuple[Any, ...], dict[str, Any]] = {}
    accounting: dict[tuple[Any, ...], dict[str, Any]] = {}
    for run in runs:
        if "netsim_version" in run.summary:
            versions.add(str(run.summary["netsim_version"]))
        prov = (run.resolved or {}).get("provenance") or {}
        if isinstance(prov, dict):
            if prov.get("netsim_version"):
                versions.add(str(prov["netsim_version"]))
            for model, sha in (prov.get("models") or {}).items():
                hashes[(str(model), str(sha))] = None
        for row in _rows(run.summary.get("models")):
            key = tuple(row.get(k) for k in ("role", "profile", "model", "charged_as", "n_nodes"))
            nodes.setdefault(key, row)
        for row in _rows(run.summary.get("token_accounting")):
            key = tuple(row.get(k) for k in ("model", "tokenizer_vocab", "charged_as", "card_vocab"))
            cpt = row.get("chars_per_token")
            seen = accounting.setdefault(key, {**{k: row.get(k) for k in ("model", "tokenizer_vocab",
                                                                          "charged_as", "card_vocab")},
                                               "chars_per_token_min": cpt, "chars_per_token_max": cpt,
                                               "runs": 0, "policies": []})
            seen["runs"] += 1
            if isinstance(cpt, int | float):
                seen["chars_per_token_min"] = _min(seen["chars_per_token_min"], cpt)
                seen["chars_per_token_max"] = _max(seen["chars_per_token_max"], cpt)
            policy = run.summary.get("policy")
            if policy and policy not in seen["policies"]:
                seen["policies"].append(policy)
    profiles = sorted({str(r["profile"]) for r in nodes.values() if r.get("profile")})
    cards = sorted({str(r["charged_as"]) for r in nodes.values() if r.get("charged_as")}
                   | {str(r["charged_as"]) for r in accounting.values() if r.get("charged_as")})
    return Provenance(tuple(sorted(versions)), tuple(sorted(hashes)), tuple(nodes.values()),
                      tuple(accounting.values()), tuple(profile_info(p) for p in profiles),
                      tuple(card_info(c) for c in cards))


def profile_info(name: str) -> ProfileInfo:
    """Every number of a profile with its source, read from the installed netsim's profiles."""
    from netsim.hardware.profile import load_profile

    try:
        p = load_profile(name)
    except (InputError, OSError) as exc:
        return ProfileInfo(name, problem=str(exc))
    numbers: list[ProfileNumber] = []
    for key, source in p.sources.items():
        if key.startswith("peak_flops."):
            dtype = key.split(".", 1)[1]
            value = _si(p.peak_flops[dtype], "OP/s" if dtype.startswith("int") else "FLOP/s")  # type: ignore[index]
        else:
            raw = getattr(p, key, None)
            value = "–" if raw is None else _si(float(raw), _unit(key))
        numbers.append(ProfileNumber(key, value, source))
    return ProfileInfo(p.name, p.description, p.runtime, tuple(numbers))


def card_info(name: str) -> CardInfo:
    from netsim.lm.cards import read_card

    try:
        card = read_card(name)
    except (InputError, OSError) as exc:
        return CardInfo(name, problem=str(exc))
    g = card.geometry
    geometry = {"architecture": g.architecture, "layers": g.n_layers, "hidden": g.hidden_size,
                "heads": g.n_heads, "kv heads": g.n_kv_heads, "head dim": g.head_dim, "vocab": g.vocab_size,
                "params": g.n_params, "dtype": g.dtype, "KV bytes/token": g.kv_bytes_per_token}
    return CardInfo(card.name, card.source, geometry)


def _rows(value: Any) -> list[dict[str, Any]]:
    return [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []


def _min(a: Any, b: float) -> float:
    return b if not isinstance(a, int | float) else min(a, b)


def _max(a: Any, b: float) -> float:
    return b if not isinstance(a, int | float) else max(a, b)


def _unit(key: str) -> str:
    if key.startswith("eta_"):
        return ""
    return next((unit for suffix, unit in _FIELD_UNITS if key.endswith(suffix)), "")


def _si(value: float, unit: str) -> str:
    if not unit:
        return f"{value:.4g}"
    if unit == "B" and value >= 2**30:
        return f"{value / 2**30:.4g} GiB"  # memory sizes read as they are sold
    for factor, prefix in _SI:
        if abs(value) >= factor:
            return f"{value / factor:.4g} {prefix}{unit}"
    return f"{value:.4g} {unit}"
