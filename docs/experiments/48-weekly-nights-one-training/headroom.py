"""Headroom on MovieLens nights, outside the pipeline: how much could a re-ranker gain on item-kNN lists?

For night dates every FREQ from START to 1998-03-25: per user with history before the night, an item-kNN
top-20 (cosine on the binary user-item matrix of the interactions before it, summed over the user's items,
their own items excluded), judged by the first listed item they chose in the H days after it. Orders
compared on the same lists: the retriever's (kNN score), all-time popularity, popularity over the RW days
before the night, and the average of the kNN and recent-popularity ranks; NDCG@10 and HR@1 per order and
each order's paired difference from the retriever's with a 95% bootstrap interval over user-nights.

    python headroom.py INTERACTIONS_DELTA FREQ H RW START
    python headroom.py /tmp/nights48/full/tables/interactions 7D 7 14 1997-12-03   # the figures in README.md
"""

import sys

import numpy as np
import pandas as pd
from deltalake import DeltaTable

PATH, FREQ, H, RW, START = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
log = DeltaTable(PATH).to_pandas()


def lists_at(night: pd.Timestamp, top: int = 20) -> dict:
    """user -> (items, kNN scores, all-time popularity, recent popularity) of their top-`top` list."""
    before = log[log.event_ts < night]
    matrix = pd.crosstab(before.user_id, before.item_id).clip(upper=1)
    m, items = matrix.to_numpy(float), matrix.columns.to_numpy()
    co = m.T @ m
    norm = np.sqrt(np.diag(co))
    sim = co / np.outer(norm, norm).clip(min=1e-9)
    np.fill_diagonal(sim, 0)
    scores = m @ sim
    scores[m > 0] = -np.inf
    popularity = m.sum(0)
    recent = before[before.event_ts >= night - pd.Timedelta(days=RW)]
    recent_pop = pd.crosstab(recent.user_id, recent.item_id).clip(upper=1).sum(0).reindex(items, fill_value=0)
    out = {}
    for row, user in enumerate(matrix.index):
        best = np.argsort(-scores[row])[:top]
        out[user] = (items[best], scores[row, best], popularity[best], recent_pop.to_numpy(float)[best])
    return out


def ndcg10(rank: int) -> float:
    return 1 / np.log2(rank + 1) if rank <= 10 else 0.0


def rank_of(score: np.ndarray, target: int) -> int:
    return int(1 + (score > score[target]).sum())


rows = []
for night in pd.date_range(START, "1998-03-25", freq=FREQ, tz="UTC"):
    lists = lists_at(night)
    after = log[(log.event_ts >= night) & (log.event_ts < night + pd.Timedelta(days=H))].sort_values("event_ts")
    for user, chosen in after.groupby("user_id"):
        if user not in lists:
            continue
        items, knn, pop, rpop = lists[user]
        listed = [i for i in chosen.item_id if i in set(items)]
        if not listed:
            continue
        target = list(items).index(listed[0])
        knn_rank = np.argsort(np.argsort(-knn)).astype(float)
        rpop_rank = np.argsort(np.argsort(-(rpop + 1e-3 * pop))).astype(float)
        rows.append(
            {
                "knn": target + 1,
                "popularity": rank_of(pop, target),
                "recent_popularity": rank_of(rpop + 1e-3 * pop, target),
                "rank_average": rank_of(-(knn_rank + rpop_rank), target),
            }
        )
ranks = pd.DataFrame(rows)
print(f"{len(ranks)} user-nights")
rng = np.random.default_rng(42)
for order in ranks.columns:
    values = ranks[order].map(ndcg10)
    line = f"{order}: NDCG@10 {values.mean():.4f} HR@1 {(ranks[order] == 1).mean():.4f}"
    if order != "knn":
        diff = (values - ranks["knn"].map(ndcg10)).to_numpy()
        means = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(1000)]
        low, high = np.percentile(means, [2.5, 97.5])
        line += f"; − knn {diff.mean():+.4f} [{low:+.4f}, {high:+.4f}]"
    print(line)
