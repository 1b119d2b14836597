"""Run integrity: one run identity per invocation, the `runs` row as commit marker, one adapter key."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import deltalake
import pandas as pd
import pytest

from instructrec_batch import config as config_module
from instructrec_batch.cli import _config_from, build_parser
from instructrec_batch.config import Config, run_identity
from instructrec_batch.context import run_stage
from instructrec_batch.spark import faults
from instructrec_batch.spark import runs as runs_module
from instructrec_batch.stages.prompts import prompts_job
from instructrec_batch.stages.score import score_job
from tests.helpers import load_synthetic


class _MidnightClock:
    """datetime stand-in whose first now() is just before UTC midnight and every later one after it."""

    calls = 0

    @classmethod
    def now(cls, tz=None):
        cls.calls += 1
        day = datetime(2026, 1, 1, 23, 59, 59) if cls.calls == 1 else datetime(2026, 1, 2, 0, 0, 1)
        return day.replace(tzinfo=timezone.utc)


def _read(cfg: Config, table: str) -> pd.DataFrame:
    return deltalake.DeltaTable(str(Path(cfg.tables_root) / table)).to_pandas()


def _with_run(cfg: Config, **run: object) -> Config:
    return cfg.model_copy(update={"run": cfg.run.model_copy(update=run)})


def test_a_job_crossing_midnight_writes_every_row_under_one_run_id(spark, tiny_cfg, monkeypatch) -> None:
    load_synthetic(spark, tiny_cfg, n_users=6, n_items=40, per_user=8)
    prompted = _with_run(tiny_cfg, run_id="prompts-night", run_date="2026-01-01")
    run_stage(prompts_job, spark, prompted)
    unpinned = _with_run(tiny_cfg, run_id=None, run_date=None)
    cfg = unpinned.model_copy(
        update={"score": unpinned.score.model_copy(update={"prompts_run_id": "prompts-night", "write_scores": True})}
    )
    monkeypatch.setattr(config_module, "datetime", _MidnightClock)  # the run's identity
    monkeypatch.setattr(runs_module, "datetime", _MidnightClock)  # the runs rows' timestamps
    counts = run_stage(score_job, spark, cfg)
    assert _MidnightClock.calls > 1  # the clock did cross midnight while the job ran
    assert counts.run_id.startswith("2026-01-01-")
    recs, scores, runs = _read(cfg, "recommendations"), _read(cfg, "candidate_scores"), _read(cfg, "runs")
    assert set(recs.run_id) == set(scores.run_id) == {counts.run_id}
    assert set(runs[runs.job == "score"].run_id) == {counts.run_id}
    assert str(recs.run_date.iloc[0]) == "2026-01-01"


def test_a_failure_between_the_two_score_writes_leaves_no_complete_run(
    spark, tiny_cfg, adapter_dir, monkeypatch
) -> None:
    """Recommendations land, candidate_scores fail: the runs row says 'failed', so the run is not a result."""
    load_synthetic(spark, tiny_cfg, n_users=6, n_items=40, per_user=8)
    cfg = _with_run(tiny_cfg, run_id="night", run_date="2026-01-01")
    cfg = cfg.model_copy(
        update={"score": cfg.score.model_copy(update={"adapter": str(adapter_dir), "write_scores": True})}
    )
    run_stage(prompts_job, spark, cfg)
    run_stage(score_job, spark, cfg)
    assert _read(cfg, "runs").query("job == 'score'").status.tolist() == ["succeeded"]

    faulty = cfg.model_copy(update={"score": cfg.score.model_copy(update={"k": 3})})
    with monkeypatch.context() as armed:
        armed.setenv(faults.DURING_WRITE_ENV, "1")
        with pytest.raises(Exception, match="injected fault during the write"):
            run_stage(score_job, spark, faulty)
    recs = _read(cfg, "recommendations")
    assert recs["rank"].max() == 3  # the first write did land (k=3)...
    runs = _read(cfg, "runs").query("job == 'score'")
    assert runs.status.tolist() == ["failed"]  # ...but the commit marker says the run is not complete
    complete = runs[runs.status == "succeeded"].run_id
    assert recs[recs.run_id.isin(complete)].empty  # a reader keyed on the marker sees nothing of it


def test_the_runs_row_says_running_while_a_job_writes(spark, tiny_cfg) -> None:
    cfg = _with_run(tiny_cfg, run_id="marker", run_date="2026-01-01")
    seen: list[str] = []
    record = runs_module.RunRecord("probe", run_identity(cfg), cfg.fingerprint(), cfg.engine.kind)
    with runs_module.recorded_run(spark, cfg.catalog, record):
        seen += _read(cfg, "runs").status.tolist()
    assert seen == ["running"] and _read(cfg, "runs").status.tolist() == ["succeeded"]


def test_the_adapter_option_wins_over_the_yaml(tmp_path: Path) -> None:
    config = tmp_path / "night.yaml"
    config.write_text("score:\n  adapter: /models/from-yaml\n")
    for command in ("score", "evaluate"):
        args = build_parser().parse_args([command, "--config", str(config), "--adapter", "/models/from-cli"])
        assert _config_from(args).score.adapter == "/models/from-cli"
    args = build_parser().parse_args(["score", "--config", str(config)])
    assert _config_from(args).score.adapter == "/models/from-yaml"
