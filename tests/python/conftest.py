"""Shared fixtures: the latentmoe binary from the build directory the test runner passes."""
import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def latentmoe_bin() -> pathlib.Path:
    build = pathlib.Path(os.environ.get("LATENTMOE_BUILD_DIR", REPO / "build"))
    binary = build / "latentmoe"
    if not binary.exists():
        pytest.fail(f"{binary} does not exist: build first (make build) or set LATENTMOE_BUILD_DIR")
    return binary


@pytest.fixture
def run_cli(latentmoe_bin):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(latentmoe_bin), *args], capture_output=True, text=True, timeout=120)

    return run
