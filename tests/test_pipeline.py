"""`instructrec-batch pipeline` on tables written from CSV exports exactly as docs/own-data.md shows."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import deltalake
import mlflow
import pandas as pd

from tests.helpers import run_cli
from tests.own_data import START, bought, documented_tables, exports


def test_pipeline_on_tables_written_from_csv(tmp_path: Path, tiny_model_dir: Path) -> None:
    exports(tmp_path)
    documented_tables(tmp_path, "own-data")
    config = tmp_path / "my.yaml"
    config.write_text(f"workdir: {tmp_path / 'my_work'}\ncache_dir: {tmp_path / 'cache'}\n")
    small = [
        f"model.base={tiny_model_dir}",
        "train.max_steps=4",
        "train.eval_every=2",
        "train.val_users=6",
        "train.fusion_users=6",
        "train.fusion_negatives=4",
        "evaluate.methods=[random,popularity,itemknn,blend,lora,hybrid]",
        "evaluate.bootstrap=50",
    ]
    proc = run_cli(["pipeline", "--config", str(config), *[a for s in small for a in ("--set", s)]], timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pipeline finished in" in proc.stdout and "| hybrid/pointwise |" in proc.stdout
    tables = tmp_path / "my_work" / "tables"
    recs = deltalake.DeltaTable(str(tables / "recommendations")).to_pandas()
    metrics = deltalake.DeltaTable(str(tables / "metrics")).to_pandas()
    runs = deltalake.DeltaTable(str(tables / "runs")).to_pandas()
    assert set(recs.user_id) == {f"u{u}" for u in range(12)}  # every user got recommendations
    assert recs.groupby("user_id").size().eq(10).all()
    assert {"random", "popularity", "lora/pointwise", "hybrid/pointwise"} <= set(metrics.method)
    assert (metrics.n_users == 12).all()  # every user evaluated
    assert runs.run_id.nunique() == 1  # one run_id for the whole flow
    assert (
        set(runs.job) == {"protocol", "evidence", "prompts", "train", "score", "evaluate"}
        and (runs.status == "succeeded").all()
    )
    # The night's lists are kept for later trainings, in arrival order, under the run's date.
    kept = deltalake.DeltaTable(str(tables / "candidates_history")).to_pandas()
    candidates = deltalake.DeltaTable(str(tables / "candidates")).to_pandas()
    assert len(kept) == len(candidates) and set(kept.run_id) == set(runs.run_id) and kept.run_date.nunique() == 1
    merged = kept.merge(candidates, on=["user_id", "item_id"], suffixes=("", "_given"))
    assert (merged.retrieval_rank == merged.retrieval_rank_given).all()
    # The sequential model is trained once, by the evidence job, and stored for the run; training reads it.
    vectors = deltalake.DeltaTable(str(tables / "sequence_vectors")).to_pandas()
    assert set(vectors.run_id) == set(runs.run_id)
    assert set(vectors.user_id.dropna()) == {f"u{u}" for u in range(12)} and vectors.item_id.notna().any()
    assert proc.stderr.count("sequential evidence: SASRec vectors") == 1
    assert "training the sequential model for the fusion lists" not in proc.stderr
    # MLflow (on by default): the training run and the registered version; score by the alias from the CLI.
    assert "mlflow:" in proc.stdout and "registered models:/instructrec_adapter/1 with alias challenger" in proc.stdout
    assert (runs.loc[runs.job == "score", "model_id"].str.endswith("+fusion (models:/instructrec_adapter/1)")).all()
    run_id = runs.run_id.iloc[0]
    by_alias = [
        "score",
        "--config",
        str(config),
        "--adapter",
        "models:/instructrec_adapter@challenger",
        "--run-id",
        run_id,
        "--k",
        "5",
        *[a for s in small[:1] for a in ("--set", s)],
    ]
    proc = run_cli(by_alias, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = deltalake.DeltaTable(str(tables / "recommendations")).to_pandas()
    assert recs.groupby("user_id").size().eq(5).all()
    assert set(recs.model_id) == set(runs.loc[runs.job == "score", "model_id"])


def test_a_production_night_on_your_retrievers_lists_without_a_holdout(tmp_path: Path, tiny_model_dir: Path) -> None:
    """docs/own-data.md's production path: interactions, items, the retriever's ordered lists and the
    lists it handed over on a past night, no holdout. `data protocol` refuses to replace the user's
    candidates (nothing written); `pipeline --no-holdout` trains before a cut-off, validates after it and
    recommends for every user. The past night's lists ranked first what each user chose next (a near
    perfect retriever): no head can beat that order, so the night ships the retriever's order and says so."""
    exports(tmp_path)
    retrieved = [(f"u{u}", f"SKU-{(u * 5 + j) % 40:03d}", 1.0 / (j + 1)) for u in range(12) for j in range(8)]
    pd.DataFrame(retrieved, columns=["user", "product", "score"]).to_csv(tmp_path / "retrieved.csv", index=False)
    # The night of 2026-03-04, the cut-off: each user's list led with what they went on to choose (their
    # interactions after it, oldest first), then products they never chose.
    cut = START + timedelta(days=3)
    past = []
    for u in range(12):
        chosen = [bought(u, j) for j in range(9) if START + timedelta(hours=10 * j + u) >= cut]
        never = [f"SKU-{p:03d}" for p in range(40) if all(bought(u, j) != f"SKU-{p:03d}" for j in range(9))][:6]
        past += [(f"u{u}", sku, 1.0 / (r + 1), cut.date().isoformat()) for r, sku in enumerate(chosen + never)]
    pd.DataFrame(past, columns=["user", "product", "score", "night"]).to_csv(
        tmp_path / "retrieved_history.csv", index=False
    )
    documented_tables(tmp_path, "own-data", "own-data-candidates", "own-data-history")
    tables = tmp_path / "my_work" / "tables"
    config = tmp_path / "my.yaml"
    config.write_text(f"workdir: {tmp_path / 'my_work'}\ncache_dir: {tmp_path / 'cache'}\n")

    refused = run_cli(["data", "protocol", "--config", str(config)], timeout=300)
    assert refused.returncode != 0
    assert (
        "table 'candidates' (path" in refused.stderr
        and "was not written by `instructrec-batch data protocol`" in refused.stderr
    )
    assert "tables.candidates=benchmark_candidates" in refused.stderr
    assert deltalake.DeltaTable(str(tables / "candidates")).version() == 0  # untouched
    assert not (tables / "holdout").exists()  # and nothing else written

    small = [
        f"model.base={tiny_model_dir}",
        f'train.cutoff="{cut.isoformat()}"',
        "train.max_steps=2",
        "train.eval_every=2",
        "train.val_users=6",
        "train.fusion_users=6",
        "train.earlier_cutoffs=2",  # the default's eight cost time, not coverage, here
        "evidence.sequential=false",
    ]
    proc = run_cli(
        ["pipeline", "--config", str(config), "--no-holdout", *[a for s in small for a in ("--set", s)]], timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (tables / "holdout").exists()
    recs = deltalake.DeltaTable(str(tables / "recommendations")).to_pandas()
    assert set(recs.user_id) == {f"u{u}" for u in range(12)}  # every user, from their retriever's list
    shown = pd.DataFrame(retrieved, columns=["user_id", "item_id", "score"])
    assert set(zip(recs.user_id, recs.item_id, strict=True)) <= set(zip(shown.user_id, shown.item_id, strict=True))
    runs = deltalake.DeltaTable(str(tables / "runs")).to_pandas()
    assert set(runs.job) == {"evidence", "prompts", "train", "score"} and (runs.status == "succeeded").all()
    manifest = json.loads(next((tmp_path / "my_work" / "adapters").glob("*/manifest.json")).read_text())
    assert manifest["split"]["kind"] == "time"
    assert datetime.fromisoformat(manifest["split"]["cutoff"]).replace(tzinfo=None) == cut  # UTC, as the log
    assert "holdout" not in manifest["data_versions"]
    # The head was fitted on the kept night's lists, every user's labelled by what they chose after the
    # cut-off; it could not beat their order, so the retriever's order ships, with the reason said.
    fusion = manifest["fusion"]
    assert fusion["retriever_lists"] == "kept" and fusion["retriever_lists_labelled"] == 12
    assert fusion["fusion_mrr_retriever"] == 1.0 and fusion["shipped"] == "retriever"
    score_row = runs[runs.job == "score"].iloc[0]
    assert json.loads(score_row["counts"])["retriever_floor"] == 1
    # The past nights are the user's own table: the score job adds nothing to it.
    assert json.loads(score_row["counts"])["kept_lists"] == 0
    assert deltalake.DeltaTable(str(tables / "candidates_history")).version() == 0
    assert score_row["model_id"].endswith("(floor: the retriever's order)")
    assert "ships the retriever's order (the floor)" in proc.stderr
    # MLflow keeps the figures as metrics and what was shipped, and from which lists, as tags.
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'my_work' / 'mlflow' / 'mlflow.db'}")
    (logged,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert logged.data.tags["instructrec.fusion.shipped"] == "retriever"
    assert logged.data.tags["instructrec.fusion.retriever_lists"] == "kept"
    # The blend also learned from the lists at two earlier cut-offs: kept, replayed or both.
    origins = fusion["earlier_cutoffs"]
    assert len(origins) == 2 and set(origins) <= {"kept", "replayed", "kept+replayed"}
    assert logged.data.tags["instructrec.fusion.earlier_cutoffs"] == ",".join(origins)
    assert logged.data.metrics["fusion.fusion_mrr_retriever"] == 1.0
    order = shown.assign(retrieval_rank=shown.groupby("user_id").cumcount() + 1)
    ranked = recs.merge(order, on=["user_id", "item_id"]).sort_values(["user_id", "rank"])
    assert ranked.groupby("user_id")["retrieval_rank"].apply(lambda r: r.is_monotonic_increasing).all()
