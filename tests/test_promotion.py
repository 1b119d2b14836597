"""The training workflow end to end on the local engine and the local MLflow store: train, register,
compare the challenger with the champion on a judged night, and move the champion alias only on a win."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import deltalake
import mlflow
import pandas as pd

from instructrec_batch.config import load_config
from instructrec_batch.context import run_stage
from instructrec_batch.stages.evidence import evidence_job
from instructrec_batch.stages.promote import promote_job
from instructrec_batch.stages.prompts import prompts_job
from instructrec_batch.stages.score import score_job
from instructrec_batch.stages.train import train_job
from tests.own_data import START, bought, documented_tables, exports

USERS, PER_USER = 12, 12
KEPT_NIGHT = START + timedelta(days=2)  # a past night the team kept, and the challenger's cut-off
NIGHT = START + timedelta(days=3)  # the night scored with the champion, then judged
TODAY = NIGHT + timedelta(days=2)  # the training workflow's run date: the night's two days have passed
MODEL = "instructrec_adapter"


def _at(u: int, j: int) -> datetime:
    return START + timedelta(hours=10 * j + u)  # as tests/own_data.exports dates user u's j-th product


def _leading_with_what_followed(night: datetime, days: int) -> list[tuple[str, str, float]]:
    """Each user's list of `night`: what they chose in the `days` after it first (oldest first), then
    products they never chose: a retriever no re-ranker can beat."""
    rows = []
    for u in range(USERS):
        chosen = [bought(u, j) for j in range(PER_USER) if night <= _at(u, j) < night + timedelta(days=days)]
        mine = {bought(u, j) for j in range(PER_USER)}
        never = [f"SKU-{p:03d}" for p in range(40) if f"SKU-{p:03d}" not in mine][:6]
        rows += [(f"u{u}", sku, 1.0 / (r + 1)) for r, sku in enumerate(dict.fromkeys(chosen + never))]
    return rows


def test_the_champion_alias_moves_only_when_the_challenger_wins_on_a_judged_night(
    spark, tmp_path: Path, tiny_model_dir: Path
) -> None:
    exports(tmp_path, users=USERS, per_user=PER_USER)
    full = pd.read_csv(tmp_path / "events.csv")
    full[pd.to_datetime(full["timestamp"]) < NIGHT].to_csv(tmp_path / "events.csv", index=False)  # the night's log
    pd.DataFrame(_leading_with_what_followed(NIGHT, 2), columns=["user", "product", "score"]).to_csv(
        tmp_path / "retrieved.csv", index=False
    )
    kept = pd.DataFrame(_leading_with_what_followed(KEPT_NIGHT, 1), columns=["user", "product", "score"])
    kept.assign(night=KEPT_NIGHT.date().isoformat()).to_csv(tmp_path / "retrieved_history.csv", index=False)
    documented_tables(tmp_path, "own-data", "own-data-candidates", "own-data-history")
    tables = tmp_path / "my_work" / "tables"
    settings = [
        f"workdir={tmp_path / 'my_work'}",
        f"cache_dir={tmp_path / 'cache'}",
        f"model.base={tiny_model_dir}",
        "train.split=time",
        "train.max_steps=2",
        "train.eval_every=2",
        "train.val_users=6",
        "train.fusion_users=6",
        "train.earlier_cutoffs=1",
        "evidence.sequential=false",
        "evidence.request_encoder=null",
        "prompt.exclude_holdout=false",
        "promote.horizon_days=2",
    ]

    def run(job, *more: str, on: datetime, adapter: str | None = None):
        overrides = [*settings, f"run.run_date={on.date()}", *more, *([f"score.adapter={adapter}"] if adapter else [])]
        return run_stage(job, spark, load_config(overrides=overrides))

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'my_work' / 'mlflow' / 'mlflow.db'}")

    def champion() -> str:
        return str(mlflow.MlflowClient().get_model_version_by_alias(MODEL, "champion").version)

    # A first deploy: the first adapter becomes the champion, since there is none. It has no fusion head
    # (train.fusion_users=0), so it ranks by the tiny random model's score alone: a weak champion.
    first = (KEPT_NIGHT - timedelta(days=1)).date().isoformat()
    run(train_job, f"train.as_of={NIGHT.date()}", f'train.cutoff="{first}T00:00:00"', "train.fusion_users=0", on=NIGHT)
    assert run(promote_job, on=NIGHT).decision == "bootstrapped"
    assert champion() == "1"

    # The night, scored with the champion (the nightly's jobs).
    run(evidence_job, on=NIGHT)
    run(prompts_job, on=NIGHT)
    run(score_job, on=NIGHT, adapter=f"models:/{MODEL}@champion")
    # The days pass: the log now holds what followed the night.
    full.to_csv(tmp_path / "events.csv", index=False)
    documented_tables(tmp_path, "own-data")

    # The weekly training: the challenger learns only what was known before the judged night (as_of=previous),
    # from the kept night's lists, where no head beats the retriever's order: it ships that order, which
    # ranks what each user chose after the night first.
    trained = run(train_job, "train.as_of=previous", "train.lists=retriever", "train.horizon_days=1",
                  f'train.cutoff="{KEPT_NIGHT.isoformat()}"', on=TODAY)  # fmt: skip
    manifest = json.loads((Path(trained.adapter) / "manifest.json").read_text())
    assert manifest["as_of"] == NIGHT.date().isoformat() and manifest["fusion"]["shipped"] == "retriever"
    promoted = run(promote_job, on=TODAY)
    assert promoted.decision == "promoted" and "above 0, the challenger wins" in promoted.reason, promoted
    assert promoted.users == USERS and promoted.ci_low > 0  # everyone chose from their list in the two days
    assert champion() == "2"
    version = mlflow.MlflowClient().get_model_version(MODEL, "2")
    assert version.tags["instructrec.promotion"] == "promoted"
    assert version.tags["instructrec.promotion.champion_version"] == "1"
    assert float(version.tags["instructrec.promotion.ci_low"]) == promoted.ci_low

    # The old adapter challenges the new champion on the same night: it does not win, the alias stays.
    kept_champion = run(promote_job, f"promote.challenger=models:/{MODEL}/1", on=TODAY)
    assert kept_champion.decision == "kept" and "not above 0, the champion stays" in kept_champion.reason
    assert kept_champion.difference < 0
    assert champion() == "2"
    assert mlflow.MlflowClient().get_model_version(MODEL, "1").tags["instructrec.promotion"] == "kept"
    # One runs row per (run_id, job): the night's bootstrap, and today's last decision (a rerun replaces its row).
    runs = deltalake.DeltaTable(str(tables / "runs")).to_pandas()
    promotions = runs[runs.job == "promote"].sort_values("started_at")
    assert [json.loads(c)["promoted"] for c in promotions["counts"]] == [1, 0]
    assert (promotions.status == "succeeded").all()
