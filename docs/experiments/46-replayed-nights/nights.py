"""MovieLens-100K replayed as production nights: does the shipped order beat the retriever's own order?

For each night date D: the night's tables hold the interactions before D and, as `candidates`, an item-kNN
retriever's top-N per user as of D (evidence/replay.py's retriever; the next item is never inserted), written
the way a team writes its own tables. `pipeline --no-holdout` runs the night (train before a cut-off, the
blend and the head fitted on the retriever's lists replayed at it, the floor, score). Then the days pass: the
night's interactions table becomes the whole log and `evaluate --set evaluate.night=RUN_ID` judges it. Last,
the nights are pooled (a user-night per row) into one table of the shipped order against the retriever's,
with the paired interval, written to <workdir>/pooled.json; next to it, the paired interval resampling
users (all of a user's nights together), as the same users return night after night.

With --train-date D0 the nights run as a team runs them: one training (`pipeline --no-holdout` on D0's
tables, which also scores night D0), then every night of --nights the nightly jobs alone on that night's
tables (evidence, prompts, score with the latest adapter), in one workdir; with --retrain-every K a new
adapter is trained (`train`, time split, the retriever's lists) on the tables of every K-th night before
it is scored, as a weekly training does. Each night is judged by the same function `evaluate.night` uses.

Usage (from the repository root, the project's venv):
    python docs/experiments/46-replayed-nights/nights.py --workdir W --nights 1997-12-01 1998-01-01 \\
        --horizon-days 30 [--train-date D0 [--retrain-every K]] [--top-n 20] [--config FILE ...] [--set key=value ...]
    (--config and --set are passed to every run)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from deltalake import DeltaTable, write_deltalake
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import EngineConfig, EvidenceConfig
from instructrec_batch.evaluation.intervals import with_intervals
from instructrec_batch.evaluation.night import followed_targets, following, night_scores
from instructrec_batch.evaluation.spark_metrics import target_ranks
from instructrec_batch.evidence.replay import itemknn_lists
from instructrec_batch.ranking.metrics import METHOD, METRICS, TARGET_RANK, metric_values
from instructrec_batch.spark.engine import spark_session

CLI = [sys.executable, "-c", "from instructrec_batch.cli import main; main()"]


def cli(*args: str) -> None:
    print("+ instructrec-batch", " ".join(args), flush=True)
    subprocess.run([*CLI, *args], check=True)


def table(path: Path) -> pd.DataFrame:
    return DeltaTable(str(path)).to_pandas().drop(columns=[C.SOURCE_JOB], errors="ignore")


def night_tables(spark, full: Path, tables: Path, date: str, top_n: int) -> None:
    """The night's interactions (before `date`), items and item-kNN candidates, as a team writes its own."""
    interactions, items = table(full / "interactions"), table(full / "items")
    before = interactions[interactions[C.EVENT_TS] < pd.Timestamp(date, tz="UTC")].reset_index(drop=True)
    write_deltalake(str(tables / "interactions"), before, mode="overwrite", schema_mode="overwrite")
    write_deltalake(str(tables / "items"), items, mode="overwrite", schema_mode="overwrite")
    source = spark.createDataFrame(before[[C.USER_ID, C.ITEM_ID, C.EVENT_TS]])
    catalogue = spark.createDataFrame(items.loc[items[C.TITLE].notna(), [C.ITEM_ID]])
    users = source.select(C.USER_ID).distinct()
    lists = itemknn_lists(source, users, catalogue, EvidenceConfig(), top_n).toPandas()
    write_deltalake(str(tables / "candidates"), lists, mode="overwrite", schema_mode="overwrite")


def night_ranks(spark, tables: Path, run_id: str, horizon: int) -> tuple[pd.DataFrame, int]:
    """method, user_id, target_rank of the night's users who chose from their list (shipped, retriever),
    and how many users the night had."""
    read = lambda name: spark.read.format("delta").load(str(tables / name))  # noqa: E731
    recs = read("recommendations").where(F.col(C.RUN_ID) == run_id)
    prompts = read("prompts").where(F.col(C.RUN_ID) == run_id)
    window = following(recs.select("run_date").first()["run_date"], horizon)
    targets = followed_targets(prompts, read("interactions"), window)
    return target_ranks(night_scores(recs, prompts), targets).toPandas(), prompts.count()


def pooled(ranks: pd.DataFrame, resamples: int = 1000, seed: int = 42) -> pd.DataFrame:
    """Every method's metrics over the pooled user-nights, with intervals and shipped − retriever."""
    values = [
        (method, m.name, m.k, float(metric_values(g[TARGET_RANK].to_numpy(), m).mean()), len(g))
        for method, g in ranks.groupby(METHOD)
        for m in METRICS
    ]
    frame = pd.DataFrame(values, columns=[METHOD, "metric", "k", "value", "n_users"])
    return with_intervals(frame, ranks, resamples, seed, llm_methods=("shipped",))


def by_user(ranks: pd.DataFrame, resamples: int = 1000, seed: int = 42) -> dict[str, dict[str, float]]:
    """shipped − retriever per metric over the user-nights, its 95% interval resampling users (each
    drawn user brings all their nights): `ranks` holds user_id as "night:user"."""
    wide = ranks.pivot(index=C.USER_ID, columns=METHOD, values=TARGET_RANK)
    user = wide.index.str.split(":").str[1]
    out = {}
    for metric in METRICS:
        diff = metric_values(wide["shipped"].to_numpy(), metric) - metric_values(wide["retriever"].to_numpy(), metric)
        per_user = pd.DataFrame({"d": diff, "u": user}).groupby("u")["d"].agg(["sum", "count"])
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, len(per_user), size=(resamples, len(per_user)))
        sums, counts = per_user["sum"].to_numpy(), per_user["count"].to_numpy()
        means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
        low, high = np.percentile(means, [2.5, 97.5])
        out[metric.label] = {
            "difference": float(diff.mean()),
            "ci_low": float(low),
            "ci_high": float(high),
            "users": len(per_user),
            "user_nights": len(diff),
        }
    return out


def night_summary(workdir: Path, users: int, judged: int, adapter: str | None = None) -> dict:
    """The night's training figures from its adapter's manifest (`adapter`, else the workdir's only one)."""
    found = Path(adapter) / "manifest.json" if adapter else next((workdir / "adapters").glob("*/manifest.json"))
    manifest = json.loads(found.read_text())
    fusion = manifest["fusion"]
    head = dict(zip(fusion["head"]["features"], fusion["head"]["weights"], strict=True))
    return {
        "users": users,
        "judged": judged,
        "cutoff": manifest["split"]["cutoff"],
        "shipped": fusion.get("shipped"),
        "retriever_lists": fusion.get("retriever_lists"),
        "retriever_lists_labelled": fusion.get("retriever_lists_labelled"),
        "fusion_mrr_head": fusion.get("fusion_mrr_head"),
        "fusion_mrr_retriever": fusion.get("fusion_mrr_retriever"),
        "floor_lists": fusion.get("floor_lists"),
        "floor_mrr_head": fusion.get("floor_mrr_head"),
        "model_kept": fusion.get("model_kept"),
        "weight_ev_retrieval": head.get(C.EV_RETRIEVAL),
        "weight_ev_retrieval^2": head.get(f"{C.EV_RETRIEVAL}^2"),
        "head": head,
    }


def write_full_log(full: Path, tables: Path) -> None:
    """The days pass: the night's interactions table becomes the whole log."""
    log = table(full / "tables" / "interactions")
    write_deltalake(str(tables / "interactions"), log, mode="overwrite", schema_mode="overwrite")


def trained_once(args: argparse.Namespace, full: Path, sets: list[str]) -> tuple[list[pd.DataFrame], dict]:
    """One training on --train-date, then the nightly jobs alone on each night; every night judged."""
    workdir, tables = args.workdir / "nightly", args.workdir / "nightly" / "tables"
    with spark_session(EngineConfig(kind="local")) as spark:
        night_tables(spark, full / "tables", tables, args.train_date, args.top_n)
    cli("pipeline", "--no-holdout", "--workdir", str(workdir), "--run-date", args.train_date, *sets)
    adapter = str(next((workdir / "adapters").glob("*/manifest.json")).parent)
    trainings = {args.train_date: night_summary(workdir, 0, 0)}
    for index, date in enumerate(args.nights, start=1):
        with spark_session(EngineConfig(kind="local")) as spark:
            night_tables(spark, full / "tables", tables, date, args.top_n)
        if args.retrain_every and index % args.retrain_every == 0:
            retrain = ["--set", "train.split=time", "--set", "train.lists=retriever"]
            cli("train", "--workdir", str(workdir), "--run-date", date, *retrain, *sets)
            adapter = str(next((workdir / "adapters").glob(f"{date}-*/manifest.json")).parent)
            trainings[date] = night_summary(workdir, 0, 0, adapter)
        for job in ("evidence", "prompts"):
            cli(job, "--workdir", str(workdir), "--run-date", date, *sets)
        cli("score", "--workdir", str(workdir), "--run-date", date, "--adapter", adapter, *sets)
    write_full_log(full, tables)
    runs = table(tables / "runs").query("job == 'score'")
    all_ranks, nights = [], {}
    for date in args.nights:
        run_id = str(runs[runs[C.RUN_ID].str.startswith(date)][C.RUN_ID].iloc[-1])
        with spark_session(EngineConfig(kind="local")) as spark:
            ranks, users = night_ranks(spark, tables, run_id, args.horizon_days)
        nights[date] = {"run_id": run_id, "users": users, "judged": int(ranks[C.USER_ID].nunique())}
        all_ranks.append(ranks.assign(**{C.USER_ID: date + ":" + ranks[C.USER_ID].astype(str)}))
    return all_ranks, {"trainings": trainings, "nights": nights}


def night_by_night(args: argparse.Namespace, full: Path, sets: list[str]) -> tuple[list[pd.DataFrame], dict]:
    """Every night trained and scored by its own pipeline, then judged by `evaluate`."""
    all_ranks, summary = [], {}
    for date in args.nights:
        workdir = args.workdir / date
        tables = workdir / "tables"
        with spark_session(EngineConfig(kind="local")) as spark:
            night_tables(spark, full / "tables", tables, date, args.top_n)
        cli("pipeline", "--no-holdout", "--workdir", str(workdir), "--run-date", date, *sets)
        run_id = str(table(tables / "runs").query("job == 'score'")[C.RUN_ID].iloc[0])
        write_full_log(full, tables)
        cli("evaluate", "--workdir", str(workdir), "--set", f"evaluate.night={run_id}",
            "--set", f"evaluate.horizon_days={args.horizon_days}", *sets)  # fmt: skip
        with spark_session(EngineConfig(kind="local")) as spark:
            ranks, users = night_ranks(spark, tables, run_id, args.horizon_days)
        summary[date] = night_summary(workdir, users, int(ranks[C.USER_ID].nunique()))
        all_ranks.append(ranks.assign(**{C.USER_ID: date + ":" + ranks[C.USER_ID].astype(str)}))
    return all_ranks, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--nights", nargs="+", required=True, help="night dates YYYY-MM-DD")
    parser.add_argument("--horizon-days", type=int, default=30)
    parser.add_argument("--top-n", type=int, default=20)
    parser.add_argument("--train-date", help="train once on this date's tables; the nights only score")
    parser.add_argument("--retrain-every", type=int, default=0, help="with --train-date: retrain every K nights")
    parser.add_argument("--config", action="append", default=[], dest="configs")
    parser.add_argument("--set", action="append", default=[], dest="sets")
    args = parser.parse_args()
    full = args.workdir / "full"
    cli("data", "movielens", "--workdir", str(full))
    sets = [a for c in args.configs for a in ("--config", c)] + [a for s in args.sets for a in ("--set", s)]
    run = trained_once if args.train_date else night_by_night
    all_ranks, summary = run(args, full, sets)
    result = pooled(pd.concat(all_ranks, ignore_index=True))
    print(result.to_string(index=False))
    users = by_user(pd.concat(all_ranks, ignore_index=True))
    print(json.dumps(users, indent=2))
    out = {"nights": summary, "pooled": json.loads(result.to_json(orient="records")), "by_user": users}
    (args.workdir / "pooled.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
