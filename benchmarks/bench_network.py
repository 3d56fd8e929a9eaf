"""Network engine throughput against a bare SimPy Resource loop doing the same transfers, in one run.

Both sides run K sender processes, each doing M back-to-back transfers over one link. The baseline
holds a `simpy.Resource(capacity=1)` per transfer for bytes·8/rate + delay — the cheapest
store-and-forward link SimPy can express. The engine runs `net.send` (packetisation, sharing,
counters, one Recorder event per hop). Reported: simulated transfers per wall-clock second of each and
their ratio (target ≥ 0.5). Each engine run follows its baseline run in the same process, and the
median ratio over the pairs is reported, so machine load mostly cancels.

    python benchmarks/bench_network.py [--transfers 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Generator
from typing import Any

import numpy as np
import simpy

from netsim.network import LinkSpec, TransportSpec, build_network
from netsim.recorder import Recorder

RATE_MBPS = 100.0
DELAY_MS = 1.0
NBYTES = 4096


def baseline(n_senders: int, n_each: int) -> float:
    """Wall seconds for a Resource loop: acquire, timeout(bytes·8/rate + delay), release."""
    env = simpy.Environment()
    link = simpy.Resource(env, capacity=1)
    hold_s = NBYTES * 8 / (RATE_MBPS * 1e6) + DELAY_MS * 1e-3

    def sender() -> Generator[simpy.Event, Any, None]:
        for _ in range(n_each):
            with link.request() as req:
                yield req
                yield env.timeout(hold_s)

    for _ in range(n_senders):
        env.process(sender())
    t0 = time.perf_counter()
    env.run()
    return time.perf_counter() - t0


def engine(n_senders: int, n_each: int, discipline: str, transport: str) -> float:
    """Wall seconds for the same transfers through `Network.send`."""
    env = simpy.Environment()
    net = build_network(env, ["a", "b"], [LinkSpec(src="a", dst="b", rate_mbps=RATE_MBPS, delay_ms=DELAY_MS,
                                                   discipline=discipline)],
                        [], TransportSpec(kind=transport), np.random.default_rng(0), Recorder())

    def sender(i: int) -> Generator[simpy.Event, Any, None]:
        for _ in range(n_each):
            yield from net.send("a", "b", NBYTES, request_id=i, kind="bench")

    for i in range(n_senders):
        env.process(sender(i))
    t0 = time.perf_counter()
    env.run()
    assert net.links[("a", "b")].messages == n_senders * n_each
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cases = [(1, "fair", "ideal"), (8, "fair", "ideal"), (8, "fifo", "ideal"), (1, "fair", "tcp")]
    print(f"{args.transfers} transfers of {NBYTES} B over one {RATE_MBPS:g} Mbit/s, {DELAY_MS:g} ms link; "
          f"median of {args.repeat} interleaved pairs")
    print(f"{'senders':>7} {'discipline':>10} {'transport':>9} {'engine tr/s':>12} {'Resource tr/s':>14} "
          f"{'ratio':>6}")
    for n_senders, discipline, transport in cases:
        n_each = args.transfers // n_senders
        n = n_each * n_senders
        pairs = [(baseline(n_senders, n_each), engine(n_senders, n_each, discipline, transport))
                 for _ in range(args.repeat)]  # each pair back to back, so machine load mostly cancels
        base_s = statistics.median(b for b, _ in pairs)
        eng_s = statistics.median(e for _, e in pairs)
        ratio = statistics.median(b / e for b, e in pairs)
        print(f"{n_senders:>7} {discipline:>10} {transport:>9} {n / eng_s:>12,.0f} {n / base_s:>14,.0f} "
              f"{ratio:>6.2f}")


if __name__ == "__main__":
    main()
