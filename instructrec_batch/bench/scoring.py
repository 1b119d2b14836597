"""`bench scoring`: every scorer and the full score job on the same prompts, with their figures.

Synthetic MovieLens-like tables of the requested size go through the real prompts job; the resulting
prompts are then scored (a) pair by pair (naive reference), (b) with the shared prefix KV cache,
(c) in one pass per user (prefix + all suffixes, masked), (d) listwise, in this process, and (e) by
the score job (one-pass) on the configured engine. The Spark overhead ratio is (e) divided by the
in-process time of the same method, model load included on both sides; the in-process time is the
mean of a run before the job and one after it, so a machine whose speed drifts during the several
minutes of the bench does not count its drift as overhead.

The compute floor is what scoring would cost if every unique token (each user's prefix once, each
candidate suffix once) went through the model at the speed of a plain batched causal forward over
the same packed rows, measured in the same run: floor candidates/s = candidates / (unique tokens /
plain tokens per second), the plain forward timed just before and just after the one-pass run.
Each method's ratio to it says how much is left on the table.
Device and dtype are auto-detected exactly as on an executor, so the command runs unchanged on GPUs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.bench import figures
from instructrec_batch.bench.prompts import synthetic_tables
from instructrec_batch.config import Config
from instructrec_batch.context import run_stage
from instructrec_batch.memory import peak_rss
from instructrec_batch.models.base import load_causal_lm, load_tokenizer, resolve_base
from instructrec_batch.models.forward import pad_id_of
from instructrec_batch.prompts.encoding import encode
from instructrec_batch.prompts.render import context_of, render_listwise, render_pointwise
from instructrec_batch.prompts.templates import Template, load_templates
from instructrec_batch.scoring.scorers import ModelHandle, Scorer, ScoringPrompt, make_scorer
from instructrec_batch.scoring.udf import pick_device, resolve_dtype
from instructrec_batch.spark.tables import read_input
from instructrec_batch.stages.evidence import evidence_job
from instructrec_batch.stages.prompts import prompts_job
from instructrec_batch.stages.score import score_job


@dataclass(frozen=True)
class ScoringBench:
    users: int
    candidates: int
    device: str
    dtype: str
    threads: int
    prefix_tokens_mean: float
    naive_cands_per_s: float
    naive_tokens_per_s: float
    shared_prefix_cands_per_s: float
    shared_prefix_tokens_per_s: float
    onepass_cands_per_s: float
    onepass_tokens_per_s: float
    compute_floor_cands_per_s: float
    plain_forward_tokens_per_s: float
    onepass_floor_ratio: float
    shared_prefix_floor_ratio: float
    listwise_cands_per_s: float
    listwise_tokens_per_s: float
    shared_prefix_speedup: float
    max_abs_diff: float
    in_process_seconds: float  # mean of the runs before and after the job
    in_process_after_seconds: float
    job_seconds: float
    spark_overhead_ratio: float
    peak_rss_mb: float


def _timed(scorer: Scorer, prompts: list[ScoringPrompt]) -> tuple[list[np.ndarray], float]:
    start = time.perf_counter()
    scores = scorer.score(prompts)
    return scores, time.perf_counter() - start


def bench_scoring(
    spark: SparkSession, cfg: Config, *, users: int, candidates: int, history: int, items: int = 2000
) -> ScoringBench:
    """Build `users` prompts of `candidates` items each, then time every scorer and the score job."""
    import torch

    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"run_id": "bench-scoring"})})
    synthetic_tables(spark, cfg, users, items, history, candidates)
    run_stage(evidence_job, spark, cfg)  # the fusion head of an adapter, or a template that shows evidence, reads it
    run_stage(prompts_job, spark, cfg)
    rows = read_input(spark, cfg.catalog, C.PROMPTS).where(F.col(C.RUN_ID) == "bench-scoring").toPandas()
    base = resolve_base(cfg.model, cfg.cache_path)
    device = pick_device(cfg.score.device)
    dtype = resolve_dtype(cfg.score.dtype, device)
    templates = load_templates(cfg.prompt.template_version)
    pointwise = templates.get(cfg.prompt.inference_template_id if cfg.prompt.task == "pointwise" else "pointwise-0")
    listwise = templates.get("listwise-0")

    def prompts_for(template: Template) -> list[ScoringPrompt]:
        return [ScoringPrompt(template, context_of(r), tuple(r.candidate_titles)) for r in rows.itertuples()]

    point_prompts, list_prompts = prompts_for(pointwise), prompts_for(listwise)
    n_cands = sum(len(p.candidates) for p in point_prompts)
    with peak_rss() as memory:

        def load() -> ModelHandle:
            tokenizer = load_tokenizer(base.path)
            return ModelHandle(load_causal_lm(base.path, dtype, device), tokenizer, pad_id_of(tokenizer))

        load_start = time.perf_counter()
        handle = load()
        tokenizer = handle.tokenizer
        load_seconds = time.perf_counter() - load_start
        prefix_lens, naive_tokens, shared_tokens, listwise_tokens = [], 0, 0, 0
        for p, q in zip(point_prompts, list_prompts, strict=True):
            rendered = render_pointwise(p.template, p.context, p.candidates)
            prefix, *suffixes = encode(tokenizer, [rendered.prefix, *rendered.suffixes])
            prefix_lens.append(len(prefix))
            naive_tokens += len(prefix) * len(suffixes) + sum(map(len, suffixes))
            shared_tokens += len(prefix) + sum(map(len, suffixes))
            listwise_tokens += len(encode(tokenizer, [render_listwise(q.template, q.context, q.candidates).text])[0])
        batch = cfg.score.batch_size
        tokens = cfg.score.max_batch_tokens
        make_scorer("pointwise", "onepass", handle, batch, tokens).score(point_prompts[:2])  # warm-up
        naive, naive_s = _timed(make_scorer("pointwise", "naive", handle, batch), point_prompts)
        shared, shared_s = _timed(make_scorer("pointwise", "shared_prefix", handle, batch), point_prompts)
        # The floor's plain forward is timed right before and right after one-pass, and averaged: the
        # ratio then compares runs of the same minutes (this kind of machine drifts by several percent).
        plain_before = _plain_forward_tokens_per_s(handle, point_prompts, batch, tokens)
        onepass, onepass_s = _timed(make_scorer("pointwise", "onepass", handle, batch, tokens), point_prompts)
        plain_tps = (plain_before + _plain_forward_tokens_per_s(handle, point_prompts, batch, tokens)) / 2
        _, list_s = _timed(make_scorer("listwise", "-", handle, batch), list_prompts)
        diff = max(
            float(np.max(np.abs(a - b))) for other in (shared, onepass) for a, b in zip(naive, other, strict=True)
        )
        del handle  # the job loads its own copy, as an executor would
        job_cfg = cfg.model_copy(update={"score": cfg.score.model_copy(update={"method": "onepass"})})
        job_start = time.perf_counter()
        run_stage(score_job, spark, job_cfg)
        job_s = time.perf_counter() - job_start
        after_start = time.perf_counter()  # in process again, model load included: brackets the job in time
        handle = load()
        _timed(make_scorer("pointwise", "onepass", handle, batch, tokens), point_prompts)
        after_s = time.perf_counter() - after_start
        del handle
    in_process = (load_seconds + onepass_s + after_s) / 2
    floor = n_cands * plain_tps / shared_tokens
    return ScoringBench(
        users=len(point_prompts),
        candidates=candidates,
        device=device,
        dtype=dtype,
        threads=torch.get_num_threads(),
        prefix_tokens_mean=round(float(np.mean(prefix_lens)), 1),
        naive_cands_per_s=round(n_cands / naive_s, 2),
        naive_tokens_per_s=round(naive_tokens / naive_s, 1),
        shared_prefix_cands_per_s=round(n_cands / shared_s, 2),
        shared_prefix_tokens_per_s=round(shared_tokens / shared_s, 1),
        onepass_cands_per_s=round(n_cands / onepass_s, 2),
        onepass_tokens_per_s=round(shared_tokens / onepass_s, 1),
        compute_floor_cands_per_s=round(floor, 2),
        plain_forward_tokens_per_s=round(plain_tps, 1),
        onepass_floor_ratio=round(n_cands / onepass_s / floor, 3),
        shared_prefix_floor_ratio=round(n_cands / shared_s / floor, 3),
        listwise_cands_per_s=round(n_cands / list_s, 2),
        listwise_tokens_per_s=round(listwise_tokens / list_s, 1),
        shared_prefix_speedup=round(naive_s / shared_s, 2),
        max_abs_diff=float(f"{diff:.3g}"),
        in_process_seconds=round(in_process, 2),
        in_process_after_seconds=round(after_s, 2),
        job_seconds=round(job_s, 2),
        spark_overhead_ratio=round(job_s / in_process, 3),
        peak_rss_mb=round(memory.peak_mb, 1),
    )


def _plain_forward_tokens_per_s(handle: ModelHandle, prompts: list[ScoringPrompt], batch: int, tokens: int) -> float:
    """Tokens/s of plain causal forwards (no custom mask) over the same packed rows, batched alike."""
    import torch

    from instructrec_batch.models.forward import decoder_of
    from instructrec_batch.models.packing import pack_pointwise
    from instructrec_batch.prompts.encoding import pointwise_inputs, yes_no_ids

    rows = []
    for p in prompts:
        prefix, suffixes = pointwise_inputs(handle.tokenizer, render_pointwise(p.template, p.context, p.candidates))
        rows.append(pack_pointwise(prefix, suffixes, *yes_no_ids(handle.tokenizer, p.template)).ids)
    rows.sort(key=len)
    decoder, device = decoder_of(handle.model), handle.device
    start, done, group = time.perf_counter(), 0, []

    def run(chunk: list[list[int]]) -> int:
        width = max(map(len, chunk))
        ids = torch.tensor([r + [handle.pad_id] * (width - len(r)) for r in chunk], device=device)
        with torch.inference_mode():
            decoder(input_ids=ids, use_cache=False)
        return sum(map(len, chunk))

    for row in rows:
        if group and ((len(group) + 1) * len(row) > tokens or len(group) >= batch):
            done += run(group)
            group = []
        group.append(row)
    if group:
        done += run(group)
    return done / (time.perf_counter() - start)


def report(result: ScoringBench, as_json: bool) -> str:
    return figures.report(result, as_json, width=28)
