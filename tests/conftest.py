"""Shared fixtures: a SimPy environment, a recorder, and the repository's bundled data."""

from __future__ import annotations

from pathlib import Path

import pytest
import simpy

from netsim.paths import PROJECT_ROOT
from netsim.recorder import Recorder


@pytest.fixture
def env() -> simpy.Environment:
    return simpy.Environment()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture(scope="session")
def scenarios_dir() -> Path:
    return PROJECT_ROOT / "scenarios"
