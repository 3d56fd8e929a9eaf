"""`netsim models list|show|verify|build|import|eval`: the models a scenario can name, and their checks.

Bad input (an unknown name, a corrupt or mismatched model file) prints one line on stderr and exits 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from netsim.errors import InputError, ModelError
from netsim.lm.cards import list_cards, read_card
from netsim.lm.geometry import ModelGeometry
from netsim.lm.manifest import MANIFEST_FILE, read_manifest
from netsim.lm.onnx_lm import OnnxCausalLM, geometry_from_onnx
from netsim.lm.zoo import VERIFY_MAX_ABS_LOGIT_DIFF, ModelStore, verify_model
from netsim.paths import bundled_models_dir, cache_dir

app = typer.Typer(help="Language models: bundled, built or imported into the cache; cost cards.",
                  no_args_is_help=True)


def _console() -> Console:
    """Rich wraps at 80 columns when output is not a terminal; these tables need ~130."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def _fail(exc: InputError) -> typer.Exit:
    Console(stderr=True).print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _where(path: Path) -> str:
    if path.parent == bundled_models_dir():
        return "bundled"
    return "cache" if path.parent == cache_dir() / "models" else str(path.parent)


def _geometry_columns(g: ModelGeometry) -> list[str]:
    return [g.architecture, f"{g.n_params / 1e6:.1f}M", str(g.n_layers), str(g.hidden_size),
            f"{g.n_heads}/{g.n_kv_heads}×{g.head_dim}", f"{g.vocab_size:,}", g.dtype,
            f"{g.kv_bytes_per_token:,}"]


_GEOMETRY_HEADERS = ("arch", "params", "layers", "hidden", "heads/kv×dim", "vocab", "dtype", "KV B/token")


@app.command("list")
def list_command() -> None:
    """Models on the search path (bundled first, then the cache) and the cost cards, with geometry."""
    store = ModelStore()
    console = _console()
    models = Table(title="models")
    for header in ("name", "role", *_GEOMETRY_HEADERS, "MB", "where"):
        models.add_column(header, justify="left" if header in ("name", "role", "arch", "where") else "right")
    for name in store.names():
        path = store.path(name)
        try:
            if (path / MANIFEST_FILE).is_file():
                manifest = read_manifest(path)
                role, geometry = manifest.role, manifest.geometry
            else:
                role, geometry = "any", geometry_from_onnx(path / "model.onnx")
        except ModelError as exc:
            console.print(f"[yellow]skipped[/] {name}: {exc}", highlight=False)
            continue
        size_mb = sum(f.stat().st_size for f in path.iterdir() if f.is_file()) / 1e6
        models.add_row(name, role, *_geometry_columns(geometry), f"{size_mb:.1f}", _where(path))
    console.print(models)
    cards = Table(title="cost cards (charged_as: NAME)")
    for header in ("name", *_GEOMETRY_HEADERS):
        cards.add_column(header, justify="left" if header in ("name", "arch") else "right")
    for name in list_cards():
        cards.add_row(name, *_geometry_columns(read_card(name).geometry))
    console.print(cards)
    console.print("More: `netsim models build NAME` (e.g. smollm2-135m) or `netsim models import PATH`.",
                  highlight=False, markup=False)


@app.command("show")
def show_command(
    name: Annotated[str, typer.Argument(help="model or cost-card name")],
    card: Annotated[bool, typer.Option("--card", help="the cost card even if a model has this name")] = False,
) -> None:
    """The manifest of a model (files, hashes, geometry, licence, provenance), or a cost card."""
    store = ModelStore()
    try:
        if card or (name in list_cards() and name not in store.names()):
            data = read_card(name).model_dump(mode="json")
        else:
            path = store.path(name)
            if (path / MANIFEST_FILE).is_file():
                data = {"path": str(path), **read_manifest(path).model_dump(mode="json")}
            else:
                data = {"path": str(path), "manifest": None,
                        "geometry": geometry_from_onnx(path / "model.onnx").model_dump(mode="json")}
    except InputError as exc:
        raise _fail(exc) from exc
    typer.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110).rstrip())


@app.command("verify")
def verify_command(
    names: Annotated[list[str] | None, typer.Argument(help="models to check (default: all)")] = None,
) -> None:
    """Re-hash every file against model.yaml, check the graph and tokenizer, and compare incremental
    decoding with a full recompute (max |Δlogit| < 1e-4). Exit 2 if any model fails."""
    store = ModelStore()
    console = _console()
    try:
        paths = {name: store.path(name) for name in (names or store.names())}
    except InputError as exc:
        raise _fail(exc) from exc
    table = Table(title="verify")
    for header in ("name", "files hashed", "tokens", "max |Δlogit|", "result"):
        table.add_column(header, justify="left" if header in ("name", "result") else "right")
    failures: list[str] = []
    for name, path in paths.items():
        try:
            check = verify_model(path)
        except InputError as exc:
            failures.append(f"{name}: {exc}")
            table.add_row(name, "–", "–", "–", "[red]FAIL[/] (see below)")
            continue
        if not check.ok:
            failures.append(f"{name}: incremental decode differs from recompute by "
                            f"{check.max_abs_logit_diff:.3g} (limit {VERIFY_MAX_ABS_LOGIT_DIFF:g})")
        table.add_row(name, str(check.files_checked), str(check.n_tokens),
                      f"{check.max_abs_logit_diff:.2e}", "[green]ok[/]" if check.ok else "[red]FAIL[/]")
    console.print(table)
    if failures:
        err = Console(stderr=True)
        for line in failures:
            err.print(f"error: {line}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2)


@app.command("build")
def build_command(
    name: Annotated[str, typer.Argument(help="recipe name, e.g. smollm2-135m")],
    force: Annotated[bool, typer.Option("--force", help="rebuild even if the model exists")] = False,
) -> None:
    """Build a real pretrained model into the cache (offline; needs the `train` extra)."""
    from netsim.lm.build import build_model

    try:
        path = build_model(name, force=force)
    except InputError as exc:
        raise _fail(exc) from exc
    typer.echo(f"built {name}: {path}")


@app.command("import")
def import_command(
    path: Annotated[Path, typer.Argument(help="GGUF file, Hugging Face model dir, or Optimum ONNX dir")],
    name: Annotated[str | None, typer.Option("--name", help="model name (default: from the path)")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace a model of the same name")] = False,
) -> None:
    """Convert a model into netsim's layout under the cache, with a manifest."""
    from netsim.lm.importer import import_model

    try:
        out = import_model(path, name, force=force)
    except InputError as exc:
        raise _fail(exc) from exc
    typer.echo(f"imported {out.name}: {out}")


@app.command("eval")
def eval_command(
    names: Annotated[list[str] | None, typer.Argument(help="models (default: the bundled ones)")] = None,
    passages: Annotated[int, typer.Option(help="held-out passages for next-token accuracy/NLL")] = 64,
    questions: Annotated[int, typer.Option(help="multiple-choice questions (true next line among 4)")] = 200,
    seed: Annotated[int, typer.Option(help="which passages and questions are drawn")] = 0,
    threads: Annotated[int, typer.Option(help="onnxruntime intra-op threads")] = 1,
) -> None:
    """Held-out evaluation tasks with ground truth: next-token accuracy and NLL, and multiple choice."""
    from netsim.lm.evaluate import TABLE_COLUMNS, evaluate_models

    store = ModelStore()
    try:
        chosen = names or [n for n in store.names() if store.path(n).parent == bundled_models_dir()]
        if not chosen:
            raise ModelError("no models to evaluate: name some, or build the bundled zoo first")
        models = [OnnxCausalLM.load(store.path(n), threads=threads, name=n) for n in chosen]
        rows = evaluate_models(models, n_passages=passages, n_questions=questions, seed=seed)
    except InputError as exc:
        raise _fail(exc) from exc
    columns = TABLE_COLUMNS
    values = {(r["model"], r["task"], r["metric"]): r for r in rows}
    table = Table(title=f"held-out evaluation (seed {seed})")
    table.add_column("model")
    table.add_column("tokens", justify="right")
    for *_, title in columns:
        table.add_column(title, justify="right")
    for model in dict.fromkeys(r["model"] for r in rows):
        cells = []
        for task, metric, _ in columns:
            row = values.get((model, task, metric))
            value = None if row is None else row["value"]
            cells.append("–" if value is None else f"{value:.1%}" if "accuracy" in metric else f"{value:.3f}")
        n_tokens = values.get((model, "next_token", "accuracy"), {}).get("n", 0)
        table.add_row(model, f"{n_tokens:,}", *cells)
    _console().print(table)
    typer.echo(f"{passages} held-out passages (tokens counted with each model's own tokenizer), "
               f"{questions} multiple-choice questions with 4 options (chance 25%)")
