"""Physical quantities written with units in YAML ("100Mbps", "2ms", "8GB", "23dBm"), parsed once at load.

Inner code sees plain floats whose unit is in the field name (`rate_bps`, `delay_s`, `nbytes`), so the
annotated types below are the only place where unit strings exist.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator

_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"

_RATE = {"bps": 1.0, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9, "tbps": 1e12,
         "bit/s": 1.0, "kbit/s": 1e3, "mbit/s": 1e6, "gbit/s": 1e9}
_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9, "min": 60.0, "h": 3600.0}
_BYTES = {"b": 1.0, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
          "kib": 2.0**10, "mib": 2.0**20, "gib": 2.0**30, "tib": 2.0**40}
_FREQ = {"hz": 1.0, "khz": 1e3, "mhz": 1e6, "ghz": 1e9}
_FLOPS = {"flops": 1.0, "gflops": 1e9, "tflops": 1e12, "pflops": 1e15,
          "ops": 1.0, "gops": 1e9, "tops": 1e12}
_BW = {"b/s": 1.0, "kb/s": 1e3, "mb/s": 1e6, "gb/s": 1e9, "tb/s": 1e12}
_POWER = {"w": 1.0, "mw": 1e-3, "kw": 1e3}
_ENERGY_PER_BIT = {"j/bit": 1.0, "mj/bit": 1e-3, "uj/bit": 1e-6, "µj/bit": 1e-6, "nj/bit": 1e-9,
                   "pj/bit": 1e-12, "mw/mbps": 1e-9}


def _parser(table: dict[str, float], what: str):
    pattern = re.compile(rf"^\s*{_NUMBER}\s*([A-Za-zµ/]+)?\s*$")

    def parse(value: object) -> object:
        if isinstance(value, bool):
            raise ValueError(f"expected a {what}, got {value!r}")
        if isinstance(value, int | float):
            return float(value)
        if not isinstance(value, str):
            return value
        m = pattern.match(value)
        if not m:
            raise ValueError(f"cannot read {value!r} as a {what}")
        number, unit = float(m.group(1)), (m.group(2) or "")
        if not unit:
            return number
        factor = table.get(unit.lower())
        if factor is None:
            raise ValueError(f"unknown unit {unit!r} for a {what} (use one of {', '.join(table)})")
        return number * factor

    return parse


def _dbm(value: object) -> object:
    """dBm stays dBm (link budgets add in dB); a bare number is already dBm."""
    if isinstance(value, str):
        m = re.match(rf"^\s*{_NUMBER}\s*(dBm)?\s*$", value, flags=re.IGNORECASE)
        if not m:
            raise ValueError(f"cannot read {value!r} as a power in dBm")
        return float(m.group(1))
    return value


def _db(value: object) -> object:
    if isinstance(value, str):
        m = re.match(rf"^\s*{_NUMBER}\s*(dB)?\s*$", value, flags=re.IGNORECASE)
        if not m:
            raise ValueError(f"cannot read {value!r} as a value in dB")
        return float(m.group(1))
    return value


BitRate = Annotated[float, BeforeValidator(_parser(_RATE, "rate"))]
"""bits per second; accepts 100, "100bps", "54Mbps", "1Gbps"."""
Seconds = Annotated[float, BeforeValidator(_parser(_TIME, "duration"))]
"""seconds; accepts 0.002, "2ms", "150us"."""
Bytes = Annotated[float, BeforeValidator(_parser(_BYTES, "size"))]
"""bytes; accepts 1500, "8GB", "64KiB"."""
Hertz = Annotated[float, BeforeValidator(_parser(_FREQ, "frequency"))]
"""hertz; accepts 20e6, "20MHz", "3.5GHz"."""
FlopRate = Annotated[float, BeforeValidator(_parser(_FLOPS, "compute rate"))]
"""operations per second; accepts "121TFLOPS", "40TOPS"."""
ByteRate = Annotated[float, BeforeValidator(_parser(_BW, "memory bandwidth"))]
"""bytes per second; accepts "68GB/s"."""
Watts = Annotated[float, BeforeValidator(_parser(_POWER, "power"))]
"""watts; accepts 7, "7W", "500mW"."""
JoulesPerBit = Annotated[float, BeforeValidator(_parser(_ENERGY_PER_BIT, "energy per bit"))]
"""joules per bit; accepts 2.8e-7, "283nJ/bit", "283mW/Mbps" (the same thing)."""
Dbm = Annotated[float, BeforeValidator(_dbm)]
"""dBm; accepts 23 or "23dBm"."""
Decibels = Annotated[float, BeforeValidator(_db)]
"""dB; accepts 7 or "7dB"."""
