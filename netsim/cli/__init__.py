"""`netsim` command line: a dozen lines per command — load, check, run, write.

Bad input anywhere ends with exit code 2 and one line per problem on stderr (no traceback unless
`--debug`); nothing is written when the input is bad.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console

from netsim.errors import InputError, ScenarioError

try:  # typer >= 0.24 raises its own bundled copy of click's exceptions; older typer raises click's
    from typer._click import exceptions as typer_exceptions
except ImportError:  # pragma: no cover - depends on the installed typer
    typer_exceptions = click.exceptions

app = typer.Typer(help="Simulate collaborative LLM inference over networks.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)


def _show_version(value: bool) -> None:
    if value:
        from netsim.version import __version__

        typer.echo(f"netsim {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_show_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """Simulate collaborative LLM inference over networks."""


def _mount_subapps() -> None:
    """Add the sub-command groups once (their modules load only when the command line runs)."""
    if any(group.name == "models" for group in app.registered_groups):
        return
    from netsim.cli.models import app as models_app
    from netsim.cli.profiles import app as profiles_app
    from netsim.cli.report import report_command
    from netsim.cli.sweep import sweep_command

    app.add_typer(models_app, name="models", help="Bundled and cached language models, cost cards.")
    app.add_typer(profiles_app, name="profiles", help="Device hardware profiles.")
    app.command("sweep")(sweep_command)
    app.command("report")(report_command)


@app.command()
def run(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML")],
    out: Annotated[Path | None,
                   typer.Option("-o", "--out", help="run dir (default: outputs.dir, else runs/NAME or, "
                                "if that exists, the first free runs/NAME-2, -3, ...)")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="replace the run dir if it holds an earlier "
                                            "netsim run (and nothing else)")] = False,
    seed: Annotated[int | None, typer.Option(help="override the scenario seed")] = None,
    set_: Annotated[list[str] | None,
                    typer.Option("--set", help="override a field: dotted.path=value")] = None,
) -> None:
    """Run one scenario and write requests/events parquet, summary.json and the resolved scenario."""
    from netsim.cli.progress import run_with_progress

    overrides = [*(set_ or []), *([f"seed={seed}"] if seed is not None else [])]
    from netsim.rundir import choose_run_dir
    from netsim.scenario import load_scenario

    sc = load_scenario(scenario, overrides)
    out_dir = choose_run_dir(out, sc.outputs.dir, sc.name, overwrite)  # refused before the run, not after
    results = run_with_progress(sc, Console(stderr=True))
    results.write(out_dir, overwrite)
    typer.echo(results_paragraph(results.summary, out_dir))


@app.command()
def validate(
    scenario: Annotated[Path | None, typer.Argument(help="scenario YAML")] = None,
    schema: Annotated[bool, typer.Option("--schema", help="print the scenario JSON Schema")] = False,
    set_: Annotated[list[str] | None,
                    typer.Option("--set", help="override a field: dotted.path=value")] = None,
) -> None:
    """Check a scenario without running it: exit 0, or exit 2 with one line per problem."""
    from netsim.budget import estimate
    from netsim.scenario import load_scenario, scenario_json_schema
    from netsim.validation import check_scenario

    if schema:
        typer.echo(json.dumps(scenario_json_schema(), indent=2))
        return
    if scenario is None:
        raise InputError("validate: give a SCENARIO file (or --schema)")
    sc = load_scenario(scenario, set_ or [])
    check_scenario(sc)
    from netsim.rundir import check_run_dir

    # overwrite=True: an earlier run there is not a scenario problem; the rest not even --overwrite passes
    if sc.outputs.dir is not None and (problem := check_run_dir(sc.outputs.dir, overwrite=True)):
        raise ScenarioError([f"outputs.dir: {problem}"])
    devices = sum(1 for n in sc.topology.nodes.values() if n.role == "device")
    typer.echo(f"ok: {sc.name}: {len(sc.topology.nodes)} nodes ({devices} devices), "
               f"policy {sc.policy.name}, {sc.workload.n_requests} requests; estimate: {estimate(sc)}")


def results_paragraph(summary: dict, out_dir: Path) -> str:
    """The end-of-run summary as plain lines (no terminal wrapping when piped), every figure labelled."""

    def ms(value: float | None) -> str:
        return "–" if value is None else f"{value * 1e3:,.1f} ms"

    rows = [("TTFT", summary["ttft_s"]), ("TPOT", summary["tpot_s"]), ("end-to-end", summary["e2e_s"])]
    bpt = summary["bytes_per_output_token"]
    codes = ", ".join(f"{code} {n}" for code, n in (summary.get("fail_reasons") or {}).items())
    lines = [
        f"{summary['scenario']} with {summary['policy']} (seed {summary['seed']}): "
        f"{summary['n_ok']}/{summary['n_requests']} requests ok, {summary['n_failed']} failed"
        f"{f' ({codes})' if codes else ''}, "
        f"{summary['n_output_tokens']:,} output tokens",
        f"  {'latency over ok requests':<26}{'mean':>12}{'p50':>12}{'p95':>12}",
        *(f"  {label:<26}{ms(s['mean']):>12}{ms(s['p50']):>12}{ms(s['p95']):>12}" for label, s in rows),
        f"  bytes moved: {summary['bytes_total']:,} in total ({summary['bytes_up']:,} up from devices, "
        f"{summary['bytes_down']:,} down to them), "
        f"{'–' if bpt is None else f'{bpt:,.1f}'} per output token",
        f"  requesting devices' energy: {summary['energy_device_j']:.3g} J = radio "
        f"{summary['energy_radio_j']:.3g} J + compute {summary['energy_compute_j']:.3g} J "
        "(idle energy per profile in summary.json)",
        f"  simulated time {summary['sim_end_s']:.3f} s; results in {out_dir}/",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every usage slip and every bad input ends with exit 2 and one line on stderr.

    typer bundles its own copy of click, so its usage errors are typer's classes, not click's; both are
    caught. `netsim validate` is the one command that lists every problem (one line each, then a count);
    elsewhere the first problem is shown with a pointer to `validate`. Anything else is a netsim bug:
    one line and exit 1, with the traceback behind `--debug`.
    """
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    args = [a for a in argv if a != "--debug"]
    _mount_subapps()
    try:
        code = app(args=args, prog_name="netsim", standalone_mode=False)
    except (click.ClickException, typer_exceptions.ClickException) as exc:
        if debug:
            raise
        _usage_error(exc)
    except (click.exceptions.Abort, typer.Abort, KeyboardInterrupt):
        print("error: interrupted; nothing was written", file=sys.stderr)
        sys.exit(130)
    except (click.exceptions.Exit, typer.Exit) as exc:
        sys.exit(exc.exit_code)
    except InputError as exc:
        if debug:
            raise
        _input_error(exc, listing=bool(args) and args[0] == "validate")
    except Exception as exc:  # a bug, not bad input: one line, the traceback on request
        if debug:
            raise
        print(f"error: internal error ({type(exc).__name__}: {_one_line(str(exc))}); rerun with --debug "
              "for the traceback and report it", file=sys.stderr)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _usage_error(exc: click.ClickException | typer_exceptions.ClickException) -> None:
    if isinstance(exc, (click.exceptions.NoArgsIsHelpError, typer_exceptions.NoArgsIsHelpError)):
        exc.show()  # `netsim` alone, or a group without its command: the help is the answer
        sys.exit(2)
    ctx = getattr(exc, "ctx", None)
    where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    print(f"error: {_one_line(exc.format_message())}{where}", file=sys.stderr)
    sys.exit(2)


def _input_error(exc: InputError, listing: bool) -> None:
    lines = [_one_line(p) for p in exc.problems] if isinstance(exc, ScenarioError) else [_one_line(str(exc))]
    if listing:
        for line in lines:
            print(f"error: {line}", file=sys.stderr)
        if len(lines) > 1:
            print(f"error: {len(lines)} problems", file=sys.stderr)
    else:
        more = f" (+{len(lines) - 1} more; `netsim validate` lists them all)" if len(lines) > 1 else ""
        print(f"error: {lines[0]}{more}", file=sys.stderr)
    sys.exit(2)
