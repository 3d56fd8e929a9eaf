"""Physical quantities written with units in YAML ("100Mbps", "2ms", "8GB", "23dBm"), parsed once at load.

Inner code sees plain floats whose unit is in the field name (`rate_bps`, `delay_s`, `nbytes`), so the
annotated types below are the only place where unit strings exist.

Unit symbols are case-sensitive, as in ns-3's `DataRate` (src/network/utils/data-rate.cc): `b` is a
bit and `B` a byte, `m` is milli and `M` mega, so `Mbps` and `MBps` are 8× apart and `mW` and `MW` 10⁹×.
Reading them case-insensitively silently turns a memory bandwidth in GB/s into one eight times too small
(or a per-pin DRAM rate in Gb/s into a bus bandwidth). A spelling that only differs in case from an
accepted one (`mbps`, `MBPS`, `gb/s`) is refused with the accepted spellings, never guessed.
Every value must be finite: `.inf`, `nan` and overflows such as "1e400Mbps" are refused here, before a
simulation could wait forever on them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Annotated

from pydantic import BeforeValidator

_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_PATTERN = re.compile(rf"^\s*{_NUMBER}\s*([A-Za-zµ/]+)?\s*$")

_SI = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_BINARY = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40}


def _rates(per_unit: float) -> dict[str, float]:
    """ns-3 DataRate spellings for one base unit: `bps`, `b/s` (bits) or `Bps`, `B/s` (bytes), with SI
    prefixes (k and K both 10³, as ns-3 reads them) and binary ones for the `/s` form (KiB/s)."""
    letter = "b" if per_unit == 1.0 else "B"
    out = {f"{p}{letter}ps": f * per_unit for p, f in _SI.items()}
    out |= {f"{p}{letter}/s": f * per_unit for p, f in _SI.items()}
    out |= {f"{p}{letter}/s": f * per_unit for p, f in _BINARY.items()}
    return out


_BIT_RATE = _rates(1.0) | {f"{p}bit/s": f for p, f in _SI.items() if p != "K"}
_BYTE_RATE_AS_BITS = _rates(8.0)
_RATE = _BIT_RATE | _BYTE_RATE_AS_BITS
"""A network rate in bit/s: bits (`Mbps`, `Mb/s`, `Mbit/s`) or bytes per second (`MBps`, `MB/s`, × 8)."""

_BW = {unit: factor / 8.0 for unit, factor in _BYTE_RATE_AS_BITS.items()}
"""A memory bandwidth in bytes/s. Bit spellings are refused: DRAM data sheets quote the per-pin data
rate in Gb/s (GDDR6 "16 Gbps"), so a bandwidth written in bits is far more often a pin rate than a bus."""

_BYTES = {f"{p}B": f for p, f in _SI.items()} | {f"{p}B": f for p, f in _BINARY.items()}
"""A size in bytes; `Gb` (gigabits) is refused, sizes of memory and messages are counted in bytes."""
_BITS_AS_SIZE = {f"{p}b" for p in (*_SI, *_BINARY)} | {f"{p}bit" for p in _SI}

_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9, "min": 60.0, "h": 3600.0}
_FREQ = {"Hz": 1.0, "kHz": 1e3, "MHz": 1e6, "GHz": 1e9}
_FLOPS = {f"{p}{op}": f for p, f in (("", 1.0), ("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12),
                                     ("P", 1e15))
          for op in ("FLOPS", "FLOP/s", "OPS", "OP/s")}
"""Operations per second as data sheets write them: `TFLOPS` for floating point, `TOPS` for integer."""
_POWER = {"W": 1.0, "mW": 1e-3, "kW": 1e3}
_ENERGY_PER_BIT = {"J/bit": 1.0, "mJ/bit": 1e-3, "uJ/bit": 1e-6, "µJ/bit": 1e-6, "nJ/bit": 1e-9,
                   "pJ/bit": 1e-12, "mW/Mbps": 1e-9}


def _show(value: object) -> str:
    """The input as the user wrote it, cut short: an error line must stay one readable line."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"


def _finite(number: float, text: object, what: str) -> float:
    if not math.isfinite(number):
        raise ValueError(f"{_show(text)} is not a finite {what} (infinite, NaN or beyond ±1.8e308)")
    return number


def _number(value: object, what: str) -> float | None:
    """A YAML number as a finite float, or None when `value` is not a number at all."""
    if isinstance(value, bool):
        raise ValueError(f"expected a {what}, got {value!r}")
    if isinstance(value, int | float):
        try:
            return _finite(float(value), value, what)
        except OverflowError:  # an int beyond float range (10**400)
            raise ValueError(f"{_show(value)} is not a finite {what} (beyond ±1.8e308)") from None
    return None


def _unit_error(unit: str, table: Mapping[str, float], what: str, accepted: str,
                wrong_kind: Mapping[str, str]) -> str:
    """Why `unit` is refused, with the spellings that are accepted."""
    for spellings, why in wrong_kind.items():
        if unit in spellings.split():
            return f"{unit!r} {why} (accepted: {accepted})"
    if any(unit.lower() == known.lower() for known in (*table, *" ".join(wrong_kind).split())):
        return (f"ambiguous unit {unit!r} for a {what}: unit symbols are case-sensitive (b = bit, B = byte, "
                f"m = milli, M = mega); accepted: {accepted}")
    return f"unknown unit {unit!r} for a {what} (accepted: {accepted})"


def _parser(table: Mapping[str, float], what: str, accepted: str | None = None,
            wrong_kind: Mapping[str, str] | None = None) -> Callable[[object], object]:
    """A pydantic before-validator reading `number unit` with `unit` looked up exactly in `table`.

    `accepted` summarises the spellings for error messages (default: all of them); `wrong_kind` maps
    space-separated spellings that are well-formed but of another quantity (bits for a size) to the
    reason they are refused.
    """
    wrong = wrong_kind or {}
    spelled = accepted or ", ".join(table)

    def parse(value: object) -> object:
        number = _number(value, what)
        if number is not None:
            return number
        if not isinstance(value, str):
            return value  # pydantic reports the wrong type
        m = _PATTERN.match(value)
        if not m:
            raise ValueError(f"cannot read {_show(value)} as a {what}")
        number, unit = _finite(float(m.group(1)), value, what), m.group(2) or ""
        if not unit:
            return number
        factor = table.get(unit)
        if factor is None:
            raise ValueError(_unit_error(unit, table, what, spelled, wrong))
        return _finite(number * factor, value, what)

    return parse


def _decibel_parser(symbol: str, what: str) -> Callable[[object], object]:
    """Decibel values stay in dB (link budgets add in dB); the symbol is optional and case-sensitive."""
    pattern = re.compile(rf"^\s*{_NUMBER}\s*({symbol})?\s*$")

    def parse(value: object) -> object:
        number = _number(value, what)
        if number is not None:
            return number
        if not isinstance(value, str):
            return value
        m = pattern.match(value)
        if not m:
            raise ValueError(f"cannot read {_show(value)} as a {what} (write e.g. 23{symbol}; the symbol is "
                             "case-sensitive)")
        return _finite(float(m.group(1)), value, what)

    return parse


_SIZE_NOT_BITS = {" ".join(sorted(_BITS_AS_SIZE)): "counts bits; a size is given in bytes (1 B = 8 b)"}
_BW_NOT_BITS = {" ".join(u for u in _BIT_RATE): "is a bit rate; a memory bandwidth is given in bytes per "
                                                "second (GB/s), and a data sheet's Gb/s is usually per pin"}

BitRate = Annotated[float, BeforeValidator(_parser(
    _RATE, "rate", "bps, kbps, Mbps, Gbps, Tbps (bits; also Mb/s, Mbit/s) or Bps, kBps, MBps, GBps (bytes; "
                   "also MB/s, MiB/s)"))]
"""bits per second; accepts 100, "100bps", "54Mbps", "54Mb/s", "54Mbit/s", "1Gbps", "12.5MB/s" (×8)."""
Seconds = Annotated[float, BeforeValidator(_parser(_TIME, "duration"))]
"""seconds; accepts 0.002, "2ms", "150us"."""
Bytes = Annotated[float, BeforeValidator(_parser(
    _BYTES, "size", "B, kB, MB, GB, TB, KiB, MiB, GiB, TiB", _SIZE_NOT_BITS))]
"""bytes; accepts 1500, "8GB", "64KiB"; refuses bit spellings ("8Gb")."""
Hertz = Annotated[float, BeforeValidator(_parser(_FREQ, "frequency"))]
"""hertz; accepts 20e6, "20MHz", "3.5GHz"."""
FlopRate = Annotated[float, BeforeValidator(_parser(
    _FLOPS, "compute rate", "FLOPS, GFLOPS, TFLOPS, PFLOPS (also MFLOPS, TFLOP/s) or OPS, GOPS, TOPS, POPS"))]
"""operations per second; accepts "121TFLOPS", "40TOPS", "614.4GOPS"."""
ByteRate = Annotated[float, BeforeValidator(_parser(
    _BW, "memory bandwidth", "B/s, kB/s, MB/s, GB/s, TB/s, GiB/s (also GBps)", _BW_NOT_BITS))]
"""bytes per second; accepts "68GB/s", "68GBps", "3.35TB/s"; refuses bit rates ("68Gb/s")."""
Watts = Annotated[float, BeforeValidator(_parser(_POWER, "power"))]
"""watts; accepts 7, "7W", "500mW"."""
JoulesPerBit = Annotated[float, BeforeValidator(_parser(_ENERGY_PER_BIT, "energy per bit"))]
"""joules per bit; accepts 2.8e-7, "283nJ/bit", "283mW/Mbps" (the same thing)."""
Dbm = Annotated[float, BeforeValidator(_decibel_parser("dBm", "power in dBm"))]
"""dBm; accepts 23 or "23dBm"."""
Decibels = Annotated[float, BeforeValidator(_decibel_parser("dB", "value in dB"))]
"""dB; accepts 7 or "7dB"."""
