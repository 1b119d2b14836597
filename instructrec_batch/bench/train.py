"""`bench train`: per-sequence vs one-pass LoRA training on the same examples and the same batches.

Synthetic tables go through the protocol and the training example builder; the same sequences are
then trained for the same number of steps from the same seed twice: every candidate's sequence in
full (the reference) and one packed sequence per pointwise example. Prints examples/s of the
optimisation steps (validations excluded), the speed-up, and the validation loss after the last step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pyspark.sql import SparkSession

from instructrec_batch import contracts as C
from instructrec_batch.bench import figures
from instructrec_batch.bench.prompts import synthetic_tables
from instructrec_batch.config import Config
from instructrec_batch.context import run_stage
from instructrec_batch.memory import peak_rss
from instructrec_batch.models.base import load_causal_lm, load_tokenizer, resolve_base
from instructrec_batch.models.forward import pad_id_of
from instructrec_batch.prompts.templates import load_templates
from instructrec_batch.spark.tables import read_input
from instructrec_batch.stages.data import protocol_job
from instructrec_batch.training.examples import TRAIN, VALID, build_examples
from instructrec_batch.training.sequences import sequences
from instructrec_batch.training.trainer import train_lora


@dataclass(frozen=True)
class TrainBench:
    steps: int
    batch_size: int
    train_sequences: int
    per_sequence_examples_per_s: float
    onepass_examples_per_s: float
    onepass_speedup: float
    per_sequence_val_loss: float
    onepass_val_loss: float
    val_loss_diff: float
    peak_rss_mb: float


def bench_train(spark: SparkSession, cfg: Config, *, users: int, items: int, per_user: int, steps: int) -> TrainBench:
    import torch

    synthetic_tables(spark, cfg, users, items, per_user, cands=0)  # the protocol writes the candidates
    run_stage(protocol_job, spark, cfg)
    base = resolve_base(cfg.model, cfg.cache_path)
    frame = build_examples(
        read_input(spark, cfg.catalog, C.INTERACTIONS),
        read_input(spark, cfg.catalog, C.ITEMS),
        read_input(spark, cfg.catalog, C.HOLDOUT),
        cfg.train,
        cfg.prompt,
        cfg.evidence,
        str(base.path),
    ).toPandas()
    tokenizer = load_tokenizer(base.path)
    templates = load_templates(cfg.prompt.template_version)
    t = cfg.train.model_copy(
        update={"max_steps": steps, "eval_every": steps, "max_minutes": 1e6, "patience": steps + 1}
    )
    train = sequences(frame[frame.kind == TRAIN], tokenizer, templates, t.max_length)
    valid = sequences(frame[frame.kind == VALID], tokenizer, templates, t.max_length)
    runs = {}
    with peak_rss() as memory:
        for packed in (False, True):
            torch.manual_seed(t.seed)
            model = load_causal_lm(base.path, "float32", "cuda" if torch.cuda.is_available() else "cpu")
            start = time.perf_counter()
            result = train_lora(model, train, valid, t.model_copy(update={"packed": packed}), pad_id_of(tokenizer))
            runs[packed] = (result, time.perf_counter() - start)
            del model, result.model
    (slow, _), (fast, _) = runs[False], runs[True]
    slow_rate, fast_rate = slow.examples_seen / slow.train_seconds, fast.examples_seen / fast.train_seconds
    slow_val, fast_val = slow.history[-1]["val_loss"], fast.history[-1]["val_loss"]
    return TrainBench(
        steps=steps,
        batch_size=t.batch_size,
        train_sequences=len(train),
        per_sequence_examples_per_s=round(slow_rate, 3),
        onepass_examples_per_s=round(fast_rate, 3),
        onepass_speedup=round(fast_rate / slow_rate, 2),
        per_sequence_val_loss=round(slow_val, 4),
        onepass_val_loss=round(fast_val, 4),
        val_loss_diff=round(abs(fast_val - slow_val), 4),
        peak_rss_mb=round(memory.peak_mb, 1),
    )


def report(result: TrainBench, as_json: bool) -> str:
    return figures.report(result, as_json, width=28)
