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

app = typer.Typer(help="Simulate collaborative LLM inference over networks.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)


def _mount_subapps() -> None:
    from netsim.cli.models import app as models_app
    from netsim.cli.profiles import app as profiles_app

    app.add_typer(models_app, name="models", help="Bundled and cached language models, cost cards.")
    app.add_typer(profiles_app, name="profiles", help="Device hardware profiles.")


@app.command()
def run(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML")],
    out: Annotated[Path | None,
                   typer.Option("-o", "--out", help="run dir (default: outputs.dir or runs/NAME)")] = None,
    seed: Annotated[int | None, typer.Option(help="override the scenario seed")] = None,
    set_: Annotated[list[str] | None,
                    typer.Option("--set", help="override a field: dotted.path=value")] = None,
) -> None:
    """Run one scenario and write requests/events parquet, summary.json and the resolved scenario."""
    from netsim.report.console import run_with_progress

    overrides = [*(set_ or []), *([f"seed={seed}"] if seed is not None else [])]
    from netsim.scenario import load_scenario

    sc = load_scenario(scenario, overrides)
    results = run_with_progress(sc, Console(stderr=True))
    out_dir = results.write(out or sc.outputs.dir or Path("runs") / sc.name)
    Console().print(results_paragraph(results.summary, out_dir))


@app.command()
def validate(
    scenario: Annotated[Path | None, typer.Argument(help="scenario YAML")] = None,
    schema: Annotated[bool, typer.Option("--schema", help="print the scenario JSON Schema")] = False,
    set_: Annotated[list[str] | None,
                    typer.Option("--set", help="override a field: dotted.path=value")] = None,
) -> None:
    """Check a scenario without running it: exit 0, or exit 2 with one line per problem."""
    from netsim.scenario import load_scenario, scenario_json_schema
    from netsim.world import check_scenario

    if schema:
        typer.echo(json.dumps(scenario_json_schema(), indent=2))
        return
    if scenario is None:
        raise InputError("validate: give a SCENARIO file (or --schema)")
    sc = load_scenario(scenario, set_ or [])
    check_scenario(sc)
    devices = sum(1 for n in sc.topology.nodes.values() if n.role == "device")
    typer.echo(f"ok: {sc.name}: {len(sc.topology.nodes)} nodes ({devices} devices), "
               f"policy {sc.policy.name}, {sc.workload.n_requests} requests")


def results_paragraph(summary: dict, out_dir: Path) -> str:
    def ms(stat: dict) -> str:
        return "–" if stat["mean"] is None else f"{stat['mean'] * 1e3:.1f} ms (p95 {stat['p95'] * 1e3:.1f})"

    bpt = summary["bytes_per_output_token"]
    return (
        f"[bold]{summary['scenario']}[/] with [bold]{summary['policy']}[/] (seed {summary['seed']}): "
        f"{summary['n_ok']}/{summary['n_requests']} requests ok, {summary['n_failed']} failed; "
        f"{summary['n_output_tokens']} output tokens. TTFT {ms(summary['ttft_s'])}, "
        f"TPOT {ms(summary['tpot_s'])}, end-to-end {ms(summary['e2e_s'])}. "
        f"{summary['bytes_total']:,} bytes moved ({'–' if bpt is None else f'{bpt:.1f}'} per token), "
        f"device energy {summary['energy_device_j']:.3g} J. Simulated {summary['sim_end_s']:.3f} s. "
        f"Results in {out_dir}/"
    )


def main() -> None:
    """Entry point: maps bad input to exit 2 and one line per problem."""
    argv = sys.argv[1:]
    debug = "--debug" in argv
    _mount_subapps()
    try:
        code = app(args=[a for a in argv if a != "--debug"], prog_name="netsim", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(1)
    except InputError as exc:
        if debug:
            raise
        lines = exc.problems if isinstance(exc, ScenarioError) else [str(exc)]
        for line in lines:
            print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
