"""The LoRA training loop (peft) on the driver: answer-token loss, validation, early stopping.

The loss is cross-entropy of the answer token after the prompt (only answer tokens count), computed
from the last position's logits of left-padded, length-bucketed batches. The validation loss of the
base model alone (`zero_shot_val_loss`, adapter disabled) is measured on the same examples first, so
the manifest can say whether tuning helped. The best adapter by validation loss is kept.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from instructrec_batch.config import TrainConfig
from instructrec_batch.errors import TrainingError
from instructrec_batch.hardware import fast_bf16
from instructrec_batch.models.adapter import peft_wrapping
from instructrec_batch.models.forward import decoder_of, last_logits
from instructrec_batch.models.packing import PackedRow, attention_kind, pack_pointwise, packed_inputs
from instructrec_batch.training.sequences import TrainSequence

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model: Any  # the peft model holding the best adapter
    zero_shot_val_loss: float
    val_loss: float
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    stopped: str = "max_steps"  # max_steps | early_stopping | time_budget (the safety limit cut it short)
    train_seconds: float = 0.0  # time in optimisation steps only (validations excluded)
    examples_seen: int = 0  # pointwise examples (all their candidates) and listwise examples stepped on


def _batches(seqs: Sequence[TrainSequence], size: int, rng: random.Random) -> list[list[TrainSequence]]:
    """Length-bucketed batches in random order, keeping each pointwise example's sequences together.

    Examples are shuffled, sorted by length within chunks of about 50 batches, packed whole into
    batches of at least `size` sequences, and the batches shuffled.
    """
    groups: dict[int, list[TrainSequence]] = {}
    units: list[list[TrainSequence]] = []
    for seq in seqs:
        if seq.group < 0:
            units.append([seq])
        else:
            groups.setdefault(seq.group, []).append(seq)
    units += list(groups.values())
    rng.shuffle(units)
    chunk = size * 50
    batches: list[list[TrainSequence]] = []
    block: list[list[TrainSequence]] = []

    def flush() -> None:
        current: list[TrainSequence] = []
        for unit in sorted(block, key=lambda u: max(len(s.input_ids) for s in u)):
            current += unit
            if len(current) >= size:
                batches.append(current)
                current = []
        if current:
            batches.append(current)
        block.clear()

    count = 0
    for unit in units:
        block.append(unit)
        count += len(unit)
        if count >= chunk:
            flush()
            count = 0
    flush()
    rng.shuffle(batches)
    return batches


def _pairwise(logits: torch.Tensor, batch: Sequence[TrainSequence]) -> tuple[torch.Tensor, int] | None:
    """Sum of -log sigmoid(score(target) - score(negative)) over the batch's pointwise pairs, and their count.

    score = logit(Yes) - logit(No) + prior: what the scorer ranks by, plus the sequence's evidence
    prior, so that with priors the model learns what the evidence misses. Cross-entropy alone lets the
    model lower its loss by learning the Yes/No ratio of the data; this term only rewards ordering
    each user's target above their negatives. Pairs never cross examples.
    """
    rows = [i for i, s in enumerate(batch) if s.yes_no is not None]
    if not rows:
        return None
    device = logits.device
    index = torch.tensor(rows, device=device)
    yes = torch.tensor([batch[i].yes_no[0] for i in rows], device=device)  # type: ignore[index]
    no = torch.tensor([batch[i].yes_no[1] for i in rows], device=device)  # type: ignore[index]
    prior = torch.tensor([batch[i].prior for i in rows], device=device, dtype=torch.float32)
    score = logits[index, yes].float() - logits[index, no].float() + prior
    group = torch.tensor([batch[i].group for i in rows], device=device)
    positive = torch.tensor([batch[i].positive for i in rows], device=device)
    pairs = (group[:, None] == group[None, :]) & positive[:, None] & ~positive[None, :]
    count = int(pairs.sum())
    if not count:
        return None
    margins = score[:, None] - score[None, :]
    return -(F.logsigmoid(margins) * pairs).sum(), count


def _unit_indices(batch: Sequence[TrainSequence]) -> list[list[int]]:
    """The batch's examples in order of first appearance: a pointwise example's sequences together,
    any other sequence alone."""
    units: dict[int, list[int]] = {}
    for i, seq in enumerate(batch):
        units.setdefault(seq.group if seq.group >= 0 else -1 - i, []).append(i)
    return list(units.values())


def _per_sequence_logits(model: Any, batch: Sequence[TrainSequence], pad_id: int) -> torch.Tensor:
    """[len(batch), vocab] answer-position logits, every sequence run in full (the reference)."""
    return last_logits(model, [s.input_ids for s in batch], pad_id)


def _packed_logits(model: Any, batch: Sequence[TrainSequence], pad_id: int) -> torch.Tensor:
    """The same logits with each pointwise example in one packed sequence (its prefix run once)."""
    units = _unit_indices(batch)
    rows, where = [], []  # where[k] = (row, position) of batch[k]'s answer
    for members in units:
        first = batch[members[0]]
        if first.group < 0 or first.prefix_len == 0:
            ids = first.input_ids
            rows.append(PackedRow(list(ids), [0] * len(ids), list(range(len(ids))), [len(ids) - 1], 0, 0))
        else:
            prefix = first.input_ids[: first.prefix_len]
            suffixes = [batch[k].input_ids[first.prefix_len :] for k in members]
            rows.append(pack_pointwise(prefix, suffixes, 0, 0))
        where += [(len(rows) - 1, at) for at in rows[-1].answer_at]
    order = [k for members in units for k in members]
    device = next(model.parameters()).device
    inputs = packed_inputs(rows, pad_id, device, attention_kind(model))
    hidden = decoder_of(model)(**inputs, use_cache=False).last_hidden_state
    picked = hidden[
        torch.tensor([r for r, _ in where], device=device), torch.tensor([a for _, a in where], device=device)
    ]
    logits = model.get_output_embeddings()(picked)
    out = torch.empty_like(logits)
    out[torch.tensor(order, device=device)] = logits
    return out


def _loss_sums(
    model: Any, batch: Sequence[TrainSequence], pad_id: int, autocast: bool, packed: bool
) -> tuple[torch.Tensor, tuple[torch.Tensor, int] | None]:
    """(answer cross-entropy summed over the batch's sequences, pairwise sum and pair count or None)."""
    device = next(model.parameters()).device
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast):
        logits = (_packed_logits if packed else _per_sequence_logits)(model, batch, pad_id)
    answers = torch.tensor([s.answer_id for s in batch], device=logits.device)
    return F.cross_entropy(logits.float(), answers, reduction="sum"), _pairwise(logits, batch)


def _loss(
    model: Any,
    batch: Sequence[TrainSequence],
    pad_id: int,
    autocast: bool,
    pairwise_weight: float = 0.0,
    packed: bool = True,
) -> torch.Tensor:
    """Mean answer-token cross-entropy, plus the weighted mean pairwise ranking term when asked for.

    `packed` runs each pointwise example as one sequence (prefix once, suffixes masked apart); the
    per-sequence path computes the same numbers with every candidate's sequence in full.
    """
    ce, ranking = _loss_sums(model, batch, pad_id, autocast, packed)
    loss = ce / len(batch)
    if pairwise_weight > 0 and ranking is not None:
        loss = loss + pairwise_weight * ranking[0] / ranking[1]
    return loss


def _units(batch: Sequence[TrainSequence]) -> list[list[TrainSequence]]:
    return [[batch[i] for i in members] for members in _unit_indices(batch)]


def _unit_shape(unit: Sequence[TrainSequence], packed: bool) -> tuple[int, int]:
    """(rows, longest row) an example adds to a padded forward: one packed row, or a row per sequence."""
    if packed and unit[0].group >= 0 and unit[0].prefix_len:
        prefix = unit[0].prefix_len
        return 1, prefix + sum(len(s.input_ids) - prefix for s in unit)
    return len(unit), max(len(s.input_ids) for s in unit)


def micro_batches(batch: Sequence[TrainSequence], max_tokens: int, packed: bool) -> list[list[TrainSequence]]:
    """Whole examples in order, cut so each part's padded token count stays within `max_tokens`
    (an example larger than that is a part of its own)."""
    parts: list[list[TrainSequence]] = []
    current: list[TrainSequence] = []
    rows, longest = 0, 0
    for unit in _units(batch):
        unit_rows, unit_longest = _unit_shape(unit, packed)
        if current and (rows + unit_rows) * max(longest, unit_longest) > max_tokens:
            parts.append(current)
            current, rows, longest = [], 0, 0
        current += unit
        rows, longest = rows + unit_rows, max(longest, unit_longest)
    if current:
        parts.append(current)
    return parts


def accumulate_gradients(
    model: Any,
    batch: Sequence[TrainSequence],
    pad_id: int,
    autocast: bool,
    pairwise_weight: float,
    packed: bool,
    max_tokens: int,
    scale: float = 1.0,
) -> float:
    """Backpropagate `scale` × the batch's `_loss` in micro-batches of at most `max_tokens`; return the loss.

    Each part contributes its cross-entropy sum / the batch's sequence count and its pairwise sum /
    the batch's pair count (pairs never cross examples, and parts hold whole examples), so the
    accumulated gradient is the whole batch's, while only one part's activations are alive at a time.
    """
    parts = micro_batches(batch, max_tokens, packed)
    if len(parts) == 1:
        loss = _loss(model, batch, pad_id, autocast, pairwise_weight, packed)
        (loss * scale).backward()
        return float(loss.item())
    pairs = 0
    if pairwise_weight > 0:
        for unit in _units(batch):
            points = [s for s in unit if s.yes_no is not None]
            positives = sum(1 for s in points if s.positive)
            pairs += positives * (len(points) - positives) if unit[0].group >= 0 else 0
    total = 0.0
    for part in parts:
        ce, ranking = _loss_sums(model, part, pad_id, autocast, packed)
        loss = ce / len(batch)
        if pairwise_weight > 0 and ranking is not None and pairs:
            loss = loss + pairwise_weight * ranking[0] / pairs
        (loss * scale).backward()
        total += float(loss.item())
    return total


@torch.inference_mode()
def evaluate(
    model: Any, seqs: Sequence[TrainSequence], pad_id: int, batch_size: int, autocast: bool, packed: bool = True
) -> float:
    """Mean answer-token cross-entropy over `seqs` (an example's sequences kept next to each other)."""
    model.eval()
    ordered = sorted(seqs, key=lambda s: (s.prefix_len or len(s.input_ids), s.group))
    total = 0.0
    for i in range(0, len(ordered), batch_size):
        batch = ordered[i : i + batch_size]
        total += _loss(model, batch, pad_id, autocast, packed=packed).item() * len(batch)
    return total / max(1, len(ordered))


def train_lora(
    base_model: Any, train: Sequence[TrainSequence], valid: Sequence[TrainSequence], cfg: TrainConfig, pad_id: int
) -> TrainResult:
    """Fit a LoRA adapter on `base_model` (modified in place into a peft model)."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    if not train or not valid:
        raise TrainingError(
            f"training needs examples: got {len(train)} training and {len(valid)} validation sequences; users need "
            "at least two titled interactions before their held-out rows and a `valid` row in the holdout table "
            "(run `instructrec-batch protocol`), and train.max_length must hold a prompt"
        )
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    device = next(base_model.parameters()).device
    # bf16 autocast where the hardware multiplies bf16 (CUDA with bf16, Intel AMX CPUs); weights,
    # optimizer state and the loss stay in fp32.
    autocast = fast_bf16(device.type)
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules),
        task_type="CAUSAL_LM",
        bias="none",
    )
    with peft_wrapping():
        model = get_peft_model(base_model, lora)
    eval_batch = cfg.batch_size * 2
    # The budget covers the whole loop, validations included: the zero-shot pass tells how long one
    # validation takes, and training stops early enough to fit the last one inside the budget.
    start = time.monotonic()
    with model.disable_adapter():
        zero_shot = evaluate(model, valid, pad_id, eval_batch, autocast, cfg.packed)
    val_seconds = time.monotonic() - start
    log.info("zero-shot validation loss %.4f on %d sequences (%.0fs)", zero_shot, len(valid), val_seconds)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    warmup = max(1, cfg.max_steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (cfg.max_steps - s) / cfg.max_steps)
    )
    best_val, best_state, bad_evals = zero_shot, None, 0
    result = TrainResult(model, zero_shot, zero_shot, 0)
    batches: list[list[TrainSequence]] = []
    running = 0.0
    for step in range(1, cfg.max_steps + 1):
        model.train()
        for _ in range(cfg.grad_accum):
            if not batches:
                batches = _batches(train, cfg.batch_size, rng)
            step_start = time.monotonic()
            batch = batches.pop()
            loss = accumulate_gradients(
                model,
                batch,
                pad_id,
                autocast,
                cfg.pairwise_weight,
                cfg.packed,
                cfg.micro_batch_tokens,
                scale=1.0 / cfg.grad_accum,
            )
            running += loss / cfg.grad_accum
            result.examples_seen += len({s.group if s.group >= 0 else -1 - i for i, s in enumerate(batch)})
            result.train_seconds += time.monotonic() - step_start
        step_start = time.monotonic()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        result.train_seconds += time.monotonic() - step_start
        result.steps = step
        elapsed = time.monotonic() - start
        if step % 10 == 0:
            eta = elapsed / step * (cfg.max_steps - step)
            log.info(
                "step %d/%d train loss %.4f (%.0fs elapsed, ETA %.0fs)", step, cfg.max_steps, running / 10, elapsed, eta
            )
            running = 0.0
        out_of_time = elapsed + val_seconds > cfg.max_minutes * 60
        if step % cfg.eval_every == 0 or step == cfg.max_steps or out_of_time:
            val = evaluate(model, valid, pad_id, eval_batch, autocast, cfg.packed)
            result.history.append({"step": step, "val_loss": val, "train_loss": loss})
            log.info("step %d validation loss %.4f (zero-shot %.4f)", step, val, zero_shot)
            if val < best_val - 1e-4:
                best_val, bad_evals = val, 0
                best_state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
            else:
                bad_evals += 1
            if bad_evals >= cfg.patience:
                result.stopped = "early_stopping"
                break
            if out_of_time:
                result.stopped = "time_budget"
                log.warning(
                    "TRAINING CUT SHORT: the wall-clock safety limit train.max_minutes=%s stopped it after %d of "
                    "%d steps; the adapter is undertrained (raise train.max_minutes, or run on idle cores)",
                    cfg.max_minutes,
                    step,
                    cfg.max_steps,
                )
                break
    if best_state is not None:
        set_peft_model_state_dict(model, best_state)
    result.val_loss = best_val
    model.eval()
    if not math.isfinite(best_val):
        raise TrainingError("validation loss is not finite, so no adapter was saved; lower train.lr and rerun")
    return result
