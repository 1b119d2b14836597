"""Judging a past night by what users did next (evaluate.night): no holdout table, the shipped order and
the retriever's own order on the same users and lists, checked against a pandas reference."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import deltalake
import numpy as np
import pandas as pd
import pytest

from instructrec_batch.config import Config
from instructrec_batch.context import run_stage
from instructrec_batch.errors import ContractError
from instructrec_batch.stages.evaluate import evaluate_job
from instructrec_batch.stages.prompts import prompts_job
from tests.helpers import INTERACTIONS_SCHEMA, ITEMS_SCHEMA, write_input

NIGHT, RUN_DATE = "night-1", date(2026, 3, 10)
USERS, LIST = 12, 8


def _night(spark, cfg: Config) -> tuple[Config, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Tables of one night: histories before it, lists (retriever order), the shipped top-3 (the list
    reversed) and what users did in the days after."""
    before = datetime(2026, 3, 1)
    items = pd.DataFrame({"item_id": range(100), "title": [f"Film {i}" for i in range(100)]})
    history = [(u, 50 + (u * 3 + j) % 40, before + timedelta(hours=u + j), 4.0) for u in range(USERS) for j in range(4)]
    lists = {u: [(u * 5 + j) % 50 for j in range(LIST)] for u in range(USERS)}
    after = datetime(2026, 3, 11, 12)
    chosen = {u: lists[u][u % LIST] for u in range(9)}  # users 0-8 chose from their list, at position u % 8
    later = [(u, item, after + timedelta(hours=u), 5.0) for u, item in chosen.items()]
    later.append((2, lists[2][0], after + timedelta(days=20), 5.0))  # outside the 7-day horizon: ignored
    later.append((9, 99, after, 5.0))  # user 9 chose something that was not in their list: no target
    interactions = pd.DataFrame(history + later, columns=["user_id", "item_id", "event_ts", "rating"])
    candidates = pd.DataFrame(
        [(u, item, rank + 1) for u, items_ in lists.items() for rank, item in enumerate(items_)],
        columns=["user_id", "item_id", "retrieval_rank"],
    )
    write_input(spark, cfg, "interactions", interactions, INTERACTIONS_SCHEMA)
    write_input(spark, cfg, "items", items, ITEMS_SCHEMA)
    write_input(spark, cfg, "candidates", candidates, "user_id BIGINT, item_id BIGINT, retrieval_rank INT")
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"run_id": NIGHT, "run_date": str(RUN_DATE)})})
    run_stage(prompts_job, spark, cfg)
    shipped = pd.DataFrame(
        [(u, rank + 1, item) for u, items_ in lists.items() for rank, item in enumerate(items_[::-1][:3])],
        columns=["user_id", "rank", "item_id"],
    )
    recs = shipped.assign(
        run_id=NIGHT,
        run_date=RUN_DATE,
        score=-shipped["rank"].astype(float),
        model_id="m",
        template_id="t",
        ranked_by="fusion",
        prompts_run_id=NIGHT,
    )
    schema = (
        "user_id BIGINT, rank INT, item_id BIGINT, run_id STRING, run_date DATE, score DOUBLE, model_id STRING, "
        "template_id STRING, ranked_by STRING, prompts_run_id STRING"
    )
    write_input(spark, cfg, "recommendations", recs, schema)
    return cfg, pd.DataFrame(lists).T, pd.Series(chosen), shipped


def test_a_past_night_is_judged_by_what_users_did_next(spark, tiny_cfg: Config) -> None:
    cfg, _, chosen, _ = _night(spark, tiny_cfg)
    judged = cfg.model_copy(
        update={
            "evaluate": cfg.evaluate.model_copy(update={"night": NIGHT, "bootstrap": 50}),
            "run": cfg.run.model_copy(update={"run_id": "night-2", "run_date": "2026-03-18"}),  # the next night
        }
    )
    assert not (Path(cfg.tables_root) / "holdout").exists()
    result = run_stage(evaluate_job, spark, judged)
    table = result.metrics
    rows = table[table.versus.isna()].set_index(["method", "metric", "k"])["value"]
    # Reference: user u's target sits at position u % 8 of the list; the shipped order is the list's last
    # three reversed, then the rest in arrival order.
    retriever_ranks = np.array([u % LIST + 1 for u in chosen.index])
    top = [LIST - 1, LIST - 2, LIST - 3]
    shipped_ranks = np.array([top.index(u % LIST) + 1 if u % LIST in top else u % LIST + 4 for u in chosen.index])
    assert rows[("retriever", "HR", 1)] == pytest.approx(np.mean(retriever_ranks == 1))
    assert rows[("shipped", "HR", 1)] == pytest.approx(np.mean(shipped_ranks == 1))
    mrr = table[(table.metric == "MRR") & table.versus.isna()].set_index("method")["value"]
    assert mrr["shipped"] == pytest.approx(np.mean(1 / shipped_ranks))
    assert mrr["retriever"] == pytest.approx(np.mean(1 / retriever_ranks))
    assert (table.n_users == len(chosen)).all()  # users 9-11 chose nothing from their list: not judged
    paired = table[table.versus == "retriever"]
    assert set(paired.method) == {"shipped"} and len(paired) > 0
    metrics = deltalake.DeltaTable(str(Path(cfg.tables_root) / "metrics")).to_pandas()
    assert set(metrics.run_id) == {NIGHT} and metrics.dataset.str.contains("2026-03-10 to 2026-03-17").all()
    assert "9 of 12" in result.report.markdown.read_text()


def test_a_night_without_recommendations_is_named(spark, tiny_cfg: Config) -> None:
    cfg, *_ = _night(spark, tiny_cfg)
    judged = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"night": "no-such-night"})})
    with pytest.raises(ContractError, match="no rows for run_id 'no-such-night'"):
        run_stage(evaluate_job, spark, judged)


def test_the_previous_night_is_the_latest_whose_following_days_have_passed(spark, tiny_cfg: Config) -> None:
    """evaluate.night=previous (the nightly workflow's setting) finds the night; before its window has
    closed there is nothing to judge, and the job says so instead of failing the night."""
    cfg, _, chosen, _ = _night(spark, tiny_cfg)

    def judge(today: str):
        tonight = cfg.model_copy(
            update={
                "evaluate": cfg.evaluate.model_copy(update={"night": "previous", "bootstrap": 20}),
                "run": cfg.run.model_copy(update={"run_id": f"night-{today}", "run_date": today}),
            }
        )
        return run_stage(evaluate_job, spark, tonight)

    early = judge("2026-03-15")  # five days after the night: its seven days have not passed
    assert early.report is None and "nothing to judge" in str(early) and early.metrics.empty
    judged = judge("2026-03-17")
    assert judged.run_id == NIGHT and (judged.metrics.n_users == len(chosen)).all()
