"""Offline: the evidence blend refitted every EVERY nights against the retriever's order, on the nights of command.sh.

No model, no pipeline jobs: the library's own pieces. At a refit night the blend is fitted on item-kNN lists
replayed at the 9 weekly cut-offs before it (evidence/replay.earlier_lists: each from the interactions before
its cut-off, labels before the night), as a training with train.lists=retriever fits it. Each night's lists
are the item-kNN top-20 as of the night (evidence/replay.itemknn_lists), labelled by the first item chosen in
the 7 days after it (evidence/replay.labelled, which, unlike evaluate.night, also drops the user's other
chosen items from the list), with their evidence from the interactions before the night. Prints NDCG@10 of
both orders over the user-nights and the paired difference with a 95% bootstrap interval.

    PYTHONPATH=<tree> python refit.py INTERACTIONS_DELTA ITEMS_DELTA EVERY
    python refit.py /tmp/nights48/full/tables/interactions /tmp/nights48/full/tables/items 4
"""

import sys

import numpy as np
import pandas as pd
from pyspark.sql import functions as F

from instructrec_batch import contracts as C
from instructrec_batch.config import EngineConfig, EvidenceConfig
from instructrec_batch.evidence.lists import list_evidence
from instructrec_batch.evidence.replay import FROM, earlier_lists, itemknn_lists, labelled
from instructrec_batch.ranking.blend import POSITIVE, fit_blend
from instructrec_batch.ranking.metrics import Metric, metric_values
from instructrec_batch.spark.engine import spark_session

INTERACTIONS, ITEMS, EVERY = sys.argv[1], sys.argv[2], int(sys.argv[3])
ev = EvidenceConfig(sequential=False)
nights = pd.date_range("1998-01-08", periods=15, freq="7D", tz="UTC")
rows = []
with spark_session(EngineConfig(kind="local")) as spark:
    log = spark.read.format("delta").load(INTERACTIONS).select(C.USER_ID, C.ITEM_ID, C.EVENT_TS)
    catalogue = spark.read.format("delta").load(ITEMS).where(F.col(C.TITLE).isNotNull())
    blend = None
    for index, night in enumerate(nights):
        at = int(night.timestamp())
        if index % EVERY == 0:
            frames = []
            for j, (source, lists) in enumerate(earlier_lists(log, catalogue, at, ev, 20, 7, 9)):
                part = list_evidence(source, lists, ev, catalogue, None)
                frames.append(part.assign(**{C.USER_ID: f"{j}:" + part[C.USER_ID].astype(str)}))
            blend = fit_blend(pd.concat(frames, ignore_index=True))
        source = log.where(F.col(C.EVENT_TS).cast("long") < at)
        retrieved = itemknn_lists(source, source.select(C.USER_ID).distinct(), catalogue, ev, 20)
        judged = labelled(retrieved.drop(C.RETRIEVAL_SCORE).withColumn(FROM, F.lit(at).cast("long")), log, 7)
        frame = list_evidence(source, judged, ev, catalogue, None)
        frame["_blend"] = blend.apply(frame)
        for user, lists in frame.groupby(C.USER_ID):
            target = lists[POSITIVE].to_numpy(bool)
            ranks = [int(1 + (lists[c].to_numpy() > lists[c].to_numpy()[target][0]).sum()) for c in ("_blend", C.EV_RETRIEVAL)]
            rows.append((str(night.date()), user, *ranks))
        print(night.date(), len(rows), flush=True)
ranks = pd.DataFrame(rows, columns=["night", "user", "blend", "retriever"])
ndcg = Metric("NDCG", 10)
blend_v, retriever_v = (metric_values(ranks[c].to_numpy(), ndcg) for c in ("blend", "retriever"))
diff = blend_v - retriever_v
rng = np.random.default_rng(42)
means = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(1000)]
low, high = np.percentile(means, [2.5, 97.5])
print(f"{len(ranks)} user-nights: NDCG@10 blend {blend_v.mean():.4f}, retriever {retriever_v.mean():.4f}, "
      f"difference {diff.mean():+.4f} [{low:+.4f}, {high:+.4f}]")
