"""MovieLens-100K replayed as production nights: does the shipped order beat the retriever's own order?

For each night date D: the night's tables hold the interactions before D and, as `candidates`, an item-kNN
retriever's top-N per user as of D (evidence/replay.py's retriever; the next item is never inserted), written
the way a team writes its own tables. `pipeline --no-holdout` runs the night (train before a cut-off, the
blend and the head fitted on the retriever's lists replayed at it, the floor, score). Then the days pass: the
night's interactions table becomes the whole log and `evaluate --set evaluate.night=RUN_ID` judges it. Last,
the nights are pooled (a user-night per row) into one table of the shipped order against the retriever's,
with the paired interval, written to <workdir>/pooled.json.

Usage (from the repository root, the project's venv):
    python docs/experiments/46-replayed-nights/nights.py --workdir W --nights 1997-12-01 1998-01-01 \\
        --horizon-days 30 [--top-n 20] [--config FILE ...] [--set key=value ...]  # passed to every run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--nights", nargs="+", required=True, help="night dates YYYY-MM-DD")
    parser.add_argument("--horizon-days", type=int, default=30)
    parser.add_argument("--top-n", type=int, default=20)
    parser.add_argument("--config", action="append", default=[], dest="configs")
    parser.add_argument("--set", action="append", default=[], dest="sets")
    args = parser.parse_args()
    full = args.workdir / "full"
    cli("data", "movielens", "--workdir", str(full))
    sets = [a for c in args.configs for a in ("--config", c)] + [a for s in args.sets for a in ("--set", s)]
    all_ranks, summary = [], {}
    for date in args.nights:
        workdir = args.workdir / date
        tables = workdir / "tables"
        with spark_session(EngineConfig(kind="local")) as spark:
            night_tables(spark, full / "tables", tables, date, args.top_n)
        cli("pipeline", "--no-holdout", "--workdir", str(workdir), "--run-date", date, *sets)
        run_id = str(table(tables / "runs").query("job == 'score'")[C.RUN_ID].iloc[0])
        write_deltalake(
            str(tables / "interactions"),
            table(full / "tables" / "interactions"),
            mode="overwrite",
            schema_mode="overwrite",
        )
        cli("evaluate", "--workdir", str(workdir), "--set", f"evaluate.night={run_id}",
            "--set", f"evaluate.horizon_days={args.horizon_days}", *sets)  # fmt: skip
        with spark_session(EngineConfig(kind="local")) as spark:
            ranks, users = night_ranks(spark, tables, run_id, args.horizon_days)
        manifest = json.loads(next((workdir / "adapters").glob("*/manifest.json")).read_text())
        fusion = manifest["fusion"]
        head = dict(zip(fusion["head"]["features"], fusion["head"]["weights"], strict=True))
        summary[date] = {
            "users": users,
            "judged": int(ranks[C.USER_ID].nunique()),
            "cutoff": manifest["split"]["cutoff"],
            "shipped": fusion.get("shipped"),
            "retriever_lists": fusion.get("retriever_lists"),
            "retriever_lists_labelled": fusion.get("retriever_lists_labelled"),
            "fusion_mrr_head": fusion.get("fusion_mrr_head"),
            "fusion_mrr_retriever": fusion.get("fusion_mrr_retriever"),
            "model_kept": fusion.get("model_kept"),
            "weight_ev_retrieval": head.get(C.EV_RETRIEVAL),
            "weight_ev_retrieval^2": head.get(f"{C.EV_RETRIEVAL}^2"),
        }
        all_ranks.append(ranks.assign(**{C.USER_ID: date + ":" + ranks[C.USER_ID].astype(str)}))
    result = pooled(pd.concat(all_ranks, ignore_index=True))
    print(result.to_string(index=False))
    out = {"nights": summary, "pooled": json.loads(result.to_json(orient="records"))}
    (args.workdir / "pooled.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
