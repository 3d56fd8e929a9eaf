"""Unit strings are parsed once at the edge; inner code sees SI floats."""

import pytest
from pydantic import BaseModel, ValidationError

from netsim.hardware.profile import list_profiles
from netsim.units import (
    BitRate,
    ByteRate,
    Bytes,
    Dbm,
    Decibels,
    FlopRate,
    Hertz,
    JoulesPerBit,
    Seconds,
    Watts,
)


class Q(BaseModel):
    rate: BitRate = 0
    t: Seconds = 0
    size: Bytes = 0
    f: Hertz = 0
    flops: FlopRate = 0
    bw: ByteRate = 0
    p: Watts = 0
    tx: Dbm = 0


@pytest.mark.parametrize(
    ("field", "text", "value"),
    [
        ("rate", "54Mbps", 54e6), ("rate", "1.5 Gbps", 1.5e9), ("rate", 1000, 1000.0),
        ("t", "2ms", 2e-3), ("t", "150us", 150e-6), ("t", "1.5", 1.5),
        ("size", "8GB", 8e9), ("size", "64KiB", 65536.0),
        ("f", "3.5GHz", 3.5e9), ("f", "20MHz", 20e6),
        ("flops", "121TFLOPS", 121e12), ("bw", "68GB/s", 68e9), ("p", "500mW", 0.5), ("tx", "23dBm", 23.0),
    ],
)
def test_units_parse_to_si(field: str, text: object, value: float) -> None:
    assert getattr(Q(**{field: text}), field) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize(("field", "text"), [("rate", "54 parsecs"), ("t", "fast"), ("size", "8 GBx")])
def test_bad_units_are_rejected_with_the_unit_named(field: str, text: str) -> None:
    with pytest.raises(ValidationError, match=r"unit|cannot read"):
        Q(**{field: text})


# Case-sensitive symbols, as ns-3's DataRate reads them: b = bit, B = byte, m = milli, M = mega.


class Units(BaseModel):
    rate: BitRate = 0
    size: Bytes = 0
    bw: ByteRate = 0
    flops: FlopRate = 0
    p: Watts = 0
    tx: Dbm = 0
    gain: Decibels = 0
    e: JoulesPerBit = 0


@pytest.mark.parametrize(
    ("field", "text", "value"),
    [
        ("rate", "54Mbps", 54e6), ("rate", "54Mb/s", 54e6), ("rate", "54Mbit/s", 54e6),
        ("rate", "54MBps", 8 * 54e6), ("rate", "54MB/s", 8 * 54e6), ("rate", "1MiB/s", 8 * 2**20),
        ("rate", "100kbps", 1e5), ("rate", "100Kbps", 1e5), ("rate", "2Gb/s", 2e9),
        ("size", "8GB", 8e9), ("size", "8GiB", 8 * 2**30), ("size", "1500B", 1500.0), ("size", "64kB", 64e3),
        ("bw", "68GB/s", 68e9), ("bw", "68GBps", 68e9), ("bw", "3.35TB/s", 3.35e12),
        ("flops", "121TFLOPS", 121e12), ("flops", "40TOPS", 40e12), ("flops", "614.4GOPS", 614.4e9),
        ("flops", "1.5TFLOP/s", 1.5e12),
        ("p", "500mW", 0.5), ("p", "2kW", 2e3),
        ("e", "283nJ/bit", 283e-9), ("e", "283mW/Mbps", 283e-9),
    ],
)
def test_unit_symbols_are_read_case_sensitively(field: str, text: str, value: float) -> None:
    assert getattr(Units(**{field: text}), field) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize(
    ("field", "text", "expected"),
    [
        # a spelling that only differs in case is ambiguous: refused, with the accepted spellings
        ("rate", "54mbps", "ambiguous unit 'mbps'"), ("rate", "54MBPS", "ambiguous unit 'MBPS'"),
        ("rate", "54mb/s", "ambiguous unit 'mb/s'"), ("size", "8gb", "ambiguous unit 'gb'"),
        ("bw", "68gb/s", "ambiguous unit 'gb/s'"), ("flops", "121tflops", "ambiguous unit 'tflops'"),
        ("p", "5MW", "ambiguous unit 'MW'"), ("e", "283NJ/bit", "ambiguous unit 'NJ/bit'"),
        # well-formed, but bits where bytes are meant
        ("size", "8Gb", "'Gb' counts bits; a size is given in bytes"),
        ("bw", "68Gb/s", "'Gb/s' is a bit rate; a memory bandwidth is given in bytes per second"),
        ("bw", "68Gbps", "'Gbps' is a bit rate"),
        # decibels keep their exact symbol
        ("tx", "23dbm", "cannot read '23dbm' as a power in dBm"), ("gain", "7DB", "cannot read '7DB'"),
        ("rate", "54 parsecs", "unknown unit 'parsecs'"),
    ],
)
def test_ambiguous_or_wrong_kind_spellings_are_refused_with_what_is_accepted(field: str, text: str,
                                                                             expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        Units(**{field: text})
    message = info.value.errors()[0]["msg"]
    assert expected in message, message
    assert "\n" not in message
    if "ambiguous" in expected or "bits" in expected or "bit rate" in expected:
        assert "accepted: " in message, message


@pytest.mark.parametrize(
    ("field", "value"),
    [("rate", "1e400Mbps"), ("rate", "1e305Tbps"), ("rate", float("inf")), ("rate", float("nan")),
     ("rate", 10**400), ("size", "1e400GB"), ("bw", float("-inf")), ("tx", "1e400dBm"),
     ("gain", float("nan")), ("flops", "1e300PFLOPS")],
)
def test_infinite_nan_and_overflowing_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        Units(**{field: value})
    message = info.value.errors()[0]["msg"]
    assert "not a finite" in message, message
    assert len(message) < 200  # 10**400 is not echoed in full


def test_every_bundled_profile_spells_its_units_unambiguously() -> None:
    """All bundled profiles load under the case-sensitive parser (their spellings: GiB, GB, GB/s,
    TFLOPS, GFLOPS, TOPS, GOPS, W, ms, nJ/bit)."""
    profiles = list_profiles()
    assert len(profiles) >= 9
    a100 = next(p for p in profiles if p.name == "nvidia-a100-80gb")
    assert a100.mem_bw_bytes_per_s == pytest.approx(2039e9)  # "2039GB/s" in bytes, not bits
