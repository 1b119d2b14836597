"""The evidence blend: its terms, its fit, and how a candidate without evidence is filled.

The blend is a linear listwise ranker (`ranker.LinearRanker`) over BLEND_TERMS, fitted on labelled
lists (a validation item and sampled negatives per user). It is the strongest ranker that needs no
language model, the baseline the hybrid must beat, and the base the fusion head adds the model's score
to. Every ranker over evidence columns reads them through `fill_missing_evidence` (pandas) or
`with_evidence` (Spark), so a candidate the evidence job has no row for is ranked the same way
everywhere: as a candidate with no collaborative signal (every column 0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from instructrec_batch import contracts as C
from instructrec_batch.ranking.ranker import LinearRanker, fit_ranker, quadratic

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

POSITIVE = "positive"  # a labelled list's column: True on the list's one target
# A labelled list's optional column, where user_id keys one of several lists of one user (their lists at
# several moments): that user, so that cross-fitting deals all of a user's lists into one fold.
OWNER = "_owner"

# The blend's terms: each evidence column and its square. The square lets the blend bend a feature's
# effect where a straight line cannot follow it (the sequential score's floor for items its model never
# saw, co-occurrence that saturates); docs/experiments/30-blend-squares measured it.
BLEND_TERMS = quadratic(C.EVIDENCE_COLUMNS)

MISSING_EVIDENCE = 0.0  # the value of every evidence column of a candidate the evidence has no row for


def fill_missing_evidence(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with every evidence column's missing values (no evidence row joined) set to MISSING_EVIDENCE."""
    return frame.fillna({column: MISSING_EVIDENCE for column in C.EVIDENCE_COLUMNS if column in frame.columns})


def with_evidence(rows: DataFrame, evidence: DataFrame) -> DataFrame:
    """`rows` (user_id, item_id, ...) with their evidence columns, MISSING_EVIDENCE where `evidence` has no row."""
    joined = rows.join(evidence, [C.USER_ID, C.ITEM_ID], "left")
    return joined.fillna(MISSING_EVIDENCE, subset=list(C.EVIDENCE_COLUMNS))


def fit_blend(
    lists: pd.DataFrame, groups: np.ndarray | None = None, positive: np.ndarray | None = None
) -> LinearRanker:
    """The evidence blend over BLEND_TERMS, fitted on labelled lists: one row per candidate with the
    evidence columns, in a stable order (the fit follows row order). A list is a user's rows and its
    target the POSITIVE row, unless `groups` (a list id per row) and `positive` say otherwise."""
    lists = fill_missing_evidence(lists)
    groups = lists[C.USER_ID].to_numpy() if groups is None else groups
    positive = lists[POSITIVE].to_numpy() if positive is None else positive
    return fit_ranker(lists, BLEND_TERMS, groups, positive)


CROSS_FIT_FOLDS = 5  # folds of the scored users when each is ranked by a blend fitted without it


def cross_fitted(lists: pd.DataFrame, rows: pd.DataFrame, seed: int, folds: int = CROSS_FIT_FOLDS) -> np.ndarray:
    """An evidence blend's score for each of `rows`, from a blend fitted without that row's user.

    `lists` are the labelled lists a blend is fitted on (as `fit_blend` takes them) and `rows` hold
    the evidence columns of some users' candidates, which may be among those lists. The users of
    `rows` are dealt into `folds` seeded folds; a fold's rows are scored by a blend fitted on every
    list of `lists` outside the fold. So every row is scored out of sample (what a second stage
    stacked on the blend must see) by a blend fitted on nearly all the lists, however many of their
    users `rows` covers. A fold whose outside lists hold no target (a table of a few users) is scored
    by the blend fitted on every list. A user is their OWNER where a frame has that column: none of
    their lists then fits the blend that scores any of them.
    """
    rows = fill_missing_evidence(rows)
    users = np.sort(_owners(rows).unique())
    fold_of = dict(zip(users, np.random.default_rng(seed).permutation(len(users)) % folds, strict=True))
    row_fold = _owners(rows).map(fold_of).to_numpy()
    list_fold = _owners(lists).map(fold_of).fillna(-1).to_numpy()
    scores = np.zeros(len(rows))
    everyone: LinearRanker | None = None
    for fold in range(folds):
        if not (row_fold == fold).any():
            continue
        outside = lists[list_fold != fold]
        if outside[POSITIVE].any():
            blend = fit_blend(outside)
        else:
            everyone = everyone or fit_blend(lists)
            blend = everyone
        scores[row_fold == fold] = blend.apply(rows[row_fold == fold])
    return scores


def _owners(frame: pd.DataFrame) -> pd.Series:
    """The user each row's list belongs to: its OWNER, else its user_id."""
    return frame[OWNER] if OWNER in frame.columns else frame[C.USER_ID]
