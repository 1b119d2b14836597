"""Shared fixtures: one embedded Sail engine per test session, a Config per test in a temp dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession

from instructrec_batch.config import Config, EngineConfig, build_config
from instructrec_batch.spark.engine import spark_session


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
    """MLflow off: tests/test_tracking.py switches it on and checks the store (CLI runs use the default).
    No sentence encoder for the request evidence (BM25 only): the default one is pulled from the registry.
    SASRec min_steps 0: on the tests' few users an epoch is one step, and 1,500 of them in every job
    test would cost minutes (tests/test_sasrec.py covers min_steps)."""
    return build_config(
        [
            {
                "workdir": str(tmp_path / "work"),
                "cache_dir": str(tmp_path / "cache"),
                "mlflow": {"enabled": False},
                "sasrec": {"min_steps": 0},
                "evidence": {"request_encoder": None},  # no download: tests/test_requests.py builds an encoder
            }
        ]
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def tiny_cfg(cfg: Config, tiny_model_dir: Path) -> Config:
    """A per-test config whose base model is the tiny offline model."""
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"base": str(tiny_model_dir)})})


@pytest.fixture(scope="session")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A LoRA adapter for the tiny model, with non-zero weights so it changes scores."""
    import torch
    from peft import LoraConfig, get_peft_model

    from instructrec_batch.config import DEFAULT_TEMPLATE_VERSION as DEFAULT_VERSION
    from instructrec_batch.config import PromptConfig
    from instructrec_batch.models.adapter import save_adapter
    from instructrec_batch.models.base import BaseModel, load_causal_lm

    torch.manual_seed(1)
    model = get_peft_model(
        load_causal_lm(tiny_model_dir),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM", init_lora_weights=False),
    )
    folder = tmp_path_factory.mktemp("adapter")
    save_adapter(
        model,
        folder,
        {
            "base_model": str(tiny_model_dir),
            "base_model_sha256": BaseModel(str(tiny_model_dir), tiny_model_dir).sha256(),
            "template_version": DEFAULT_VERSION,
            "item_text": PromptConfig().item_text(),
        },
    )
    return folder
