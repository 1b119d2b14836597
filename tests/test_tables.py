from pathlib import Path

import pandas as pd
import pytest

from instructrec_batch import contracts as C
from instructrec_batch.config import build_config
from instructrec_batch.context import run_stage
from instructrec_batch.errors import ContractError
from instructrec_batch.spark.tables import read_input, resolve, write_table
from instructrec_batch.stages.data import protocol_job
from tests.helpers import load_synthetic, write_input

ITEMS = pd.DataFrame({"item_id": [1, 2, 3], "title": ["A", "B", "C"]})


def test_resolve_paths_catalog_names_and_bare_names(tmp_path: Path) -> None:
    cfg = build_config(
        [
            {
                "workdir": str(tmp_path),
                "tables": {
                    "interactions": "main.recsys.interactions",
                    "items": "/data/items",
                    "candidates": "s3://b/c",
                },
            }
        ]
    )
    assert resolve(cfg.catalog, "interactions").is_catalog
    assert resolve(cfg.catalog, "interactions").location == "main.recsys.interactions"
    assert not resolve(cfg.catalog, "items").is_catalog and resolve(cfg.catalog, "items").location == "/data/items"
    assert resolve(cfg.catalog, "candidates").location == "s3://b/c"
    assert resolve(cfg.catalog, "holdout").location == str(tmp_path / "tables" / "holdout")


def test_missing_required_column_fails_naming_table_and_column_and_writes_nothing(spark, cfg) -> None:
    no_ts = pd.DataFrame({"user_id": [1, 1], "item_id": [1, 2]})
    write_input(spark, cfg, "interactions", no_ts, "user_id BIGINT, item_id BIGINT")
    write_input(spark, cfg, "items", ITEMS, "item_id BIGINT, title STRING")
    with pytest.raises(ContractError) as err:
        run_stage(protocol_job, spark, cfg)
    message = str(err.value)
    assert "table 'interactions'" in message
    assert "missing required column 'event_ts'" in message
    assert "timestamp" in message  # the expected type is named
    root = Path(cfg.tables_root)
    assert not (root / "holdout").exists() and not (root / "candidates").exists()


def test_wrong_type_is_named(spark, cfg) -> None:
    frame = pd.DataFrame({"item_id": [1], "title": [3.5]})
    write_input(spark, cfg, "items", frame, "item_id BIGINT, title DOUBLE")
    with pytest.raises(ContractError, match=r"table 'items'.*column 'title' has type double, expected string"):
        read_input(spark, cfg.catalog, C.ITEMS)


def test_missing_table_is_named(spark, cfg) -> None:
    with pytest.raises(ContractError, match=r"table 'interactions' \(path .*interactions\) does not exist"):
        read_input(spark, cfg.catalog, C.INTERACTIONS)


def test_extra_columns_are_dropped_and_optional_ones_kept(spark, cfg) -> None:
    frame = pd.DataFrame({"item_id": [1], "title": ["A"], "category": ["x"], "noise": [1]})
    write_input(spark, cfg, "items", frame, "item_id BIGINT, title STRING, category STRING, noise INT")
    assert read_input(spark, cfg.catalog, C.ITEMS).columns == ["item_id", "title", "category"]


def test_catalog_names_and_paths_go_through_the_same_io(spark, tiny_cfg) -> None:
    """Items in a catalog table, interactions/candidates at paths, prompts written to a catalog table."""
    import uuid

    from instructrec_batch.stages.prompts import prompts_job
    from tests.helpers import ITEMS_SCHEMA

    suffix = uuid.uuid4().hex[:8]
    items_name, prompts_name = f"default.items_{suffix}", f"default.prompts_{suffix}"
    _, items = load_synthetic(spark, tiny_cfg, n_users=6, n_items=40, per_user=8)
    cfg = tiny_cfg.model_copy(
        update={
            "tables": tiny_cfg.tables.model_copy(update={"items": items_name, "prompts": prompts_name}),
            "run": tiny_cfg.run.model_copy(update={"run_id": "catalog"}),
        }
    )
    assert resolve(cfg.catalog, "items").is_catalog and not resolve(cfg.catalog, "interactions").is_catalog
    with pytest.raises(ContractError, match=rf"table 'items' \(catalog table {items_name}\) does not exist"):
        run_stage(prompts_job, spark, cfg)
    write_table(spark.createDataFrame(items, ITEMS_SCHEMA), cfg.catalog, resolve(cfg.catalog, "items"))
    try:
        counts = run_stage(prompts_job, spark, cfg)
        written = spark.read.table(prompts_name)
        assert counts.users_emitted == 6 and written.count() == 6
        assert not (Path(cfg.tables_root) / "prompts").exists()  # it went to the catalog, not to a path
    finally:
        for name in (items_name, prompts_name):
            spark.sql(f"DROP TABLE IF EXISTS {name}")
