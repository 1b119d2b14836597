"""`bench scoring` on the tiny model: every figure is produced and the scorers agree."""

import json
from dataclasses import asdict

from instructrec_batch.bench.scoring import bench_scoring, report
from instructrec_batch.config import Config

KEYS = {
    "naive_cands_per_s",
    "shared_prefix_cands_per_s",
    "onepass_cands_per_s",
    "compute_floor_cands_per_s",
    "onepass_floor_ratio",
    "listwise_cands_per_s",
    "shared_prefix_speedup",
    "max_abs_diff",
    "spark_overhead_ratio",
    "peak_rss_mb",
    "device",
    "dtype",
}


def test_bench_scoring_reports_every_figure(spark, tiny_cfg: Config) -> None:
    cfg = tiny_cfg.model_copy(update={"score": tiny_cfg.score.model_copy(update={"dtype": "float32"})})
    result = bench_scoring(spark, cfg, users=6, candidates=5, history=8, items=300)
    figures = json.loads(report(result, as_json=True))
    assert set(figures) >= KEYS and figures == asdict(result)
    assert result.users == 6 and (result.device, result.dtype) == ("cpu", "float32")
    assert result.max_abs_diff <= 1e-4  # shared prefix and one-pass == naive in fp32
    assert result.compute_floor_cands_per_s > 0 and result.onepass_floor_ratio > 0
    assert min(result.naive_cands_per_s, result.shared_prefix_cands_per_s, result.listwise_cands_per_s) > 0
    assert result.job_seconds > 0 and result.spark_overhead_ratio > 0 and result.peak_rss_mb > 100
    assert "shared_prefix_speedup" in report(result, as_json=False)


def test_bench_train_reports_both_paths_on_the_same_batches(spark, tiny_cfg: Config) -> None:
    from instructrec_batch.bench.train import bench_train
    from instructrec_batch.bench.train import report as train_report

    result = bench_train(spark, tiny_cfg, users=20, items=200, per_user=12, steps=4)
    figures = json.loads(train_report(result, as_json=True))
    assert {"per_sequence_examples_per_s", "onepass_examples_per_s", "onepass_speedup"} <= set(figures)
    assert result.per_sequence_examples_per_s > 0 and result.onepass_examples_per_s > 0
    # Same seed, same batches, equal losses step by step: the validation losses agree closely.
    assert result.val_loss_diff < 0.02
