"""ModelStore lookup and sharing, verify_model, and `netsim models` on the command line (exit codes)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from runtime_models import export_independent, export_netsim, tiny_model, train_tokenizer, vocab_size
from typer.testing import CliRunner

from netsim.cli.models import app
from netsim.errors import ModelError
from netsim.lm.memo import LanguageModel
from netsim.lm.sampling import SamplingSpec
from netsim.lm.zoo import ModelStore, verify_model


@pytest.fixture(scope="module")
def search_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two model directories: `alpha` (netsim export, manifest) and `beta` (independent export, none)."""
    root = tmp_path_factory.mktemp("models")
    tokenizer_json = train_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")
    vocab = vocab_size(tokenizer_json)
    export_netsim(tiny_model("llama", vocab), root / "alpha", tokenizer_json, "alpha")
    export_independent(tiny_model("qwen3", vocab, seed=3), root / "beta", tokenizer_json)
    (root / "cards").mkdir()  # not a model: ignored
    return root


def test_names_paths_and_unknown_names(search_root: Path, tmp_path: Path) -> None:
    store = ModelStore([search_root, tmp_path / "missing"])
    assert store.names() == ["alpha", "beta"]
    assert store.path("beta") == search_root / "beta"
    assert store.manifest("alpha").name == "alpha"
    with pytest.raises(ModelError, match=r"unknown model 'gamma' \(known: alpha, beta"):
        store.path("gamma")


def test_first_directory_on_the_search_path_wins(search_root: Path, tmp_path: Path) -> None:
    shutil.copytree(search_root / "alpha", tmp_path / "alpha")
    assert ModelStore([tmp_path, search_root]).path("alpha") == tmp_path / "alpha"
    assert ModelStore([search_root, tmp_path]).path("alpha") == search_root / "alpha"


def test_load_once_per_store_and_share(search_root: Path, tmp_path: Path) -> None:
    store = ModelStore([search_root], disk_memo=tmp_path / "memo")
    alpha = store.load("alpha")
    assert isinstance(alpha, LanguageModel) and store.load("alpha") is alpha
    assert alpha.geometry.n_layers == 2 and alpha.sha256 == store.manifest("alpha").sha256["model.onnx"]
    out = alpha.generate([1, 2, 3], 5, SamplingSpec(), seed=0, stop_at_eos=False)
    assert (tmp_path / "memo" / f"{alpha.sha256}.sqlite").is_file()
    other_process = ModelStore([search_root], disk_memo=tmp_path / "memo").load("alpha")
    assert other_process.generate([1, 2, 3], 5, SamplingSpec(), seed=0, stop_at_eos=False) == out
    assert other_process.n_model_calls == 0
    assert store.card("qwen3-0.6b").kv_bytes_per_token == 114_688


def test_verify_model_reports_a_small_difference(search_root: Path) -> None:
    for name in ("alpha", "beta"):
        check = verify_model(search_root / name)
        assert check.ok and 0 <= check.max_abs_logit_diff < 1e-4
    assert verify_model(search_root / "alpha").files_checked == 3  # model, tokenizer, config


def test_beta_geometry_has_no_manifest_but_reads_the_graph(search_root: Path) -> None:
    lm = ModelStore([search_root]).load("beta")
    assert lm.lm.manifest is None and lm.geometry.architecture == "qwen3"
    assert lm.geometry.n_kv_heads == 1 and lm.geometry.head_dim == 24
    assert np.isfinite(lm.next_logits([4, 5, 6])).all()


# -- CLI ---------------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(search_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI sees the test models first on its search path and a private cache."""
    extra = tmp_path / "extra"
    shutil.copytree(search_root, extra)
    monkeypatch.setenv("NETSIM_MODELS_PATH", str(extra))
    monkeypatch.setenv("NETSIM_CACHE_DIR", str(tmp_path / "cache"))
    return extra


def test_cli_list_show_verify(cli_env: Path) -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["list"])
    assert listed.exit_code == 0, listed.output
    assert "alpha" in listed.output and "qwen3-0.6b" in listed.output and "114,688" in listed.output
    shown = runner.invoke(app, ["show", "alpha"])
    assert shown.exit_code == 0 and "sha256:" in shown.output and "n_layers: 2" in shown.output
    card = runner.invoke(app, ["show", "llama-3.2-1b"])
    assert card.exit_code == 0 and "n_kv_heads: 8" in card.output
    (cli_env / "qwen3-4b").symlink_to(cli_env / "alpha")  # a model named like a card wins, --card shows it
    assert "name: alpha" in runner.invoke(app, ["show", "qwen3-4b"]).output
    assert "n_layers: 36" in runner.invoke(app, ["show", "qwen3-4b", "--card"]).output
    verified = runner.invoke(app, ["verify", "alpha", "beta"])
    assert verified.exit_code == 0, verified.output
    assert verified.output.count("ok") >= 2


def test_cli_bad_input_exits_2_with_one_line(cli_env: Path) -> None:
    runner = CliRunner()
    unknown = runner.invoke(app, ["show", "no-such-model"])
    assert unknown.exit_code == 2
    assert unknown.stderr.strip().count("\n") == 0 and "unknown model 'no-such-model'" in unknown.stderr
    with (cli_env / "alpha" / "model.onnx").open("ab") as f:
        f.write(b"corrupt")
    corrupt = runner.invoke(app, ["verify", "alpha"])
    assert corrupt.exit_code == 2
    assert "sha256" in corrupt.stderr and corrupt.stderr.strip().count("\n") == 0
    (cli_env / "beta" / "model.onnx").write_bytes(b"not onnx at all")
    assert runner.invoke(app, ["verify", "beta"]).exit_code == 2
    missing = runner.invoke(app, ["import", str(cli_env / "does-not-exist")])
    assert missing.exit_code == 2 and "no such file" in missing.stderr


def test_cli_eval_prints_the_task_numbers(search_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETSIM_MODELS_PATH", str(search_root))  # the corpus stays in the usual cache
    result = CliRunner().invoke(app, ["eval", "alpha", "beta", "--passages", "2", "--questions", "4"])
    assert result.exit_code == 0, result.output
    for text in ("alpha", "beta", "next-token acc", "NLL nats/token", "MC acc", "4 multiple-choice"):
        assert text in result.output
    nll = [float(line.split("│")[4]) for line in result.output.splitlines() if line.startswith("│ alpha")]
    assert len(nll) == 1 and 4.0 < nll[0] < 8.0  # a random 320-token model: about ln 320 ≈ 5.8 nats
