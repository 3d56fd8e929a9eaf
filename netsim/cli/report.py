"""`netsim report DIR [-o FILE.html]`: figures and one self-contained HTML page of a run or a sweep.

The command only reads results (netsim/report/); a directory that is neither a run dir nor a sweep dir,
an unreadable result file or a target netsim did not write is one `error:` line and exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def report_command(
    directory: Annotated[Path, typer.Argument(help="a run dir (netsim run) or a sweep dir (netsim sweep)")],
    out: Annotated[Path | None, typer.Option(
        "-o", "--out", help="the HTML file (default: DIR/report.html for a sweep, DIR-report/report.html "
                            "beside a run dir); PNG and SVG figures go to figures/ beside it")] = None,
) -> None:
    """Draw a run's or a sweep's figures (PNG, SVG) and write one self-contained HTML page."""
    from netsim.report import write_report

    report = write_report(directory, out)
    typer.echo(f"report of the {report.kind} in {directory}: {report.html}\n"
               f"  {len(report.figures) // 2} figures (PNG and SVG) in {report.html.parent / 'figures'}/")
    if report.finding:
        typer.echo(f"  {report.finding}")
