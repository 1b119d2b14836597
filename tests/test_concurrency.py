"""Two score runs with different run_ids writing the same recommendations table at the same time."""

import threading
from pathlib import Path

import deltalake

from instructrec_batch.config import Config
from instructrec_batch.context import run_stage
from instructrec_batch.stages.prompts import prompts_job
from instructrec_batch.stages.score import score_job
from tests.helpers import load_synthetic


def _run(cfg: Config, run_id: str) -> Config:
    return cfg.model_copy(
        update={
            "run": cfg.run.model_copy(update={"run_id": run_id, "run_date": "2026-11-22"}),
            "score": cfg.score.model_copy(update={"k": 4, "prompts_run_id": "prompts"}),
        }
    )


def test_concurrent_runs_into_one_table_both_land(spark, tiny_cfg: Config) -> None:
    load_synthetic(spark, tiny_cfg, n_users=12, n_items=60, per_user=10)
    run_stage(prompts_job, spark, _run(tiny_cfg, "prompts"))
    run_stage(score_job, spark, _run(tiny_cfg, "first"))  # the table exists before the race

    errors: dict[str, BaseException] = {}

    def score(run_id: str) -> None:
        try:
            run_stage(score_job, spark, _run(tiny_cfg, run_id))
        except BaseException as exc:
            errors[run_id] = exc

    threads = [threading.Thread(target=score, args=(run_id,)) for run_id in ("night-a", "night-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    recs = deltalake.DeltaTable(str(Path(tiny_cfg.tables_root) / "recommendations")).to_pandas()
    assert not errors
    assert recs.groupby("run_id").size().to_dict() == {"first": 48, "night-a": 48, "night-b": 48}


def test_a_lost_commit_race_is_retried_then_reported_clearly(monkeypatch) -> None:
    import pytest
    from delta.exceptions import ConcurrentAppendException
    from deltalake.exceptions import CommitFailedError

    from instructrec_batch.errors import ConcurrentWriteError
    from instructrec_batch.spark import tables

    monkeypatch.setattr(tables.time, "sleep", lambda _: None)
    ref = tables.TableRef("recommendations", "/w/tables/recommendations", is_catalog=False)
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise ConcurrentAppendException(message="Files were added to the root of the table")

    tables._save_committed(ref, flaky)
    assert len(calls) == 3  # two lost races, then committed

    def always_conflicting() -> None:
        raise CommitFailedError("version 3 already exists")

    with pytest.raises(ConcurrentWriteError, match=r"table 'recommendations'.*rerun the job"):
        tables._save_committed(ref, always_conflicting)

    def broken() -> None:
        calls.append(1)
        raise RuntimeError("disk full: Concurrent conflict while writing")  # a race's words, not its type

    calls.clear()
    with pytest.raises(RuntimeError, match="disk full"):
        tables._save_committed(ref, broken)
    assert len(calls) == 1  # other errors are not retried
