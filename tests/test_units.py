"""Unit strings are parsed once at the edge; inner code sees SI floats."""

import pytest
from pydantic import BaseModel, ValidationError

from netsim.units import BitRate, ByteRate, Bytes, Dbm, FlopRate, Hertz, Seconds, Watts


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
