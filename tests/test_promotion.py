"""The training workflow end to end on the local engine and the local MLflow store: train, register,
compare the challenger with the champion on a judged night, and move the champion alias only on a win."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import deltalake
import mlflow
import pandas as pd

from tests.helpers import run_cli
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


def _cli(*args: str) -> str:
    proc = run_cli(list(args), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


def test_the_champion_alias_moves_only_when_the_challenger_wins_on_a_judged_night(
    tmp_path: Path, tiny_model_dir: Path
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
    config = tmp_path / "my.yaml"
    config.write_text(f"workdir: {tmp_path / 'my_work'}\ncache_dir: {tmp_path / 'cache'}\n")
    common = ["--config", str(config)]
    for setting in (
        f"model.base={tiny_model_dir}",
        "train.split=time",
        "train.max_steps=2",
        "train.eval_every=2",
        "train.val_users=6",
        "train.fusion_users=6",
        "evidence.sequential=false",
        "prompt.exclude_holdout=false",
        "promote.horizon_days=2",
    ):
        common += ["--set", setting]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'my_work' / 'mlflow' / 'mlflow.db'}")

    def champion() -> str:
        return str(mlflow.MlflowClient().get_model_version_by_alias(MODEL, "champion").version)

    # A first deploy: the first adapter becomes the champion, since there is none. It has no fusion head
    # (train.fusion_users=0), so it ranks by the tiny random model's score alone: a weak champion.
    first = (KEPT_NIGHT - timedelta(days=1)).date().isoformat()
    _cli("train", *common, "--run-date", NIGHT.date().isoformat(), "--set", f"train.as_of={NIGHT.date()}",
         "--set", f'train.cutoff="{first}T00:00:00"', "--set", "train.fusion_users=0")  # fmt: skip
    assert "bootstrapped" in _cli("promote", *common, "--run-date", NIGHT.date().isoformat())
    assert champion() == "1"

    # The night, scored with the champion (the nightly's jobs).
    night = ["--run-date", NIGHT.date().isoformat()]
    _cli("evidence", *common, *night)
    _cli("prompts", *common, *night)
    _cli("score", *common, *night, "--adapter", f"models:/{MODEL}@champion")
    # The days pass: the log now holds what followed the night.
    full.to_csv(tmp_path / "events.csv", index=False)
    documented_tables(tmp_path, "own-data")

    # The weekly training: the challenger learns only what was known before the judged night (as_of=previous),
    # from the kept night's lists, where no head beats the retriever's order: it ships that order, which
    # ranks what each user chose after the night first.
    today = ["--run-date", TODAY.date().isoformat()]
    _cli("train", *common, *today, "--set", "train.as_of=previous", "--set", "train.lists=retriever",
         "--set", "train.horizon_days=1", "--set", f'train.cutoff="{KEPT_NIGHT.isoformat()}"')  # fmt: skip
    (challenger,) = (tmp_path / "my_work" / "adapters").glob(f"{TODAY.date()}-*/manifest.json")
    manifest = json.loads(challenger.read_text())
    assert manifest["as_of"] == NIGHT.date().isoformat() and manifest["fusion"]["shipped"] == "retriever"
    said = _cli("promote", *common, *today)
    assert "promoted" in said and "above 0, the challenger wins" in said, said[-3000:]
    assert champion() == "2"
    version = mlflow.MlflowClient().get_model_version(MODEL, "2")
    assert version.tags["instructrec.promotion"] == "promoted"
    assert version.tags["instructrec.promotion.champion_version"] == "1"
    assert float(version.tags["instructrec.promotion.ci_low"]) > 0
    judged = int(version.tags["instructrec.promotion.users"])
    assert judged == USERS  # everyone chose from their list in the two days

    # The old adapter challenges the new champion on the same night: it does not win, the alias stays.
    said = _cli("promote", *common, *today, "--set", f"promote.challenger=models:/{MODEL}/1")
    assert "not above 0, the champion stays" in said, said[-2000:]
    assert champion() == "2"
    assert mlflow.MlflowClient().get_model_version(MODEL, "1").tags["instructrec.promotion"] == "kept"
    # One runs row per (run_id, job): the night's bootstrap, and today's last decision (a rerun replaces its row).
    runs = deltalake.DeltaTable(str(tables / "runs")).to_pandas()
    promotions = runs[runs.job == "promote"].sort_values("started_at")
    assert [json.loads(c)["promoted"] for c in promotions["counts"]] == [1, 0]
    assert (promotions.status == "succeeded").all()
