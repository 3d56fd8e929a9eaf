"""Command-line entry point (filled in by the core)."""


def main() -> None:  # pragma: no cover - replaced by the typer app
    raise SystemExit("netsim CLI not wired yet")
