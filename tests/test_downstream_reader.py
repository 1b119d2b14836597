"""The downstream-reader snippet of docs/output-tables.md runs as written against a score job's output table."""

import re
from pathlib import Path

import pytest

from instructrec_batch.config import Config
from instructrec_batch.context import run_stage
from instructrec_batch.spark import faults
from instructrec_batch.stages.prompts import prompts_job
from instructrec_batch.stages.score import score_job
from tests.helpers import REPO, load_synthetic


def _snippet() -> str:
    readme = (REPO / "docs/output-tables.md").read_text()
    found = re.search(r"<!-- downstream-reader[^>]*-->\s*```python\n(.*?)```", readme, re.S)
    assert found, "docs/output-tables.md lost its downstream-reader snippet"
    return found.group(1)


def test_readme_reader_snippet_reads_one_night(
    spark, tiny_cfg: Config, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_synthetic(spark, tiny_cfg, n_users=10, n_items=60, per_user=10)
    for run_id, date in (("night-1", "2026-11-21"), ("night-2", "2026-11-22")):
        cfg = tiny_cfg.model_copy(update={"run": tiny_cfg.run.model_copy(update={"run_id": run_id, "run_date": date})})
        run_stage(prompts_job, spark, cfg)
        run_stage(score_job, spark, cfg)
    # A later attempt on the same night whose recommendations landed but whose run failed afterwards.
    broken = cfg.model_copy(
        update={
            "run": cfg.run.model_copy(update={"run_id": "night-2-broken"}),
            "score": cfg.score.model_copy(update={"write_scores": True}),
        }
    )
    run_stage(prompts_job, spark, broken)
    with monkeypatch.context() as armed:
        armed.setenv(faults.DURING_WRITE_ENV, "1")
        with pytest.raises(Exception, match="injected fault"):
            run_stage(score_job, spark, broken)
    code = _snippet().replace('"work/tables"', repr(str(Path(tiny_cfg.tables_root))))
    scope: dict[str, object] = {}
    exec(compile(code, "docs/output-tables.md", "exec"), scope)  # the documented code, unchanged but for the path
    top3 = scope["top3"]
    assert set(top3.run_id) == {"night-2"} and top3.user_id.nunique() == 10  # not the failed attempt
    assert sorted(top3["rank"].unique()) == [1, 2, 3] and len(top3) == 30
    assert "night-2" in capsys.readouterr().out
