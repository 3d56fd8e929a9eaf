"""A device's hardware as the simulator sees it: compute peaks, memory, efficiency, power, radio.

Profiles live in device_profiles/<name>.yaml and carry a `sources:` entry for every number, because a
simulated latency is only as credible as the spec sheet or measurement behind it. Units are written in
the YAML ("68GB/s", "8GiB", "121TFLOPS", "15W", "283nJ/bit") and parsed once here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from netsim.errors import InputError
from netsim.hardware.runtime import ComputeTable, FormatEfficiency, RuntimeProfile, load_runtime
from netsim.inputfile import read_model, show_path
from netsim.lm.geometry import Dtype, ModelGeometry
from netsim.paths import is_file_reference, profiles_dir
from netsim.units import ByteRate, Bytes, FlopRate, JoulesPerBit, Seconds, Watts

DeviceKind = Literal["phone", "sbc", "embedded_gpu", "laptop", "desktop_gpu", "datacenter_gpu",
                     "cpu_server"]

DTYPE_FALLBACK: dict[str, str | None] = {
    "int4": "int8",
    "int8": "float16",
    "bfloat16": "float32",
    "float16": "float32",
    "float32": None,
}
"""Which peak a dtype the device does not list runs at: the next dtype a runtime would compute it in.

int4 weights are multiplied with int8 dot products (llama.cpp MMQ/Q8 activations, XNNPACK 8da4w);
int8 without int8 units is dequantised to the fp16 compute type; bf16 without bf16 units is widened
to fp32 (narrowing to fp16 could overflow, so runtimes widen); fp16 without fp16 units runs as fp32.
Every profile must list float32, so every chain ends.
"""

_NUMERIC_FIELDS = ("memory_bytes", "memory_reserved_bytes", "mem_bw_bytes_per_s", "compute_units",
                   "eta_compute", "eta_memory", "overhead_per_call_s", "overhead_per_token_s", "power_idle_w",
                   "power_active_w", "radio_tx_j_per_bit", "radio_rx_j_per_bit")
_EFFICIENCY_FIELDS = ("eta_compute", "eta_memory", "overhead_per_call_s", "overhead_per_token_s")
"""What a runtime profile supplies; a device profile may pin them for its own runtime (runtime.py)."""


class DeviceProfile(BaseModel):
    """Hardware numbers of one device kind, each with its source (see docs/hardware.md)."""

    # Every number finite, and inside a range that spans real devices from a microcontroller-class board
    # to a rack-scale accelerator: a profile beyond it is a typo (a unit slip of 10³ or more), and an
    # infinite peak or bandwidth would make a model call take zero simulated time.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str
    kind: DeviceKind
    runtime: str = Field(
        min_length=1, description="default inference runtime: a bundled runtime profile's name "
                                  "(runtime_profiles/) or the path of a runtime profile file")
    memory_bytes: Bytes = Field(
        ge=2**20, le=2**50,
        description="physical memory holding weights and KV cache, bytes: 1 MiB to 1 PiB (e.g. 8GiB)")
    memory_reserved_bytes: Bytes = Field(
        0.0, ge=0, le=2**50, description="taken by OS/runtime, not usable, bytes: 0 to 1 PiB")
    mem_bw_bytes_per_s: ByteRate = Field(
        ge=1e6, le=1e14,
        description="peak DRAM/HBM bandwidth, bytes/s: 1 MB/s to 100 TB/s (H100 SXM: 3.35 TB/s)")
    peak_flops: dict[Dtype, Annotated[FlopRate, Field(ge=1e6, le=1e18)]] = Field(
        description="dense peak FLOP/s (or OP/s) per dtype: 1 MFLOPS to 1 EFLOPS (H100 fp16: 989 TFLOPS)")
    compute_units: int | None = Field(
        None, ge=1, le=4096,
        description="GPU streaming multiprocessors the tiles of a matrix multiply are scheduled on, 1 to "
                    "4096 (A100: 108); set: prompt-sized GEMMs pay tile and wave quantisation (cost.py)")
    eta_compute: float | None = Field(
        None, gt=0, le=1, description="achieved fraction of peak FLOP/s; set: pins the runtime's value "
                                      "when the node runs this profile's own `runtime`")
    eta_memory: float | None = Field(
        None, gt=0, le=1, description="achieved fraction of peak bandwidth; set: pins the runtime's value")
    overhead_per_call_s: Seconds | None = Field(
        None, ge=0, le=60, description="fixed cost of one forward call, seconds: 0 to 60 (measured: "
                                       "2–21 ms); set: pins the runtime's value")
    overhead_per_token_s: Seconds | None = Field(
        None, ge=0, le=60, description="cost per sampled token, seconds: 0 to 60; set: pins the runtime's")
    power_idle_w: Watts = Field(ge=0, le=1e5, description="idle power, watts: 0 to 100 kW")
    power_active_w: Watts = Field(
        gt=0, le=1e5, description="power under load, watts: above 0 to 100 kW (a rack; H100 SXM: 700 W)")
    radio_tx_j_per_bit: JoulesPerBit | None = Field(
        None, ge=0, le=1e-2,
        description="radio energy per bit sent, J/bit: 0 to 10 mJ/bit (LoRa SF12: ~0.4 mJ/bit); None for "
                    "wired servers")
    radio_rx_j_per_bit: JoulesPerBit | None = Field(
        None, ge=0, le=1e-2, description="radio energy per bit received, J/bit: 0 to 10 mJ/bit; None for "
                                         "wired servers")
    sources: dict[str, str]
    _table: ComputeTable | None = PrivateAttr(None)
    _kernels: dict[str, FormatEfficiency] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> DeviceProfile:
        if "float32" not in self.peak_flops:
            raise ValueError("peak_flops must list float32 (the end of every dtype fallback chain)")
        if any(v <= 0 for v in self.peak_flops.values()):
            raise ValueError("peak_flops values must be > 0")
        if self.power_idle_w > self.power_active_w:
            raise ValueError(f"power_idle_w {self.power_idle_w} W exceeds power_active_w "
                             f"{self.power_active_w} W")
        if self.memory_reserved_bytes >= self.memory_bytes:
            raise ValueError("memory_reserved_bytes must be smaller than memory_bytes")
        if (self.radio_tx_j_per_bit is None) != (self.radio_rx_j_per_bit is None):
            raise ValueError("give both radio_tx_j_per_bit and radio_rx_j_per_bit, or neither")
        needed = {f for f in _NUMERIC_FIELDS
                  if f in self.model_fields_set and getattr(self, f) is not None}
        needed |= {f"peak_flops.{dtype}" for dtype in self.peak_flops}
        missing = sorted(needed - self.sources.keys())
        if missing:
            raise ValueError(f"sources: no source for {', '.join(missing)}")
        unknown = sorted(self.sources.keys() - needed)
        if unknown:
            raise ValueError(f"sources: entries for fields that are not set: {', '.join(unknown)}")
        blank = sorted(k for k, v in self.sources.items() if not v.strip())
        if blank:
            raise ValueError(f"sources: empty source for {', '.join(blank)}")
        return self

    @property
    def table(self) -> ComputeTable | None:
        """The bound runtime's measured latency table, which charges model calls instead of the roofline."""
        return self._table

    @property
    def bound(self) -> bool:
        """Whether the roofline has all its efficiencies (a runtime was bound, or the profile pins them)."""
        return None not in (self.eta_compute, self.eta_memory, self.overhead_per_call_s)

    def with_runtime(self, runtime: RuntimeProfile, ref: str | None = None) -> DeviceProfile:
        """This device as a node's compute sees it under `runtime`: the runtime's efficiencies for this
        device (its name, else its kind, else the runtime's default) and its latency table.

        `ref` is how the node named the runtime (None: this profile's own `runtime`). Numbers the device
        profile pins itself were measured with its own runtime, so they win only when that one runs.
        """
        own = ref is None or ref == self.runtime
        eff = runtime.efficiency_for(self.name, self.kind)
        update: dict[str, object] = {"runtime": runtime.name}
        sources = {k: v for k, v in self.sources.items() if k not in _EFFICIENCY_FIELDS}
        for field in _EFFICIENCY_FIELDS:
            pinned = getattr(self, field)
            if own and pinned is not None:
                update[field] = pinned
                sources[field] = self.sources[field]
            elif eff is not None and (field != "overhead_per_token_s" or field in eff.model_fields_set):
                update[field] = getattr(eff, field)
                sources[field] = f"runtime {runtime.name}: {eff.sources[field]}"
            else:
                update[field] = 0.0 if field == "overhead_per_token_s" else None
        if runtime.table is None and None in (update["eta_compute"], update["eta_memory"],
                                              update["overhead_per_call_s"]):
            raise InputError(f"runtime {runtime.name!r} gives no efficiencies for device {self.name!r} "
                             f"(kind {self.kind}) and has no latency table; add an `efficiency` entry "
                             f"for {self.name}, {self.kind} or default")
        bound = self.model_copy(update=update | {"sources": sources})
        bound._table = runtime.table
        bound._kernels = dict(eff.formats) if eff is not None else {}
        return bound

    def kernels(self, format_name: str | None, dtype: str) -> tuple[float, float, str]:
        """(η_c, η_m, compute dtype) of a call in `dtype` whose weights are in `format_name`: what the
        bound runtime's entry says of that format's kernels (`Efficiency.formats`), else its own η."""
        if self.eta_compute is None or self.eta_memory is None:
            raise ValueError(f"device profile {self.name!r} is not bound to a runtime: no efficiencies")
        own = self._kernels.get(format_name) if format_name is not None else None
        if own is None:
            return self.eta_compute, self.eta_memory, dtype
        return (own.eta_compute or self.eta_compute, own.eta_memory or self.eta_memory,
                own.compute_dtype or dtype)

    @property
    def memory_available_bytes(self) -> float:
        return self.memory_bytes - self.memory_reserved_bytes

    def effective_dtype(self, dtype: str) -> str:
        """The dtype whose peak a call in `dtype` runs at, following DTYPE_FALLBACK."""
        current: str | None = dtype
        while current is not None and current not in self.peak_flops:
            if current not in DTYPE_FALLBACK:
                raise ValueError(f"unknown dtype {dtype!r} (use one of {', '.join(DTYPE_FALLBACK)})")
            current = DTYPE_FALLBACK[current]
        assert current is not None  # float32 is always listed (validated)
        return current

    def peak_flops_for(self, dtype: str) -> float:
        return self.peak_flops[self.effective_dtype(dtype)]  # type: ignore[index]

    def fits(self, geometries: Sequence[ModelGeometry], kv_tokens: int = 0) -> bool:
        return memory_needed_bytes(geometries, kv_tokens) <= self.memory_available_bytes

    def fit_problem(self, geometries: Sequence[ModelGeometry], kv_tokens: int = 0) -> str | None:
        """None if the models fit, else a one-line reason the lead turns into a validation error."""
        needed = memory_needed_bytes(geometries, kv_tokens)
        if needed <= self.memory_available_bytes:
            return None
        return (f"models need {needed / 1e9:.2f} GB (weights + KV cache for {kv_tokens} tokens) but "
                f"{self.name} has {self.memory_available_bytes / 1e9:.2f} GB usable")


def memory_needed_bytes(geometries: Sequence[ModelGeometry], kv_tokens: int = 0) -> int:
    """Resident bytes of the hosted models: all weights + KV cache of `kv_tokens` tokens in each model.

    `kv_tokens` is the number of token positions cached at once (sum over concurrent sequences of
    their context length); every hosted model keeps its own cache for them. Weights count at their
    format's real bytes (`ModelGeometry.weight_bytes`), the cache at its own dtype (`kv_cache_dtype`:
    an int4 model's cache is 16-bit unless configured), not at the weights' width.
    """
    if kv_tokens < 0:
        raise ValueError(f"kv_tokens must be >= 0, got {kv_tokens}")
    return sum(g.weight_bytes + kv_tokens * g.kv_bytes_per_token for g in geometries)


def _read(path: Path) -> DeviceProfile:
    profile = read_model(path, "device profile", DeviceProfile)
    if is_file_reference(profile.runtime) and not Path(profile.runtime).is_absolute():
        # a runtime file named by a profile file sits beside it, wherever the run starts from
        profile = profile.model_copy(update={"runtime": str((path.parent / profile.runtime).resolve())})
    return profile


_PROFILE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
"""A bundled profile's name: the `name` field's pattern, bounded so it stays a usable file name."""


def _known_names(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


def load_profile(name_or_path: str, search_dir: Path | None = None, runtime: str | None = None
                 ) -> DeviceProfile:
    """A device profile bound to a runtime (`runtime`, else the profile's own): what a node computes on.

    `runtime` is a bundled runtime's name or a runtime profile file's path (runtime_profiles/).
    """
    device = load_device(name_or_path, search_dir)
    return device.with_runtime(load_runtime(runtime or device.runtime), runtime)


def load_device(name_or_path: str, search_dir: Path | None = None) -> DeviceProfile:
    """A bundled profile by name (device_profiles/<name>.yaml) or a user's profile file by path, as
    written (not bound to a runtime).

    Only the spelling tells the two apart (`is_file_reference`), so a bare name means the bundled
    profile in every working directory. A file given by path may carry any `name:`: the path finds it.
    """
    if is_file_reference(name_or_path):
        candidate = Path(name_or_path)
        if not os.path.lexists(candidate):  # False also for a name too long to exist
            raise InputError(f"device profile file {show_path(name_or_path)} does not exist")
        return _read(candidate)
    directory = search_dir if search_dir is not None else profiles_dir()
    if not _PROFILE_NAME.fullmatch(name_or_path):  # before it reaches the file system as a file name
        known = ", ".join(_known_names(directory)) or "none"
        raise InputError(f"unknown device profile '{show_path(name_or_path, 60)}' (known: {known})")
    path = directory / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(_known_names(directory)) or "none"
        raise InputError(f"unknown device profile {name_or_path!r} (known: {known})")
    profile = _read(path)
    if profile.name != name_or_path:
        raise InputError(f"{path}: name {profile.name!r} does not match the file name")
    return profile


def list_profiles(search_dir: Path | None = None) -> list[DeviceProfile]:
    directory = search_dir if search_dir is not None else profiles_dir()
    return [load_profile(name, directory) for name in _known_names(directory)]
