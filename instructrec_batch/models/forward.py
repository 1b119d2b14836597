"""Batched forward passes that return the logits at each sequence's last position.

Batches are left-padded so every sequence ends at the same column and only the last position's
logits are computed (`logits_to_keep=1`: no vocabulary projection over the whole sequence).
Position ids are derived from the attention mask, so padding never shifts a sequence's positions
and a padded batch gives the same logits as each sequence alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def left_pad(
    batch: Sequence[Sequence[int]], pad_id: int, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
        mask[row, width - len(ids) :] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device), "position_ids": positions.to(device)}


def last_logits(model: Any, batch: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """[batch, vocab] logits predicting the token after each sequence."""
    inputs = left_pad(batch, pad_id, next(model.parameters()).device)
    return model(**inputs, logits_to_keep=1, use_cache=False).logits[:, -1, :]


def pad_id_of(tokenizer: Any) -> int:
    """Padding id: the tokenizer's pad, else eos (masked out either way)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return 0 if pad is None else int(pad)


def last_hidden(model: Any, batch: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """[batch, hidden] final hidden states at each sequence's last position (no vocabulary projection)."""
    inputs = left_pad(batch, pad_id, next(model.parameters()).device)
    return model.get_decoder()(**inputs, use_cache=False).last_hidden_state[:, -1, :]


def answer_logits(model: Any, hidden: torch.Tensor, token_ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """[batch, len(token_ids)] logits of the answer tokens only, computed in float32.

    Scoring needs two (pointwise) or up to 26 (listwise) vocabulary rows, not all of them; and in
    float32 the scores keep their resolution when the model runs in bfloat16 (bf16 logits near 16
    are 0.125 apart, which would turn close candidates into ties).
    """
    head = model.get_output_embeddings()
    ids = torch.as_tensor(token_ids, device=hidden.device)
    logits = hidden.float() @ head.weight[ids].float().T
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias[ids].float()
    return logits


def decoder_of(model: Any) -> Any:
    """The transformer body (no LM head) of a causal LM, through a peft wrapper when there is one."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.get_decoder()
