"""Shared fixtures: one embedded Sail engine per test session, a Config per test in a temp dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from instructrec_batch.config import Config, EngineConfig, build_config
from instructrec_batch.engine import spark_session


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow (make test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    with spark_session(EngineConfig(kind="local", shuffle_partitions=2)) as session:
        yield session


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return build_config([{"workdir": str(tmp_path / "work"), "cache_dir": str(tmp_path / "cache")}])


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def tiny_cfg(cfg: Config, tiny_model_dir: Path) -> Config:
    """A per-test config whose base model is the tiny offline model."""
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"base": str(tiny_model_dir)})})
