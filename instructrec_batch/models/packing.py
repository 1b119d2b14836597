"""One-pass pointwise inputs: a user prefix and all candidate suffixes packed into one sequence.

Token t of suffix j may attend to the prefix and to the tokens of suffix j before it, nothing else;
its position id is len(prefix) + its offset in the suffix. The hidden state at the last token of
suffix j is then exactly what the model computes for prefix + suffix j alone, while the prefix is
encoded once. Used by scoring (OnePassPointwise) and can be used by training on the same layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class PackedRow:
    ids: list[int]
    segment: list[int]  # 0 = prefix, j = candidate j (1-based)
    position: list[int]
    answer_at: list[int]  # index of each candidate's last token, in candidate order
    yes: int
    no: int


def pack_pointwise(prefix: Sequence[int], suffixes: Sequence[Sequence[int]], yes: int, no: int) -> PackedRow:
    ids, segment, position, answer_at = list(prefix), [0] * len(prefix), list(range(len(prefix))), []
    for j, suffix in enumerate(suffixes, start=1):
        ids += suffix
        segment += [j] * len(suffix)
        position += range(len(prefix), len(prefix) + len(suffix))
        answer_at.append(len(ids) - 1)
    return PackedRow(ids, segment, position, answer_at, yes, no)


def attention_kind(model: Any) -> str:
    """'sdpa' / 'flash...' take a boolean mask; 'eager' adds a float mask to the scores."""
    return str(getattr(model.config, "_attn_implementation", "sdpa") or "sdpa")


def packed_inputs(
    rows: Sequence[PackedRow], pad_id: int, device: str | torch.device, kind: str = "sdpa"
) -> dict[str, torch.Tensor]:
    """input_ids, position_ids and the 4D mask (batch, 1, q, k) for right-padded packed rows."""
    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    segment = torch.full((len(rows), width), -1, dtype=torch.long)
    position = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row.ids)
        ids[i, :n] = torch.tensor(row.ids)
        segment[i, :n] = torch.tensor(row.segment)
        position[i, :n] = torch.tensor(row.position)
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    seg_q, seg_k = segment[:, :, None], segment[:, None, :]
    # Padding queries see the prefix only (never an empty row, which would give NaNs); nobody sees padding.
    allowed = causal[None] & (seg_k >= 0) & ((seg_k == 0) | (seg_k == seg_q))
    mask = allowed[:, None]
    if kind == "eager":
        mask = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    return {"input_ids": ids.to(device), "position_ids": position.to(device), "attention_mask": mask.to(device)}
