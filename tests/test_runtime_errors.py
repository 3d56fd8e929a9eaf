"""Broken model directories fail at load with one line naming the problem (the CLI's exit-2 path)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch
from runtime_models import export_netsim, tiny_model, train_tokenizer, vocab_size

from netsim.errors import ModelError
from netsim.lm.manifest import read_manifest, sha256_file, write_manifest
from netsim.lm.onnx_lm import OnnxCausalLM


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tokenizer_json = train_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")
    model = tiny_model("llama", vocab_size(tokenizer_json))
    return export_netsim(model, tmp_path_factory.mktemp("good"), tokenizer_json, "good")


@pytest.fixture
def model_dir(good_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(good_dir, tmp_path / "model"))


def _load_error(path: Path) -> str:
    with pytest.raises(ModelError) as info:
        OnnxCausalLM.load(path)
    message = str(info.value)
    assert "\n" not in message and len(message) < 300
    return message


def _rehash(model_dir: Path) -> None:
    """Make model.yaml agree with the files again, so a check behind the hash check is reached."""
    manifest = read_manifest(model_dir)
    hashes = {name: sha256_file(model_dir / name) for name in manifest.sha256}
    write_manifest(model_dir, manifest.model_copy(update={"sha256": hashes}))


def test_good_directory_loads(model_dir: Path) -> None:
    assert OnnxCausalLM.load(model_dir).name == "good"


def test_missing_directory(tmp_path: Path) -> None:
    assert "no such model directory" in _load_error(tmp_path / "nope")


def test_missing_model_file(model_dir: Path) -> None:
    (model_dir / "model.onnx").unlink()
    assert "model.onnx missing" in _load_error(model_dir)


def test_missing_tokenizer_file(model_dir: Path) -> None:
    (model_dir / "tokenizer.json").unlink()
    assert "tokenizer.json missing" in _load_error(model_dir)


def test_sha256_mismatch(model_dir: Path) -> None:
    with (model_dir / "model.onnx").open("ab") as f:
        f.write(b"\0")
    message = _load_error(model_dir)
    assert "sha256" in message and "model.onnx" in message


def test_corrupt_onnx(model_dir: Path) -> None:
    (model_dir / "model.onnx").write_bytes(b"\x08\x07this is not a protobuf" * 100)
    _rehash(model_dir)
    assert "not a readable ONNX model" in _load_error(model_dir)


def test_corrupt_onnx_without_manifest(model_dir: Path) -> None:
    (model_dir / "model.yaml").unlink()
    data = (model_dir / "model.onnx").read_bytes()
    (model_dir / "model.onnx").write_bytes(data[: len(data) // 2])
    assert "model.onnx" in _load_error(model_dir)


def test_corrupt_tokenizer(model_dir: Path) -> None:
    (model_dir / "tokenizer.json").write_text('{"version": "1.0", "model": 42}')
    _rehash(model_dir)
    assert "not a tokenizers JSON file" in _load_error(model_dir)


def test_tokenizer_that_does_not_match_the_vocabulary(model_dir: Path, tmp_path: Path) -> None:
    big = train_tokenizer(tmp_path / "big" / "tokenizer.json", vocab_size=1000)
    assert vocab_size(big) > vocab_size(model_dir / "tokenizer.json")
    shutil.copyfile(big, model_dir / "tokenizer.json")
    _rehash(model_dir)
    message = _load_error(model_dir)
    assert "tokenizer has" in message and "logits" in message


def test_manifest_geometry_must_agree_with_the_graph(model_dir: Path) -> None:
    manifest = read_manifest(model_dir)
    wrong = manifest.geometry.model_copy(update={"n_layers": manifest.geometry.n_layers + 1})
    write_manifest(model_dir, manifest.model_copy(update={"geometry": wrong}))
    assert "geometry disagrees" in _load_error(model_dir)


class _LogitsOnly(torch.nn.Module):
    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


def test_onnx_without_past_inputs(model_dir: Path) -> None:
    model = tiny_model("llama", vocab_size(model_dir / "tokenizer.json"))
    (model_dir / "model.yaml").unlink()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_LogitsOnly(model), (torch.ones(1, 4, dtype=torch.long),
                                               torch.ones(1, 4, dtype=torch.long)),
                          str(model_dir / "model.onnx"), input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": {1: "s"}, "attention_mask": {1: "s"}})
    message = _load_error(model_dir)
    assert "not an Optimum-layout causal LM" in message and "past_key_values" in message
