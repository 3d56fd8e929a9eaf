"""`netsim profiles list|show NAME|runtimes|runtime NAME`: what each emulated device can do, what each
inference runtime gets out of it, and where every number comes from."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from netsim.errors import InputError
from netsim.hardware.profile import DeviceProfile, list_profiles, load_profile
from netsim.hardware.runtime import RuntimeProfile, list_runtimes, load_runtime

app = typer.Typer(help="Device and runtime profiles: emulated hardware, and what each inference runtime "
                       "achieves on it, with a source for every number.", no_args_is_help=True)


def _si(value: float, unit: str) -> str:
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.4g} {prefix}{unit}"
    return f"{value:.4g} {unit}"


def _gib(nbytes: float) -> str:
    """Memory sizes read as they are sold (8 GiB), not as 8.59 GB."""
    return f"{nbytes / 2**30:.3g} GiB"


def _fail(exc: InputError) -> typer.Exit:
    Console(stderr=True).print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(2)


@app.command("list")
def list_command() -> None:
    """One line per bundled profile: memory, bandwidth, fp16 peak, power."""
    try:
        profiles = list_profiles()
    except InputError as exc:
        raise _fail(exc) from exc
    table = Table(title="device profiles")
    for column in ("name", "kind", "runtime", "memory", "bandwidth", "peak fp16", "idle/active"):
        table.add_column(column, justify="left" if column in ("name", "kind", "runtime") else "right",
                         no_wrap=column == "name")
    for p in profiles:
        table.add_row(p.name, p.kind, p.runtime, _gib(p.memory_bytes), _si(p.mem_bw_bytes_per_s, "B/s"),
                      _si(p.peak_flops_for("float16"), "FLOP/s"),
                      f"{p.power_idle_w:.3g}/{p.power_active_w:.3g} W")
    Console().print(table)
    try:
        runtimes = list_runtimes()
    except InputError as exc:
        raise _fail(exc) from exc
    Console().print("runtimes: " + ", ".join(r.name for r in runtimes)
                    + "  (netsim profiles runtimes; a node picks one with `runtime:`)", highlight=False)


@app.command("runtimes")
def runtimes_command() -> None:
    """One line per bundled runtime profile: the devices and kinds it has efficiencies for, its formats."""
    try:
        runtimes = list_runtimes()
    except InputError as exc:
        raise _fail(exc) from exc
    table = Table(title="runtime profiles")
    for column in ("name", "efficiency for", "table", "formats", "KV dtypes"):
        table.add_column(column, overflow="fold", no_wrap=column == "name")
    for r in runtimes:
        table.add_row(r.name, ", ".join(r.efficiency) or "-", "yes" if r.table else "-", ", ".join(r.formats),
                      ", ".join(r.kv_dtypes))
    Console().print(table)


@app.command("runtime")
def runtime_command(name: str = typer.Argument(..., help="runtime name, or a path to a runtime YAML")
                    ) -> None:
    """Every number of one runtime profile with its source."""
    try:
        r = load_runtime(name)
    except InputError as exc:
        raise _fail(exc) from exc
    console = Console()
    console.print(f"[bold]{r.name}[/bold]: {r.description}", highlight=False)
    console.print(f"formats: {', '.join(r.formats)}  ({r.sources['formats']})", highlight=False)
    console.print(f"KV dtypes: {', '.join(r.kv_dtypes)}  ({r.sources['kv_dtypes']})", highlight=False)
    table = Table(show_lines=False)
    for column in ("for", "field", "value", "source"):
        table.add_column(column, overflow="fold", justify="right" if column == "value" else "left")
    for key, eff in r.efficiency.items():
        table.add_row(key, "eta_compute", f"{eff.eta_compute:.3g}", eff.sources["eta_compute"])
        table.add_row("", "eta_memory", f"{eff.eta_memory:.3g}", eff.sources["eta_memory"])
        table.add_row("", "overhead_per_call_s", f"{eff.overhead_per_call_s * 1e3:.3g} ms",
                      eff.sources["overhead_per_call_s"])
        if "overhead_per_token_s" in eff.sources:
            table.add_row("", "overhead_per_token_s", f"{eff.overhead_per_token_s * 1e3:.3g} ms",
                          eff.sources["overhead_per_token_s"])
    if r.efficiency:
        console.print(table)
    if r.table is not None:
        _print_table(console, r)


def _print_table(console: Console, r: RuntimeProfile) -> None:
    assert r.table is not None
    console.print(f"measured latencies ({r.table.source}); overhead per call "
                  f"{r.table.overhead_per_call_s * 1e3:.3g} ms", highlight=False)
    for phase in ("prefill", "decode", "verify"):
        value = getattr(r.table, f"{phase}_s_per_token")
        if value is None:
            console.print(f"  {phase}: charged as {r.table.resolved_phase(phase)}", highlight=False)
        elif isinstance(value, list):
            sizes = "; ".join(", ".join(f"{a}={getattr(pt, a)}" for a in pt.axes)
                              + f": {pt.s_per_token * 1e3:.4g} ms" for pt in value)
            console.print(f"  {phase} per token: {sizes}", highlight=False)
        else:
            console.print(f"  {phase}: {value * 1e3:.4g} ms per token", highlight=False)


def _rows(p: DeviceProfile) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = [
        ("memory_bytes", _gib(p.memory_bytes), p.sources.get("memory_bytes", "")),
    ]
    if "memory_reserved_bytes" in p.sources:
        rows.append(("memory_reserved_bytes", _si(p.memory_reserved_bytes, "B"),
                     p.sources["memory_reserved_bytes"]))
    rows.append(("mem_bw_bytes_per_s", _si(p.mem_bw_bytes_per_s, "B/s"), p.sources["mem_bw_bytes_per_s"]))
    for dtype, flops in p.peak_flops.items():
        rows.append((f"peak_flops.{dtype}", _si(flops, "FLOP/s"), p.sources[f"peak_flops.{dtype}"]))
    rows += [
        ("eta_compute", f"{p.eta_compute or 0:.3g}", p.sources.get("eta_compute", "")),
        ("eta_memory", f"{p.eta_memory or 0:.3g}", p.sources.get("eta_memory", "")),
        ("overhead_per_call_s", f"{(p.overhead_per_call_s or 0) * 1e3:.3g} ms",
         p.sources.get("overhead_per_call_s", "")),
        ("overhead_per_token_s", f"{(p.overhead_per_token_s or 0) * 1e3:.3g} ms",
         p.sources.get("overhead_per_token_s", "not charged (0)")),
        ("power_idle_w", f"{p.power_idle_w:.3g} W", p.sources["power_idle_w"]),
        ("power_active_w", f"{p.power_active_w:.3g} W", p.sources["power_active_w"]),
    ]
    for field in ("radio_tx_j_per_bit", "radio_rx_j_per_bit"):
        value = getattr(p, field)
        rows.append((field, "wired" if value is None else f"{value * 1e9:.4g} nJ/bit",
                     p.sources.get(field, "no radio: wired server")))
    return rows


@app.command("show")
def show_command(name: str = typer.Argument(..., help="profile name, or a path to a profile YAML")) -> None:
    """Every field of one profile with its source."""
    try:
        p = load_profile(name)
    except InputError as exc:
        raise _fail(exc) from exc
    console = Console()
    console.print(f"[bold]{p.name}[/bold] ({p.kind}): {p.description}", highlight=False)
    console.print(f"runtime: {p.runtime} (default; efficiencies below are its entry for this device — "
                  f"`netsim profiles runtime {p.runtime}`)", highlight=False)
    table = Table(show_lines=False)
    table.add_column("field")
    table.add_column("value", justify="right")
    table.add_column("source", overflow="fold")
    for row in _rows(p):
        table.add_row(*row)
    console.print(table)
    console.print("dtypes not listed run at: "
                  + ", ".join(f"{d} → {p.effective_dtype(d)}" for d in
                              ("float32", "float16", "bfloat16", "int8", "int4")
                              if p.effective_dtype(d) != d), highlight=False)
