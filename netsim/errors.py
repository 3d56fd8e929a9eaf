"""Errors that mean "the user's input is wrong" — the CLI turns them into exit code 2 and one line."""

from __future__ import annotations


class InputError(ValueError):
    """Bad scenario, CLI argument or model file. The message is one line naming what is wrong."""


class ScenarioError(InputError):
    """A scenario problem; `problems` holds one `path: message` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class ModelError(InputError):
    """A model directory, manifest, tokenizer or ONNX file that cannot be used."""
