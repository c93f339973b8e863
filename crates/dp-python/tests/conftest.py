"""Shared fixtures of the dp_models pytest suite (run by `cargo xtask wheel --test` and the
`python` step of `cargo xtask ci`, against the installed wheel).

Assets come from `cargo xtask setup` (.dp-assets/). A missing asset skips its test on a
developer machine, but fails it under CI=true (as `dp_tests::asset` does for Rust tests):
CI never passes by not running a test.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

import dp_models

#: The workspace root (set by xtask; else two folders above this crate).
ROOT = Path(os.environ.get("DP_REPO_ROOT", Path(__file__).resolve().parents[3]))
CATALOG = ROOT / "specs" / "catalog"
MODELS = ROOT / ".dp-assets" / "models"
REFERENCE = ROOT / "tests" / "data" / "reference" / "text"


def in_ci() -> bool:
    return os.environ.get("CI") in ("true", "1")


def require(path: Path) -> Path:
    """`path` if it exists; otherwise fail under CI, skip elsewhere."""
    if path.exists():
        return path
    message = f"required asset {path} is missing; run `cargo xtask setup`"
    if in_ci():
        pytest.fail(message + " (CI must run it first)", pytrace=False)
    pytest.skip(message)


def asset(relative: str) -> Path:
    """An asset under .dp-assets/ (see `require`)."""
    return require(ROOT / ".dp-assets" / relative)


@pytest.fixture(scope="session")
def verify_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A verification cache of the session, outside every models root."""
    return tmp_path_factory.mktemp("cache") / "verify-cache.json"


@pytest.fixture(scope="session")
def manager(verify_cache: Path) -> dp_models.ModelManager:
    """One manager on the real catalog and models, shared by the tests (as a pipeline
    shares one)."""
    asset("models/all-minilm-l6-v2")
    return dp_models.ModelManager(
        catalog=CATALOG, models_root=MODELS, verify_cache=verify_cache
    )


@pytest.fixture()
def model_copy(tmp_path: Path) -> Iterator[Path]:
    """A models root in tmp_path holding a copy of tiny-bert-cls (to alter)."""
    source = asset("models/tiny-bert-cls")
    root = tmp_path / "models"
    shutil.copytree(source, root / "tiny-bert-cls")
    yield root
