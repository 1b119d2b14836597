"""The evaluation protocol: leave-one-out split, sampled candidates, and engine parity."""

from pathlib import Path

import deltalake
import pandas as pd

from instructrec_batch.context import run_stage
from instructrec_batch.stages.data import protocol_job
from tests.helpers import (
    INTERACTIONS_SCHEMA,
    ITEMS_SCHEMA,
    synthetic,
    write_input,
)


def expected_holdout(inter: pd.DataFrame) -> pd.DataFrame:
    """pandas reference of the split: last two rows by (event_ts, item_id)."""
    ordered = inter.sort_values(["user_id", "event_ts", "item_id"])
    last = ordered.groupby("user_id").tail(2).copy()
    last["split"] = ["valid", "test"] * (len(last) // 2)
    return last[["user_id", "item_id", "split"]].sort_values(["user_id", "split"]).reset_index(drop=True)


def test_protocol_split_and_candidates(spark, cfg) -> None:
    inter, items = synthetic()
    write_input(spark, cfg, "interactions", inter, INTERACTIONS_SCHEMA)
    write_input(spark, cfg, "items", items, ITEMS_SCHEMA)
    counts = run_stage(protocol_job, spark, cfg)
    root = Path(cfg.tables_root)
    holdout = deltalake.DeltaTable(str(root / "holdout")).to_pandas()
    cands = deltalake.DeltaTable(str(root / "candidates")).to_pandas()

    got = holdout[["user_id", "item_id", "split"]].sort_values(["user_id", "split"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected_holdout(inter))

    assert counts.users == 12 and counts.candidate_rows == 12 * 20
    per_user = cands.groupby("user_id")
    assert (per_user.size() == 20).all()
    assert (per_user["item_id"].nunique() == 20).all()
    assert all(sorted(g) == list(range(1, 21)) for _, g in per_user["retrieval_rank"])
    test = holdout[holdout.split == "test"][["user_id", "item_id"]]
    assert len(cands.merge(test)) == 12  # every target is in its user's list
    negatives = cands.merge(test, how="left", indicator=True).query("_merge == 'left_only'")
    assert negatives.merge(inter[["user_id", "item_id"]]).empty  # no negative the user touched
    runs = deltalake.DeltaTable(str(root / "runs")).to_pandas()
    row = runs[runs.job == "protocol"]  # the protocol job records its run like every other job
    assert len(row) == 1 and row.status.iloc[0] == "succeeded"
    assert (row.users.iloc[0], row.candidates.iloc[0]) == (12, 12 * 20)


def test_protocol_is_deterministic_and_seeded(spark, cfg, tmp_path) -> None:
    inter, items = synthetic()
    write_input(spark, cfg, "interactions", inter, INTERACTIONS_SCHEMA)
    write_input(spark, cfg, "items", items, ITEMS_SCHEMA)
    root = Path(cfg.tables_root)

    def run(config):
        run_stage(protocol_job, spark, config)
        frame = deltalake.DeltaTable(str(root / "candidates")).to_pandas()
        return frame.sort_values(["user_id", "retrieval_rank"]).reset_index(drop=True)

    first, second = run(cfg), run(cfg)
    pd.testing.assert_frame_equal(first, second)
    other_seed = run(cfg.model_copy(update={"data": cfg.data.model_copy(update={"seed": 7})}))
    assert not first.equals(other_seed)


def test_user_sample_is_seeded_and_keeps_whole_users(spark) -> None:
    from instructrec_batch.data.protocol import sample_users

    inter, _ = synthetic(n_users=30, per_user=6)
    frame = spark.createDataFrame(inter)
    picked = sample_users(frame, 7, seed=5).toPandas()
    again = sample_users(frame, 7, seed=5).toPandas()
    other = sample_users(frame, 7, seed=6).toPandas()
    assert picked["user_id"].nunique() == 7 and len(picked) == 7 * 6
    assert set(picked["user_id"]) == set(again["user_id"]) != set(other["user_id"])
    assert sample_users(frame, None, seed=5).count() == len(inter)


def test_each_user_walks_to_exactly_the_wanted_unseen_items(spark) -> None:
    """walk_items: distinct, never seen, exactly `wanted` (all unseen items when fewer exist), and every
    item about equally likely over users (`bench protocol` measures that it scales)."""
    import numpy as np

    from instructrec_batch.data.protocol import next_prime, walk_items

    n_items, n_users, wanted = 50, 400, 19
    rng = np.random.default_rng(0)
    seen = [
        (u, int(i)) for u in range(n_users) for i in rng.choice(n_items, size=int(rng.integers(0, 30)), replace=False)
    ]
    seen += [(n_users, i) for i in range(n_items - 5)]  # a user who has seen all but 5 items
    seen_frame = spark.createDataFrame(
        pd.DataFrame(seen, columns=["user_id", "item_id"]), "user_id BIGINT, item_id BIGINT"
    )
    users = spark.createDataFrame(pd.DataFrame({"user_id": range(n_users + 1)}), "user_id BIGINT")
    items = spark.createDataFrame(pd.DataFrame({"item_id": range(n_items)}), "item_id BIGINT")
    drawn = walk_items(users, items, seen_frame, seed=3, wanted=wanted)
    got = drawn.toPandas()
    sizes = got.groupby("user_id").size()
    assert (sizes.drop(n_users) == wanted).all() and sizes[n_users] == 5
    assert not got.duplicated().any()
    assert got.merge(pd.DataFrame(seen, columns=["user_id", "item_id"])).empty  # never an item the user saw
    counts = got[got.user_id < n_users].item_id.value_counts().reindex(range(n_items), fill_value=0)
    assert counts.min() > 0.5 * counts.mean() and counts.max() < 1.5 * counts.mean()  # no item favoured
    assert next_prime(50) == 53 and next_prime(53) == 53 and next_prime(1) == 2


def test_bench_protocol_reports_its_figures(spark, cfg) -> None:
    from instructrec_batch.bench.protocol import bench_protocol, report

    result = bench_protocol(spark, cfg, users=30, items=200, per_user=6)
    assert result.candidate_rows == 30 * (cfg.data.negatives + 1)  # every user's full list, none short
    assert result.seconds > 0 and result.peak_rss_mb > 0
    assert "users_per_s" in report(result, as_json=False) and '"peak_rss_mb"' in report(result, as_json=True)
