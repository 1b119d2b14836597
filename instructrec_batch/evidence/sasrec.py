"""SASRec (Kang & McAuley 2018): the sequential baseline LLM re-rankers are measured against, and the
model behind the sequential evidence (evidence/sequential.py).

A compact implementation on torch: item + position embeddings and causal self-attention blocks,
trained on the driver from the training interactions (time-ordered per user, held-out rows excluded
by the caller) to predict the next item at every position. A candidate's score is the dot product of
the user's last hidden state with the candidate's embedding; items never seen in training score
lowest.

Two choices make it the strong baseline it should be rather than the paper's original recipe
(`loss: bce`, `sequences: newest`): the loss is the softmax cross-entropy of the next item against
the whole catalogue (sampled for large catalogues), which later work found to lift SASRec well above
its one-negative binary loss (Klenitskiy & Vasilev 2023, "Turning Dross Into Gold Loss: is BERT4Rec
really better than SASRec?"); and every training interaction is a target, the history cut into
windows of `max_len`, where the paper keeps only each user's newest `max_len` items. Its budget is
`epochs`, raised to reach `min_steps` optimiser steps where an epoch is only a few batches (few users,
short histories): short of that it ranks like popularity.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from instructrec_batch import contracts as C
from instructrec_batch.config import SasrecConfig

log = logging.getLogger(__name__)


class _Model(nn.Module):
    def __init__(self, n_items: int, cfg: SasrecConfig) -> None:
        super().__init__()
        self.item = nn.Embedding(n_items + 1, cfg.dim, padding_idx=0)  # index 0 = padding
        self.position = nn.Embedding(cfg.max_len, cfg.dim)
        layer = nn.TransformerEncoderLayer(
            cfg.dim, nhead=1, dim_feedforward=cfg.dim, dropout=cfg.dropout, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, cfg.blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.scale = math.sqrt(cfg.dim)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        """Hidden state per position of left-padded item sequences (B, L) → (B, L, dim)."""
        length = seq.shape[1]
        x = self.item(seq) * self.scale + self.position(torch.arange(length, device=seq.device))
        keep = (seq > 0).unsqueeze(-1)
        x = self.dropout(x) * keep
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=seq.device)
        return self.norm(self.blocks(x, mask=causal, is_causal=True)) * keep


@dataclass
class SasrecModel:
    model: _Model
    index: dict[object, int]  # item_id → embedding row
    histories: dict[object, list[int]]  # user_id → item rows, oldest first
    max_len: int

    @torch.inference_mode()
    def _states(self, users: list[object]) -> tuple[list[object], torch.Tensor]:
        """The users among `users` with a history, and each one's last hidden state (n, dim)."""
        self.model.eval()
        known = [u for u in users if self.histories.get(u)]
        states = []
        for start in range(0, len(known), 256):
            chunk = [_left_pad(self.histories[u][-self.max_len :], self.max_len) for u in known[start : start + 256]]
            states.append(self.model(torch.tensor(chunk))[:, -1, :])
        return known, torch.cat(states) if states else torch.zeros(0, self.model.item.embedding_dim)

    @torch.inference_mode()
    def score(self, candidates: pd.DataFrame) -> np.ndarray:
        """Scores for candidates(user_id, item_id); users without history score 0 everywhere.

        Items never seen in training score 1 below the lowest score of a seen item: last in every list,
        yet on the same scale as the rest, so the score can stand next to others in a linear ranker
        (a sentinel like -1e9 would swamp any standardisation).
        """
        known, states = self._states(candidates[C.USER_ID].drop_duplicates().tolist())
        hidden = dict(zip(known, states, strict=True))
        weights = self.model.item.weight
        out = np.zeros(len(candidates))
        unseen = np.zeros(len(candidates), dtype=bool)
        for i, (user, item) in enumerate(zip(candidates[C.USER_ID], candidates[C.ITEM_ID], strict=True)):
            row = self.index.get(item)
            if row is None:
                unseen[i] = True
            elif user in hidden:
                out[i] = float(hidden[user] @ weights[row])
        out[unseen] = (out[~unseen].min() if (~unseen).any() else 0.0) - 1.0
        return out

    @torch.inference_mode()
    def vectors(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(user_id, vector, log_norm) for every user with a history and (item_id, vector) for every
        item seen in training: the log-probability of item i coming next after user u's history,
        under the softmax over the whole catalogue, is vector_u · vector_i - log_norm_u.

        A probability, unlike a raw dot product, keeps its meaning when the model is retrained (a
        ranker fitted on one night's model can weigh the next night's), and it lets anything that
        can join two tables score a candidate without the model."""
        known, states = self._states(list(self.histories))
        items = self.model.item.weight[1:]
        log_norm = torch.cat(
            [torch.logsumexp(chunk @ items.T, dim=1) for chunk in states.split(256)] if len(known) else [torch.zeros(0)]
        )
        users = pd.DataFrame(
            {C.USER_ID: known, C.VECTOR: list(states.numpy().astype(np.float32)), C.LOG_NORM: log_norm.numpy()}
        )
        by_row = sorted(self.index, key=self.index.__getitem__)
        catalogue = pd.DataFrame({C.ITEM_ID: by_row, C.VECTOR: list(items.numpy().astype(np.float32))})
        return users, catalogue


def _left_pad(rows: list[int], length: int) -> list[int]:
    return [0] * (length - len(rows)) + rows


def _windows(history: list[int], window: int, every: bool) -> list[list[int]]:
    """The newest `window` items, or (every) the whole history cut from the newest end into windows that
    overlap by one item, so that each next item is a target exactly once."""
    if not every:
        return [history[-window:]]
    out, end = [], len(history)
    while end >= 2:
        out.append(history[max(0, end - window) : end])
        end -= window - 1
    return out


def _binary_loss(
    model: _Model, hidden: torch.Tensor, pos: torch.Tensor, n_items: int, generator: torch.Generator
) -> torch.Tensor:
    """The paper's loss: each position's next item against one uniformly drawn negative, binary
    cross-entropy averaged over the non-padding positions."""
    neg = torch.randint(1, n_items + 1, pos.shape, generator=generator).to(pos.device)
    pos_logit = (hidden * model.item(pos)).sum(-1)
    neg_logit = (hidden * model.item(neg)).sum(-1)
    bce = nn.functional.binary_cross_entropy_with_logits
    loss = bce(pos_logit, torch.ones_like(pos_logit), reduction="none")
    loss = loss + bce(neg_logit, torch.zeros_like(neg_logit), reduction="none")
    mask = (pos > 0).float()
    return (loss * mask).sum() / mask.sum()


def _softmax_loss(
    model: _Model, hidden: torch.Tensor, pos: torch.Tensor, n_items: int, negatives: int, generator: torch.Generator
) -> torch.Tensor:
    """Cross-entropy of each position's next item against every item, or, for a catalogue larger than
    `negatives`, against `negatives` items drawn uniformly for the whole batch (sampled softmax; a drawn
    item that is the target is masked out as a negative)."""
    keep = pos > 0
    h, target = hidden[keep], pos[keep]
    if n_items <= negatives:
        logits = h @ model.item.weight[1:].T
        return nn.functional.cross_entropy(logits, target - 1)
    drawn = torch.randint(1, n_items + 1, (negatives,), generator=generator).to(h.device)
    pos_logit = (h * model.item(target)).sum(-1, keepdim=True)
    neg_logit = h @ model.item(drawn).T
    neg_logit = neg_logit.masked_fill(drawn.unsqueeze(0) == target.unsqueeze(1), float("-inf"))
    logits = torch.cat([pos_logit, neg_logit], dim=1)
    return nn.functional.cross_entropy(logits, torch.zeros(len(target), dtype=torch.long, device=h.device))


def _epochs(cfg: SasrecConfig, batches: int) -> int:
    """cfg.epochs, or as many more as min_steps needs at `batches` optimiser steps an epoch (logged)."""
    needed = math.ceil(cfg.min_steps / batches)
    if needed <= cfg.epochs:
        return cfg.epochs
    log.info(
        "sasrec: %d epochs instead of %d: an epoch is %d step(s) here and min_steps is %d",
        needed,
        cfg.epochs,
        batches,
        cfg.min_steps,
    )
    return needed


def train_sasrec(train: pd.DataFrame, cfg: SasrecConfig, seed: int) -> SasrecModel:
    """Fit SASRec on training interactions(user_id, item_id, event_ts), ordered by (event_ts, item_id).

    Trained on the GPU when there is one (the random draws stay on the CPU's generator), returned on
    the CPU, where scoring and the vectors are computed."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    ordered = train.sort_values([C.USER_ID, C.EVENT_TS, C.ITEM_ID], kind="stable")
    items = sorted(ordered[C.ITEM_ID].unique().tolist())
    index = {item: i + 1 for i, item in enumerate(items)}
    rows = ordered[C.ITEM_ID].map(index).to_numpy()
    histories = {user: rows[idx].tolist() for user, idx in ordered.groupby(C.USER_ID, sort=True).indices.items()}
    window = cfg.max_len + 1
    sequences = [s for h in histories.values() if len(h) >= 2 for s in _windows(h, window, cfg.sequences == "all")]
    if not sequences:
        raise ValueError("SASRec needs users with at least two training interactions; found none")
    padded = torch.tensor([_left_pad(s, window) for s in sequences])
    inputs, targets = padded[:, :-1], padded[:, 1:]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = _Model(len(items), cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98))
    epochs = _epochs(cfg, math.ceil(len(inputs) / cfg.batch_size))
    started = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(inputs), generator=generator)
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            pick = order[start : start + cfg.batch_size]
            seq, pos = inputs[pick].to(device), targets[pick].to(device)
            hidden = model(seq)
            if cfg.loss == "ce":
                loss = _softmax_loss(model, hidden, pos, len(items), cfg.ce_negatives, generator)
            else:
                loss = _binary_loss(model, hidden, pos, len(items), generator)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(pick)
        if (epoch + 1) % 10 == 0 or epoch + 1 == epochs:
            log.info("sasrec: epoch %d/%d loss %.4f", epoch + 1, epochs, total / len(order))
        minutes = (time.perf_counter() - started) / 60
        if cfg.max_minutes is not None and minutes >= cfg.max_minutes and epoch + 1 < epochs:
            log.warning(
                "sasrec: stopped after epoch %d/%d, its %.1f-minute budget spent (max_minutes)",
                epoch + 1,
                epochs,
                cfg.max_minutes,
            )
            break
    return SasrecModel(model.to("cpu"), index, histories, cfg.max_len)
