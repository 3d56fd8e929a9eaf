"""Inference runtimes as their own profiles: what a runtime achieves on a device, apart from the device.

A device profile (device_profiles/) says what the silicon can do: peak FLOP/s per dtype, memory bandwidth
and size, power, radio. A runtime profile (runtime_profiles/<name>.yaml) says how much of it one inference
runtime gets: the achieved fractions of peak compute and bandwidth (η_c, η_m), a fixed cost per forward
call and per sampled token, the weight formats and KV-cache dtypes it runs — every number with a source.
A node's compute is the device × the runtime (`DeviceProfile.with_runtime`): the roofline of the device
with the runtime's efficiencies for that device.

Efficiencies are measured per (runtime, device) pair, so a runtime lists them by device: under the name
of a bundled device profile (measured there, or borrowed from a calibrated sibling and said so), or under
a device kind (`embedded_gpu`, `datacenter_gpu`, ...) for every device of that kind, or under `default`.
The most specific entry wins: device name, then kind, then default.

A runtime may instead (or also) carry a measured **table** of per-token latencies (Vidur-style, or
"prefill 0.45 ms/token, decode 1.6 ms/token"): a model call is then charged from the table, not from the
roofline (docs/hardware.md, "Table-driven compute").
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from functools import cached_property
from itertools import product
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from scipy.interpolate import RegularGridInterpolator

from netsim.errors import InputError
from netsim.hardware.quant import KvDtype, canonical_format
from netsim.inputfile import read_model, show_path
from netsim.lm.geometry import Dtype
from netsim.paths import is_file_reference, runtimes_dir
from netsim.units import Seconds

__all__ = ["ComputeTable", "Efficiency", "FormatEfficiency", "Phase", "RuntimeProfile", "TablePoint",
           "list_runtimes", "load_runtime"]

Phase = Literal["prefill", "decode", "verify"]
PHASES: tuple[Phase, ...] = ("prefill", "decode", "verify")

_KEY = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
"""A device name, a device kind or `default`: the keys a runtime's `efficiency` is looked up by."""


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def _check_sources(numbers: set[str], sources: dict[str, str]) -> None:
    """Every number set has a non-empty source and every source belongs to a number set."""
    missing = sorted(numbers - sources.keys())
    if missing:
        raise ValueError(f"sources: no source for {', '.join(missing)}")
    unknown = sorted(sources.keys() - numbers)
    if unknown:
        raise ValueError(f"sources: entries for fields that are not set: {', '.join(unknown)}")
    blank = sorted(k for k, v in sources.items() if not v.strip())
    if blank:
        raise ValueError(f"sources: empty source for {', '.join(blank)}")


class FormatEfficiency(_Strict):
    """How a runtime's kernels for one weight format run on a device, where they differ from the entry's:
    a runtime runs each format on its own kernels, which stream or compute at other fractions of the peak
    (llama.cpp's CUDA Q4_0 matrix-vector kernels dequantise 4-bit blocks, its F16 path is cuBLAS) and may
    multiply in another dtype than the model's (ggml's CPU Q8_0 kernels quantise the activations to 8
    bits and use int8 dot products; ExecuTorch's 8da4w is "8-bit dynamic activations" by definition).
    Unset numbers keep the entry's; `compute_dtype` picks the peak the FLOPs run at."""

    eta_compute: float | None = Field(None, gt=0, le=1, description="achieved fraction of peak FLOP/s")
    eta_memory: float | None = Field(None, gt=0, le=1, description="achieved fraction of peak bandwidth")
    compute_dtype: Dtype | None = Field(None, description="dtype the format's matmuls run in")
    sources: dict[str, str]

    @model_validator(mode="after")
    def _sourced(self) -> FormatEfficiency:
        given = {f for f in ("eta_compute", "eta_memory", "compute_dtype") if getattr(self, f) is not None}
        if not given:
            raise ValueError("give eta_compute, eta_memory or compute_dtype (or leave the format out)")
        _check_sources(given, self.sources)
        return self


class Efficiency(_Strict):
    """What one runtime achieves on one device (or kind of device), each number with its source.

    The call time is (cost.py, `call_time_s`)
        t = overhead_per_call_s + overhead_per_token_s · sampled tokens
            + max(flops / (peak·η_c), bytes / (bw·η_m))
    where the sampled tokens are the logits rows of the call (1 per sequence at prefill and decode, γ per
    sequence at a verify step): host-side sampling and detokenisation, which grow with the batch.
    `formats` replaces η_c and/or η_m for calls whose weights are in a named format.
    """

    eta_compute: float = Field(gt=0, le=1, description="achieved fraction of peak FLOP/s")
    eta_memory: float = Field(gt=0, le=1, description="achieved fraction of peak memory bandwidth")
    overhead_per_call_s: Seconds = Field(
        ge=0, le=60, description="fixed cost of one forward call (kernel launches, framework), s: 0 to 60")
    overhead_per_token_s: Seconds = Field(
        0.0, ge=0, le=60, description="cost per sampled token (logits row) of a call, s: 0 to 60")
    formats: dict[str, FormatEfficiency] = Field(
        default_factory=dict, description="η of the runtime's kernels for a weight format, by format name")
    sources: dict[str, str]

    @field_validator("formats")
    @classmethod
    def _format_names(cls, value: dict[str, FormatEfficiency]) -> dict[str, FormatEfficiency]:
        return {canonical_format(name): entry for name, entry in value.items()}

    @model_validator(mode="after")
    def _sourced(self) -> Efficiency:
        _check_sources({f for f in ("eta_compute", "eta_memory", "overhead_per_call_s",
                                    "overhead_per_token_s") if f in self.model_fields_set}, self.sources)
        return self


class TablePoint(_Strict):
    """One measured size of a per-token latency table; the axes not given are not axes of the table."""

    tokens: int | None = Field(None, gt=0, le=2**20, description="new tokens per sequence in the call")
    context: int | None = Field(None, ge=0, le=2**24, description="tokens already cached per sequence")
    batch: int | None = Field(None, gt=0, le=4096, description="sequences in the step")
    s_per_token: Seconds = Field(ge=0, le=60, description="seconds per token of the call, per sequence")

    @property
    def axes(self) -> tuple[str, ...]:
        return tuple(a for a in ("tokens", "context", "batch") if getattr(self, a) is not None)


class _Grid:
    """Multilinear interpolation over the measured grid (scipy's RegularGridInterpolator); a size
    outside the measured range is charged at the nearest measured edge, never extrapolated."""

    def __init__(self, points: Sequence[TablePoint]) -> None:
        axes = points[0].axes
        values = [sorted({getattr(p, a) for p in points}) for a in axes]
        self.axes = tuple(a for a, v in zip(axes, values, strict=True) if len(v) > 1)
        grid = [np.asarray(v, dtype=float) for v in values if len(v) > 1]
        index = {tuple(getattr(p, a) for a in self.axes): p.s_per_token for p in points}
        if not self.axes:
            self._constant: float | None = points[0].s_per_token
            return
        self._constant = None
        self._lo = np.array([g[0] for g in grid])
        self._hi = np.array([g[-1] for g in grid])
        data = np.empty([len(g) for g in grid])
        for idx in product(*(range(len(g)) for g in grid)):
            data[idx] = index[tuple(int(grid[k][i]) for k, i in enumerate(idx))]
        self._interp = RegularGridInterpolator(grid, data, method="linear")

    def __call__(self, tokens: int, context: int, batch: int) -> float:
        if self._constant is not None:
            return self._constant
        at = {"tokens": tokens, "context": context, "batch": batch}
        x = np.clip(np.array([float(at[a]) for a in self.axes]), self._lo, self._hi)
        return float(self._interp(x[None, :])[0])


class ComputeTable(_Strict):
    """Measured per-token latencies of a runtime on a device, charged instead of the roofline.

    Each phase is a number (seconds per token) or a list of measured sizes (`TablePoint`) covering a
    full grid over the axes they give (every combination of their tokens/context/batch values), which
    is interpolated. A call of n new tokens per sequence for B sequences at context p costs

        t = overhead_per_call_s + B · n · s_per_token(phase; tokens = n, context = p, batch = B)

    so a batch of b requests verifying γ tokens each costs b·γ·t_verify. The phase of a call: verify when
    it produces logits at several positions of a sequence (speculative decoding), prefill when it processes
    several tokens for one logits row, decode otherwise (one token). A phase the table does not give is
    charged at the nearest one it gives: verify ↔ decode, then prefill.
    """

    source: str = Field(min_length=1, description="where the latencies were measured")
    overhead_per_call_s: Seconds = Field(0.0, ge=0, le=60, description="fixed cost added to every call, s")
    prefill_s_per_token: Seconds | list[TablePoint] | None = Field(None, description="prompt processing")
    decode_s_per_token: Seconds | list[TablePoint] | None = Field(None, description="one-token steps")
    verify_s_per_token: Seconds | list[TablePoint] | None = Field(
        None, description="speculative verify steps, per token in the batch")

    @model_validator(mode="after")
    def _complete(self) -> ComputeTable:
        given = [p for p in PHASES if getattr(self, f"{p}_s_per_token") is not None]
        if not given:
            raise ValueError("give at least one of prefill_s_per_token, decode_s_per_token, "
                             "verify_s_per_token")
        for phase in given:
            value = getattr(self, f"{phase}_s_per_token")
            if isinstance(value, list):
                _check_grid(f"{phase}_s_per_token", value)
            elif value < 0 or value > 60:
                raise ValueError(f"{phase}_s_per_token: {value} s is outside 0 to 60 s")
        return self

    @cached_property
    def _grids(self) -> dict[Phase, _Grid | float]:
        out: dict[Phase, _Grid | float] = {}
        for phase in PHASES:
            value = getattr(self, f"{phase}_s_per_token")
            if value is not None:
                out[phase] = _Grid(value) if isinstance(value, list) else float(value)
        return out

    def resolved_phase(self, phase: Phase) -> Phase:
        """The phase whose latencies charge `phase`: itself if given, else verify ↔ decode, then prefill."""
        order: dict[Phase, tuple[Phase, ...]] = {
            "prefill": ("prefill", "verify", "decode"), "decode": ("decode", "verify", "prefill"),
            "verify": ("verify", "decode", "prefill")}
        return next(p for p in order[phase] if p in self._grids)

    def s_per_token(self, phase: Phase, tokens: int, context: int, batch: int) -> float:
        entry = self._grids[self.resolved_phase(phase)]
        return entry if isinstance(entry, float) else entry(tokens, context, batch)


def _check_grid(field: str, points: list[TablePoint]) -> None:
    """A table's sizes must span a full grid: one point per combination of the values its axes take."""
    if not points:
        raise ValueError(f"{field}: an empty table (give a number or at least one size)")
    axes = points[0].axes
    for i, p in enumerate(points):
        if p.axes != axes:
            raise ValueError(f"{field}[{i}]: gives {', '.join(p.axes) or 'no axis'} but {field}[0] gives "
                             f"{', '.join(axes) or 'no axis'}; every size must give the same axes")
    seen: dict[tuple[int, ...], int] = {}
    for i, p in enumerate(points):
        key = tuple(getattr(p, a) for a in axes)
        if key in seen:
            raise ValueError(f"{field}[{i}]: the same size as {field}[{seen[key]}]")
        seen[key] = i
    values = [sorted({getattr(p, a) for p in points}) for a in axes]
    for combo in product(*values):
        if combo not in seen:
            where = ", ".join(f"{a}={v}" for a, v in zip(axes, combo, strict=True))
            raise ValueError(f"{field}: no entry for {where} (the sizes must cover every combination of "
                             f"the {', '.join(axes)} values given)")


class RuntimeProfile(_Strict):
    """An inference runtime: its efficiencies per device (kind), overheads, formats, each with a source."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str
    formats: list[str] = Field(
        min_length=1, description="weight formats and plain dtypes it runs (quant.py names: Q4_K_M, "
                                  "awq-g128, fp8, bf16, ...)")
    kv_dtypes: list[KvDtype] = Field(min_length=1, description="KV-cache dtypes it can keep")
    efficiency: dict[str, Efficiency] = Field(
        default_factory=dict, description="by device profile name, device kind, or `default`")
    table: ComputeTable | None = Field(
        None, description="measured per-token latencies (replace the roofline)")
    sources: dict[str, str] = Field(description="sources of `formats` and `kv_dtypes`")

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, value: list[str]) -> list[str]:
        return [canonical_format(f) for f in value]

    @model_validator(mode="after")
    def _check(self) -> RuntimeProfile:
        for key in self.efficiency:
            if not _KEY.fullmatch(key):
                raise ValueError(f"efficiency: {key[:40]!r} is no device name, device kind or `default`")
        if not self.efficiency and self.table is None:
            raise ValueError("give `efficiency` (for the roofline) or `table` (measured latencies)")
        for key, entry in self.efficiency.items():
            foreign = sorted(set(entry.formats) - set(self.formats))
            if foreign:
                raise ValueError(f"efficiency.{key}.formats: {foreign[0]} is not a format this runtime runs")
        _check_sources({"formats", "kv_dtypes"}, self.sources)
        return self

    def efficiency_for(self, device: str, kind: str) -> Efficiency | None:
        """The most specific entry: the device's name, its kind, then `default`."""
        for key in (device, kind, "default"):
            if key in self.efficiency:
                return self.efficiency[key]
        return None

    def runs_format(self, format_name: str) -> bool:
        return format_name in self.formats

    def keeps_kv(self, kv_dtype: str) -> bool:
        return kv_dtype in self.kv_dtypes


def _read(path: Path) -> RuntimeProfile:
    return read_model(path, "runtime profile", RuntimeProfile)


def list_runtime_names(directory: Path | None = None) -> list[str]:
    directory = directory if directory is not None else runtimes_dir()
    return sorted(p.stem for p in directory.glob("*.yaml")) if directory.is_dir() else []


def load_runtime(name_or_path: str, search_dir: Path | None = None) -> RuntimeProfile:
    """A bundled runtime by name (runtime_profiles/<name>.yaml) or a user's runtime file by path
    (`is_file_reference` tells the two apart by spelling, as for device profiles)."""
    if is_file_reference(name_or_path):
        candidate = Path(name_or_path)
        if not os.path.lexists(candidate):
            raise InputError(f"runtime profile file {show_path(name_or_path)} does not exist")
        return _read(candidate)
    directory = search_dir if search_dir is not None else runtimes_dir()
    path = directory / f"{name_or_path}.yaml"
    if not (_KEY.fullmatch(name_or_path) and path.is_file()):
        known = ", ".join(list_runtime_names(directory)) or "none"
        raise InputError(f"unknown runtime {show_path(name_or_path, 60)!r} (known: {known})")
    runtime = _read(path)
    if runtime.name != name_or_path:
        raise InputError(f"{path}: name {runtime.name!r} does not match the file name")
    return runtime


def list_runtimes(search_dir: Path | None = None) -> list[RuntimeProfile]:
    directory = search_dir if search_dir is not None else runtimes_dir()
    return [load_runtime(name, directory) for name in list_runtime_names(directory)]

