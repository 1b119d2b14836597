"""The executor side of scoring: model cache, device choice, adapter transport, the pandas function.

The function given to mapInPandas captures only a small `ScoringSpec` and an `AdapterPayload`;
torch, transformers and peft are imported inside it. The base model (+ adapter) is loaded once per
executor process and kept in `executor_cache` under (model path, adapter sha256, dtype, device).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from instructrec_batch import contracts as C
from instructrec_batch.hardware import fast_bf16, release_openmp_threads
from instructrec_batch.scoring.progress import PROGRESS_CHUNK, note_scored
from instructrec_batch.spark.faults import note_batch

log = logging.getLogger(__name__)


RETRIEVAL_ORDER = "retrieval_order"
MODEL = "model"
SCORED_COLUMNS = [C.USER_ID, C.ITEM_ID, "score", "position", "ranked_by", "template_id"]


def scored_schema(user_type: str, item_type: str) -> str:
    return (
        f"{C.USER_ID} {user_type}, {C.ITEM_ID} {item_type}, score DOUBLE, position INT, ranked_by STRING, "
        "template_id STRING"
    )


@dataclass(frozen=True, kw_only=True)
class ScoringSpec:
    """What an executor needs to score; small and picklable."""

    model_path: str
    dtype: str  # auto | float32 | bfloat16
    device: str  # auto | cpu | cuda
    method: str  # pointwise implementation: onepass | shared_prefix | naive
    batch_size: int
    template_version: str
    merge_adapter: bool
    adapter_sha256: str | None
    template_id: str | None = None  # render every warm user with this template (evaluation of a task form)
    fail_after_batches: int | None = None  # fault injection: raise once this many batches were scored
    max_batch_tokens: int = 8192  # onepass: tokens per forward
    cached_models: int = 1  # models kept per executor process (least recently used dropped first)


class AdapterPayload:
    """Adapter files for executors: a Spark broadcast (classic) or bytes in the closure (Connect)."""

    def __init__(self, files: Mapping[str, bytes] | None = None, broadcast: Any = None) -> None:
        self._files, self._broadcast = (dict(files) if files else None), broadcast

    def files(self) -> Mapping[str, bytes]:
        return self._broadcast.value if self._broadcast is not None else (self._files or {})


def pick_device(preference: str) -> str:
    """CUDA when asked for or available: the task's GPU from TaskContext resources, else cuda:0."""
    import torch

    if preference == "cpu" or not torch.cuda.is_available():
        if preference == "cuda":
            raise RuntimeError("score.device=cuda but this executor has no CUDA device; set score.device=auto")
        return "cpu"
    try:
        from pyspark import TaskContext

        context = TaskContext.get()
        gpus = context.resources().get("gpu") if context is not None else None
        if gpus is not None and gpus.addresses:
            return f"cuda:{gpus.addresses[0]}"
    except (AttributeError, RuntimeError) as exc:  # e.g. no TaskContext resources over Connect
        log.info("no GPU address from the task context (%s); using cuda:0", exc)
    return "cuda:0"


def resolve_dtype(preference: str, device: str) -> str:
    """bf16 on GPUs and on AMX CPUs (~1.6x faster there), fp32 on other CPUs, where bf16 is slow.

    Answer logits are computed in fp32 either way (models/forward.answer_logits).
    """
    if preference != "auto":
        return preference
    return "bfloat16" if fast_bf16(device) else "float32"


def model_cache_key(spec: ScoringSpec, device: str, dtype: str) -> tuple[str, ...]:
    return ("scoring-model", spec.model_path, spec.adapter_sha256 or "-", dtype, device)


def load_handle(spec: ScoringSpec, payload: AdapterPayload) -> Any:
    """The cached ModelHandle for this process (loaded on first use)."""
    from instructrec_batch.executor_cache import get_or_load

    device = pick_device(spec.device)
    dtype = resolve_dtype(spec.dtype, device)

    def load() -> Any:
        from instructrec_batch.models.adapter import load_adapter, materialize_blob
        from instructrec_batch.models.base import load_causal_lm, load_tokenizer
        from instructrec_batch.models.forward import pad_id_of
        from instructrec_batch.scoring.scorers import ModelHandle

        tokenizer = load_tokenizer(spec.model_path)
        model = load_causal_lm(spec.model_path, dtype, device)
        if spec.adapter_sha256:
            # The folder only carries the bytes into peft: the weights are in memory once loaded.
            with tempfile.TemporaryDirectory(prefix="instructrec-adapter-") as folder:
                model = load_adapter(model, materialize_blob(payload.files(), spec.adapter_sha256, Path(folder)))
            if spec.merge_adapter:
                model = model.merge_and_unload()
            model.eval()
        return ModelHandle(model, tokenizer, pad_id_of(tokenizer))

    return get_or_load(model_cache_key(spec, device, dtype), load, capacity=spec.cached_models)


def score_fn(spec: ScoringSpec, payload: AdapterPayload) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """prompts rows → one row per candidate with its score; cold-start users keep retrieval order."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from instructrec_batch.prompts.render import context_of
        from instructrec_batch.prompts.templates import load_templates
        from instructrec_batch.scoring.scorers import ScoringPrompt, make_scorer

        templates = load_templates(spec.template_version)
        scorers: dict[str, Any] = {}
        for frame in batches:
            note_batch(spec.fail_after_batches)
            warm = frame[~frame["cold_start"].astype(bool)]
            scores: dict[int, Any] = {}
            for template_id, group in warm.groupby("template_id"):
                template = templates.get(spec.template_id or str(template_id))
                if template.task not in scorers:
                    scorers[template.task] = make_scorer(
                        template.task, spec.method, load_handle(spec, payload), spec.batch_size, spec.max_batch_tokens
                    )
                prompts = [
                    ScoringPrompt(template, context_of(row), tuple(row.candidate_titles))
                    for row in group.itertuples(index=False)
                ]
                # In chunks of users, so progress is counted while a large Arrow batch is scored.
                for start in range(0, len(prompts), PROGRESS_CHUNK):
                    chunk = prompts[start : start + PROGRESS_CHUNK]
                    values = scorers[template.task].score(chunk)
                    scores.update(zip(group.index[start : start + PROGRESS_CHUNK], values, strict=True))
                    note_scored(len(chunk), sum(len(p.candidates) for p in chunk))
            rows = []
            for index, row in zip(frame.index, frame.itertuples(index=False), strict=True):
                ids = list(row.candidate_ids)
                positions = range(1, len(ids) + 1)
                if index in scores:
                    values, how = [float(v) for v in scores[index]], MODEL
                else:  # cold start: nothing to personalise on, keep the upstream order
                    values, how = [-float(p) for p in positions], RETRIEVAL_ORDER
                used = spec.template_id or row.template_id
                rows += [
                    (row.user_id, item, value, pos, how, used)
                    for item, value, pos in zip(ids, values, positions, strict=True)
                ]
            cold = frame[frame["cold_start"].astype(bool)]  # kept in retrieval order: done at once
            note_scored(len(cold), sum(len(ids) for ids in cold["candidate_ids"]))
            yield pd.DataFrame(rows, columns=SCORED_COLUMNS)
        release_openmp_threads()  # this engine thread is done with torch: its idle team would slow the next one

    return run
