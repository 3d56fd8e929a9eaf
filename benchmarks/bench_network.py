"""Network engine throughput against a bare SimPy Resource loop doing the same transfers, in one run.

1. Engine ÷ Resource loop. Both sides run K sender processes, each doing M back-to-back transfers over
   one link. The baseline holds a `simpy.Resource(capacity=1)` per transfer for bytes·8/rate + delay —
   the cheapest store-and-forward link SimPy can express. The engine runs `net.send` (packetisation,
   sharing, counters, one Recorder event per hop). Reported: simulated transfers per wall-clock second
   of each and their ratio (target ≥ 0.5). Each engine run follows its baseline run in the same
   process, and the median ratio over the pairs is reported, so machine load mostly cancels.
2. Fair sharing at scale: wall time per transfer on one `fair` link with N flows always present (N
   senders, back-to-back transfers of 1–7 KiB drawn per sender, so departures do not coincide), at
   N = 10 and N = 4,000, measured alternately; target: the 4,000-flow cost ≤ 3× the 10-flow cost.
3. Common random numbers: the cost of one keyed draw (a fading block, a lossy message-hop's packet
   losses) through `KeyedStreams`, against seeding a generator per identity with `default_rng`.

    python benchmarks/bench_network.py [--transfers 20000] [--repeat 5] [--scale-transfers 100000]
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
from netsim.network.channel import FADING_CHUNK_BLOCKS, KeyedStreams
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


def fair_scale(n_flows: int, n_transfers: int) -> float:
    """Wall seconds per transfer with `n_flows` senders keeping one fair link busy."""
    env = simpy.Environment()
    net = build_network(env, ["a", "b"], [LinkSpec(src="a", dst="b", rate_mbps=RATE_MBPS, delay_ms=DELAY_MS)],
                        [], TransportSpec(), np.random.default_rng(0), Recorder())
    n_each = max(1, n_transfers // n_flows)
    sizes = np.random.default_rng(1).integers(1024, 7 * 1024, size=(n_flows, n_each)).tolist()

    def sender(i: int) -> Generator[simpy.Event, Any, None]:
        for nbytes in sizes[i]:
            yield from net.send("a", "b", nbytes, request_id=i, kind="bench")

    for i in range(n_flows):
        env.process(sender(i))
    t0 = time.perf_counter()
    env.run()
    assert net.links[("a", "b")].messages == n_flows * n_each
    return (time.perf_counter() - t0) / (n_flows * n_each)


def keyed_draws(n: int) -> dict[str, float]:
    """Microseconds per draw: keyed Philox streams against a `default_rng` seeded per identity."""
    streams = KeyedStreams((12345, 678))
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    for chunk in range(n // FADING_CHUNK_BLOCKS):
        streams.at(1, 2, chunk << 1).exponential(size=FADING_CHUNK_BLOCKS)
    out["fading block, keyed chunk of 256"] = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for block in range(n):
        np.random.default_rng([7, 3, 1, 2, 0, block]).exponential()
    out["fading block, default_rng per block"] = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for message in range(n):
        streams.at(5, 3, message << 16).geometric(0.99, size=3)
    out["loss draws of a 3-packet message-hop, keyed"] = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for message in range(n):
        np.random.default_rng([7, 4, 5, 3, message, 0]).geometric(0.99, size=3)
    out["loss draws of a 3-packet message-hop, default_rng"] = (time.perf_counter() - t0) / n * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scale-transfers", type=int, default=100_000)
    parser.add_argument("--flows", type=int, nargs=2, default=[10, 4000], metavar=("FEW", "MANY"))
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

    few, many = args.flows
    print(f"\nfair link, {args.scale_transfers} transfers of 1-7 KiB, N flows always present; "
          f"median of {args.repeat} alternated runs")
    runs = [(fair_scale(few, args.scale_transfers), fair_scale(many, args.scale_transfers))
            for _ in range(args.repeat)]
    few_s = statistics.median(a for a, _ in runs)
    many_s = statistics.median(b for _, b in runs)
    ratio = statistics.median(b / a for a, b in runs)
    print(f"{'flows':>7} {'us/transfer':>12}")
    print(f"{few:>7} {few_s * 1e6:>12.2f}\n{many:>7} {many_s * 1e6:>12.2f}\n"
          f"{many} ÷ {few} flows: {ratio:.2f} (target ≤ 3)")

    print("\nkeyed random draws (common random numbers), us per draw")
    for name, us in keyed_draws(20_000).items():
        print(f"  {name:<50} {us:>7.2f}")


if __name__ == "__main__":
    main()
