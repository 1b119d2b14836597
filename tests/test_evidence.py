"""Collaborative evidence: hand-checked values, no held-out row and no own target interaction leaks,
the blend/fusion ranker, and identical rows on the local engine and classic Spark."""

from __future__ import annotations

import html
import logging
import re
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import deltalake
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from instructrec_batch import contracts as C
from instructrec_batch.config import EvidenceConfig
from instructrec_batch.context import run_stage
from instructrec_batch.evidence.features import (
    NEAR,
    candidate_evidence,
    evidence_interactions,
    nearest_items,
    user_sequences,
)
from instructrec_batch.evidence.sequential import SEQUENCE_FLOOR
from instructrec_batch.evidence.staged import staged_evidence
from instructrec_batch.ranking.ranker import LinearRanker, fit_ranker, quadratic, squared
from instructrec_batch.spark.tables import Staging
from tests.helpers import REPO, load_synthetic, run_cli, write_input, write_parquet_inputs

SCHEMA = "user_id BIGINT, item_id BIGINT, event_ts TIMESTAMP"
CAND_SCHEMA = "user_id BIGINT, item_id BIGINT"
ITEMS_SCHEMA = "item_id BIGINT, title STRING, category STRING"
T0 = datetime(2024, 1, 1)


def _rows(sequences: dict[int, list[int]]) -> pd.DataFrame:
    """One interaction per item, in list order (one minute apart)."""
    return pd.DataFrame(
        [(u, item, T0 + timedelta(minutes=j)) for u, items in sequences.items() for j, item in enumerate(items)],
        columns=["user_id", "item_id", "event_ts"],
    )


def _items(spark, categories: dict[int, str | None], titles: dict[int, str | None] | None = None):
    """An items table; without titles the text features read the categories alone."""
    frame = pd.DataFrame(list(categories.items()), columns=["item_id", "category"])
    frame.insert(1, "title", frame.item_id.map(titles or {}))
    return spark.createDataFrame(frame.astype(object).where(frame.notna(), None), ITEMS_SCHEMA)


def _evidence(
    spark,
    interactions: pd.DataFrame,
    candidates: list[tuple[int, int]],
    cfg: EvidenceConfig,
    holdout=None,
    categories: dict[int, str | None] | None = None,
):
    train = spark.createDataFrame(interactions, SCHEMA)
    held = None if holdout is None else spark.createDataFrame(holdout, SCHEMA + ", split STRING")
    cands = spark.createDataFrame(pd.DataFrame(candidates, columns=["user_id", "item_id"]), CAND_SCHEMA)
    items = None if categories is None else _items(spark, categories)
    frame = candidate_evidence(evidence_interactions(train, held), cands, cfg, items).toPandas()
    return frame.sort_values(["user_id", "item_id"]).set_index(["user_id", "item_id"])


def test_values_match_a_hand_computation(spark) -> None:
    # item 1 and 2 are neighbours in users 2 and 3; item 3 is 2 positions from 1 in user 2 only.
    seqs = {1: [5, 1], 2: [1, 2, 3], 3: [2, 1], 4: [9]}
    cfg = EvidenceConfig(window=1, history=5, max_items=10)
    ev = _evidence(spark, _rows(seqs), [(1, 2), (1, 3), (1, 9)], cfg)
    # n(1) = 3 (users 1, 2, 3), n(2) = 2 (users 2, 3), n(5) = n(3) = n(9) = 1.
    sim_2_1 = 2 / np.sqrt(2 * 3)  # users 2 and 3 hold 1 and 2 next to each other
    assert ev.loc[(1, 2), C.EV_POPULARITY] == pytest.approx(np.log1p(2))
    assert ev.loc[(1, 2), C.EV_COOC_SUM] == pytest.approx(sim_2_1)
    assert ev.loc[(1, 2), C.EV_COOC_MAX] == pytest.approx(sim_2_1)
    assert ev.loc[(1, 2), C.EV_COOC_SHARE] == pytest.approx(0.5)  # 1 of the user's 2 history items
    assert ev.loc[(1, 2), C.EV_RECENT_SIM] == pytest.approx(sim_2_1 / 1)  # item 1 is the newest
    assert ev.loc[(1, 3), C.EV_COOC_SUM] == 0.0  # 3 and 1 are two positions apart: outside window 1
    assert ev.loc[(1, 9), C.EV_POPULARITY] == pytest.approx(np.log1p(1))
    assert (ev[C.EV_RETRIEVAL] == 0).all()  # no retrieval_rank column
    # The words of v3: item counts are 3, 2, 1, 1, 1 (items 1, 2, 3, 5, 9); exact percentiles put the
    # top-1% cut at 2.96, top-5% at 2.8, top-20% at 2.2 and top-50% at 1.
    assert ev.loc[(1, 2), C.EV_POPULARITY_TOP] == 50 and ev.loc[(1, 9), C.EV_POPULARITY_TOP] == 50
    assert ev.loc[(1, 2), C.EV_LINKED] == 1 and ev.loc[(1, 3), C.EV_LINKED] == 0
    top = _evidence(spark, _rows(seqs), [(4, 1)], cfg)  # user 4 does not hold item 1: n(1) = 3
    assert top.loc[(4, 1), C.EV_POPULARITY_TOP] == 1


def test_nearest_items_rank_by_cosine_co_occurrence(spark) -> None:
    # window 1: co(1,2) = 2 (users 1, 2), co(2,3) = 1, co(3,4) = 1; n(1) = n(2) = n(3) = 2, n(4) = 1.
    # cosine: sim(1,2) = 2/2 = 1, sim(2,3) = 1/2, sim(3,4) = 1/sqrt(2): raw counts would rank 4 and 2
    # equally for item 3; the cosine puts 4 (held by one user, always next to 3) first.
    sequences = user_sequences(spark.createDataFrame(_rows({1: [1, 2, 3], 2: [1, 2], 3: [3, 4]}), SCHEMA), 10)

    def near(top: int) -> dict[int, list[int]]:
        rows = nearest_items(sequences, 1, top).toPandas()
        return {int(item): [int(i) for i in near] for item, near in zip(rows[C.ITEM_ID], rows[NEAR], strict=True)}

    assert near(1) == {1: [2], 2: [1], 3: [4], 4: [3]}
    assert near(2) == {1: [2], 2: [1, 3], 3: [2, 4], 4: [3]}  # id-sorted, whatever the rank


def test_held_out_rows_never_feed_evidence(spark) -> None:
    seqs = {1: [1, 2, 3, 4], 2: [1, 2, 5, 4], 3: [2, 4, 1, 3], 4: [4, 3, 2, 6]}
    inter = _rows(seqs)
    # Users 2 and 3 hold out their last two rows: item 4 next to 5 and item 3 next to 1.
    held = inter.groupby("user_id").tail(2)
    held = held[held.user_id.isin([2, 3])].assign(
        split=lambda f: np.where(f.groupby("user_id").cumcount() == 1, "test", "valid")
    )
    cands = [(u, i) for u in seqs for i in range(1, 7)]
    cfg = EvidenceConfig(window=2, history=4, max_items=10)
    # Item 5 (held out by user 2) is the only "Rare" item in user 2's history; item 6 is "Rare" too.
    cats = {1: "Drama", 2: "Drama, Comedy", 3: "Comedy", 4: "Action|Drama", 5: "Rare", 6: "Rare"}
    with_holdout = _evidence(spark, inter, cands, cfg, holdout=held, categories=cats)
    rows_removed = _evidence(spark, inter.drop(held.index), cands, cfg, categories=cats)
    pd.testing.assert_frame_equal(with_holdout, rows_removed)
    assert with_holdout[C.EV_CATEGORY_MEAN].gt(0).mean() >= 0.4  # the category columns are compared too
    assert with_holdout[C.EV_TEXT_MEAN].gt(0).mean() >= 0.4  # and the text similarities
    # what the features would be if held-out rows counted
    leaky = _evidence(spark, inter, cands, cfg, categories=cats)
    assert not leaky.equals(with_holdout)
    assert leaky.loc[(2, 6), C.EV_CATEGORY_MAX] > 0 and with_holdout.loc[(2, 6), C.EV_CATEGORY_MAX] == 0.0
    assert leaky.loc[(2, 6), C.EV_TEXT_MEAN] > 0 and with_holdout.loc[(2, 6), C.EV_TEXT_MEAN] == 0.0
    # Item 5 was only ever held out (user 2's): neither its all-time nor its recent count may see it.
    assert leaky.loc[(1, 5), C.EV_POPULARITY_RECENT] > 0 and with_holdout.loc[(1, 5), C.EV_POPULARITY_RECENT] == 0.0


def test_own_target_interaction_never_counts(spark) -> None:
    """A training example's target (the user's newest item) gets the evidence it would have unseen."""
    seqs = {1: [1, 2, 3, 7], 2: [1, 2, 7, 3], 3: [2, 7, 1], 4: [3, 1, 2]}
    inter = _rows(seqs)
    cfg = EvidenceConfig(window=2, history=3, max_items=10)
    target = (1, 7)  # user 1's newest item
    cats = {1: "B", 2: "A", 3: "C", 7: "A; B"}
    seen = _evidence(spark, inter, [target], cfg, categories=cats)
    unseen = _evidence(spark, inter[~((inter.user_id == 1) & (inter.item_id == 7))], [target], cfg, categories=cats)
    pd.testing.assert_frame_equal(seen, unseen)
    # The check can fail: counting user 1's own pairs raises popularity and co-occurrence, and counting
    # item 7 in its own history would give A 2/4 and B 2/4 instead of 1/3 each, and a text cosine of 1
    # with itself. Words (the categories here): a and b are in 2 of the 4 items, so item 7's weights are
    # 1/sqrt(2) each: cosine 1/sqrt(2) with items 1 (b) and 2 (a), 0 with item 3 (c).
    assert seen.loc[target, C.EV_POPULARITY] == pytest.approx(np.log1p(2))  # users 2 and 3, not 1
    assert seen.loc[target, C.EV_POPULARITY_RECENT] == pytest.approx(np.log1p(2))  # all recent here: not 1 either
    assert seen.loc[target, C.EV_COOC_SUM] > 0
    assert seen.loc[target, C.EV_CATEGORY_MEAN] == pytest.approx(1 / 3)
    assert seen.loc[target, C.EV_CATEGORY_MAX] == pytest.approx(1 / 3)
    history = {3: 0.0, 2: 1 / np.sqrt(2), 1: 1 / np.sqrt(2)}  # newest first, before item 7
    assert seen.loc[target, C.EV_TEXT_MEAN] == pytest.approx(sum(history.values()) / 3)
    assert seen.loc[target, C.EV_TEXT_RECENT] == pytest.approx(sum(c / k for k, c in enumerate(history.values(), 1)))


def test_text_similarity_reads_the_configured_columns_only(spark) -> None:
    """evidence.text_columns picks the words: [] turns the text similarity off, the rest stays."""
    inter = _rows({1: [1, 2, 3], 2: [3, 4]})
    cats = {1: "Drama", 2: "Comedy", 3: "Drama", 4: "Comedy"}
    full = EvidenceConfig(window=2, history=3, max_items=10)
    on = _evidence(spark, inter, [(1, 4)], full, categories=cats)
    off = _evidence(spark, inter, [(1, 4)], full.model_copy(update={"text_columns": []}), categories=cats)
    titled = full.model_copy(update={"text_columns": ["title"]})
    titles_only = _evidence(spark, inter, [(1, 4)], titled, categories=cats)
    assert on.loc[(1, 4), C.EV_TEXT_MEAN] == pytest.approx(1 / 3)  # "comedy" as item 2's, of history 3, 2, 1
    assert on.loc[(1, 4), C.EV_TEXT_RECENT] == pytest.approx(1 / 2)  # item 2 is the second newest
    assert off.loc[(1, 4), C.EV_TEXT_MEAN] == 0.0 and off.loc[(1, 4), C.EV_TEXT_RECENT] == 0.0
    assert titles_only.loc[(1, 4), C.EV_TEXT_MEAN] == 0.0  # the items have no titles
    others = [c for c in C.EVIDENCE_COLUMNS if c not in (C.EV_TEXT_MEAN, C.EV_TEXT_RECENT)]
    pd.testing.assert_frame_equal(on[others], off[others])


def test_an_example_negatives_share_the_history_before_its_target(spark) -> None:
    """An older training target: its negatives are compared with the items before it, not with later ones."""
    seqs = {1: [1, 2, 3, 4], 2: [2, 3, 9], 3: [4, 9]}
    cfg = EvidenceConfig(window=1, history=1, max_items=10)
    train = spark.createDataFrame(_rows(seqs), SCHEMA)
    rows = pd.DataFrame({"user_id": [1, 1], "item_id": [3, 9], "as_of_item_id": [3, 3]})
    cands = spark.createDataFrame(rows, CAND_SCHEMA + ", as_of_item_id BIGINT")
    ev = candidate_evidence(evidence_interactions(train, None), cands, cfg, None).toPandas().set_index("item_id")
    # The history before item 3 is item 2. 3 sits next to 2 for user 2 (user 1's own pair is left out);
    # 9 never sits next to 2, though it does next to 4 (user 3), the user's newest item, after the target.
    assert ev.loc[3, C.EV_COOC_SUM] == pytest.approx(1 / np.sqrt(1 * 2))  # n(3) = 2 - own, n(2) = 2
    assert ev.loc[9, C.EV_COOC_SUM] == 0.0
    latest = _evidence(spark, _rows(seqs), [(1, 9)], cfg)  # without as_of: compared with item 4
    assert latest.loc[(1, 9), C.EV_COOC_SUM] > 0


def test_heavy_users_are_capped(spark) -> None:
    seqs = {1: list(range(1, 301)), 2: [299, 300]}
    cfg = EvidenceConfig(window=1, history=2, max_items=50)
    ev = _evidence(spark, _rows(seqs), [(2, 1), (2, 260)], cfg)
    assert ev.loc[(2, 1), C.EV_POPULARITY] == 0.0  # item 1 is outside user 1's newest 50 (251..300)
    assert ev.loc[(2, 260), C.EV_POPULARITY] == pytest.approx(np.log1p(1))


def test_item_hash_slices_give_exactly_the_unsliced_evidence(spark, cfg, caplog) -> None:
    """Sliced counting (what bounds memory at scale) must not change a single value."""
    rng = np.random.default_rng(3)
    seqs = {u: list(rng.choice(40, size=12, replace=False)) for u in range(30)}
    candidates = pd.DataFrame(
        [(u, int(i), int(r)) for u in range(30) for r, i in enumerate(rng.choice(40, size=6, replace=False), 1)],
        columns=["user_id", "item_id", C.RETRIEVAL_RANK],
    )
    train = spark.createDataFrame(_rows(seqs), SCHEMA)
    cands = spark.createDataFrame(candidates, CAND_SCHEMA + f", {C.RETRIEVAL_RANK} INT")
    sliced_cfg = cfg.model_copy(
        update={"evidence": EvidenceConfig(window=3, history=5, max_items=50, pairs_per_slice=200)}
    )
    items = _items(spark, {i: ["Drama", "Comedy, Drama", None][i % 3] for i in range(40)})
    whole = candidate_evidence(train, cands, sliced_cfg.evidence, items).toPandas()
    with (
        caplog.at_level(logging.INFO, "instructrec_batch.evidence.staged"),
        Staging(sliced_cfg.catalog, "t") as staging,
    ):
        sliced = staged_evidence(spark, sliced_cfg.evidence, train, cands, items, staging, "ev").toPandas()
    # 30 users x 12 items x window 3 = 1080 windowed pairs at 200 per slice: 6 slices.
    assert any("slice 6/6" in message for message in caplog.messages)
    keys = ["user_id", "item_id"]
    assert len(sliced) == len(whole) == 180
    pd.testing.assert_frame_equal(
        sliced.sort_values(keys).reset_index(drop=True), whole.sort_values(keys).reset_index(drop=True)
    )
    assert (whole[C.EV_COOC_SUM] > 0).mean() > 0.5  # the comparison covers real co-occurrence


def _word_weights(texts: dict[int, str]) -> dict[int, dict[str, float]]:
    """Each item's IDF weights of its distinct words, scaled to unit length (words in every item dropped)."""
    words = {i: set(re.findall(r"[^\W_]+", t.lower())) for i, t in texts.items()}
    words = {i: w for i, w in words.items() if w}
    counts = Counter(w for ws in words.values() for w in ws)
    out = {}
    for i, ws in words.items():
        idf = {w: np.log(len(words) / counts[w]) for w in ws if counts[w] < len(words)}
        norm = np.sqrt(sum(v * v for v in idf.values()))
        out[i] = {w: v / norm for w, v in idf.items()} if norm > 0 else {}
    return out


def _reference(
    interactions: pd.DataFrame,
    candidates: pd.DataFrame,
    cfg: EvidenceConfig,
    categories: dict[int, set[str]],
    weights: dict[int, dict[str, float]],
) -> pd.DataFrame:
    """The evidence definitions of evidence/features.py, written out in plain Python, row by row."""
    latest = interactions.groupby(["user_id", "item_id"], as_index=False).event_ts.max()
    latest = latest.sort_values(["user_id", "event_ts", "item_id"], ascending=[True, False, False])
    seqs = {u: list(g.item_id)[: cfg.max_items] for u, g in latest.groupby("user_id")}
    count: dict[int, int] = {}
    co: dict[tuple[int, int], int] = {}
    for seq in seqs.values():
        for i, a in enumerate(seq):
            count[a] = count.get(a, 0) + 1
            for b in seq[max(0, i - cfg.window) : i] + seq[i + 1 : i + 1 + cfg.window]:
                co[(a, b)] = co.get((a, b), 0) + 1
    cuts = {p: np.percentile(list(count.values()), 100 - p) for p in (1, 5, 20, 50)}
    since = interactions.event_ts.max() - timedelta(days=cfg.recent_days)
    recent = interactions[interactions.event_ts >= since].drop_duplicates(["user_id", "item_id"])
    recent_users = {i: set(g.user_id) for i, g in recent.groupby("item_id")}
    out = []
    for row in candidates.drop_duplicates(["user_id", "item_id", "as_of_item_id"]).itertuples():
        seq, c = seqs.get(row.user_id, []), row.item_id
        own = seq.index(c) + 1 if c in seq else None
        start = seq.index(row.as_of_item_id) + 1 if row.as_of_item_id in seq else (own or 0)
        n_c = count.get(c, 0) - (own is not None)
        sims = []
        hist = [(h, age) for age, h in enumerate(seq[start : start + cfg.history], start=1)]
        for h, age in hist:
            own_pair = own is not None and abs(start + age - own) <= cfg.window
            pair = max(co.get((c, h), 0) - own_pair, 0)
            sims.append((pair / np.sqrt(max(n_c, 1) * max(count[h], 1)), age))
        linked = sum(sim > 0 for sim, _ in sims)
        word = weights.get(c, {})
        cosines = [sum(v * weights.get(h, {}).get(w, 0.0) for w, v in word.items()) for h, _ in hist]
        older = seq[start:]  # the whole capped history before the as_of item or the candidate
        shares = [
            sum(k in categories.get(h, set()) for h in older) / len(older) if older else 0.0
            for k in categories.get(c, set())
        ]
        ranks = candidates[(candidates.user_id == row.user_id) & (candidates.item_id == c)].retrieval_rank.dropna()
        top = min([p for p, cut in cuts.items() if n_c > 0 and n_c >= cut], default=100)
        out.append(
            {
                "user_id": row.user_id,
                "item_id": c,
                "as_of_item_id": row.as_of_item_id,
                C.EV_POPULARITY: np.log1p(n_c),
                C.EV_POPULARITY_RECENT: np.log1p(len(recent_users.get(c, set()) - {row.user_id})),
                C.EV_COOC_SUM: sum(sim for sim, _ in sims),
                C.EV_COOC_MAX: max((sim for sim, _ in sims), default=0.0),
                C.EV_COOC_SHARE: linked / len(sims) if sims else 0.0,
                C.EV_RECENT_SIM: sum(sim / age for sim, age in sims),
                C.EV_RETRIEVAL: 1 / ranks.min() if len(ranks) else 0.0,
                C.EV_CATEGORY_MEAN: float(np.mean(shares)) if shares else 0.0,
                C.EV_CATEGORY_MAX: max(shares, default=0.0),
                C.EV_TEXT_MEAN: float(np.mean(cosines)) if cosines else 0.0,
                C.EV_TEXT_RECENT: sum(cos / age for cos, (_, age) in zip(cosines, hist, strict=True)),
                C.EV_SEQUENCE: SEQUENCE_FLOOR,  # no sequential model given (tests/test_sequential_evidence.py)
                C.EV_REQUEST_WORDS: 0.0,  # no requests given (tests/test_requests.py)
                C.EV_REQUEST_MEANING: 0.0,
                C.EV_POPULARITY_TOP: top,
                C.EV_LINKED: linked,
            }
        )
    return pd.DataFrame(out)


def test_evidence_equals_a_plain_python_reference_on_awkward_data(spark, cfg) -> None:
    """Timestamp ties, capped heavy users, users without history, candidates the user holds, as_of
    items inside and outside the sequence or no as_of at all, duplicate candidate rows (the best rank
    counts), categories as lists, paths and list literals, HTML references in titles and categories:
    the Spark evidence, whole and in item-hash slices, equals the definitions computed row by row."""
    rng = np.random.default_rng(11)
    rows = [
        (u, int(i), T0 + timedelta(days=int(rng.integers(0, 8))))  # few distinct times: many ties
        for u in range(1, 26)
        for i in rng.choice(30, size=int(rng.integers(1, 16)), replace=True)  # repeats: latest time counts
    ]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "event_ts"])
    cands = []
    for u in range(1, 29):  # users 26-28 have no history
        held = inter[inter.user_id == u].item_id.tolist()
        for i in rng.choice(30, size=6, replace=False):
            as_of = int(rng.choice(held)) if held and rng.random() < 0.5 else 99  # 99: in no sequence
            rank = int(rng.integers(1, 50)) if rng.random() < 0.7 else None
            cands.append((u, int(i), as_of, rank))
            if rng.random() < 0.2:
                cands.append((u, int(i), as_of, None))  # a duplicate row without a rank
            elif rank is not None and rng.random() < 0.2:
                cands.append((u, int(i), as_of, rank + 3))  # a duplicate row ranked lower: the best rank counts
    candidates = pd.DataFrame(cands, columns=["user_id", "item_id", "as_of_item_id", C.RETRIEVAL_RANK])
    candidates = candidates.astype({C.RETRIEVAL_RANK: "Int64"})
    # Categories with separators, blanks, repeats and gaps; some items have none.
    # Taxonomy paths and lists written out as text count their parts, without brackets and quotes;
    # HTML references are decoded first (the ";" of "&amp;" splits nothing).
    kinds = [None, "Drama", " Comedy ;Drama", "Action|Drama|Action", "", "Horror, Comedy", "Film > Drama > Noir"]
    raw = {i: [*kinds, '["Comedy", "Noir"]', "['Horror']", "Toys &amp; Games > Drama"][i % 10] for i in range(30)}
    categories = {
        i: {k.strip(" []\"'") for k in re.split(r"[,;|>]", html.unescape(v)) if k.strip(" []\"'")}
        for i, v in raw.items()
        if v
    }
    # Titles with case, punctuation, accents, HTML references and repeated words; items 0, 5, 10, ... have none.
    names = ["Star Wars: Episode IV", "star TREK (1979)", "Am&eacute;lie, Amélie", "Men&#39;s Heat", "Up; the Sequel"]
    titles = {i: f"{names[i % 5]} {i % 7}" for i in range(30) if i % 5}
    weights = _word_weights({i: html.unescape(f"{titles.get(i, '')} {raw[i] or ''}") for i in range(30)})
    items = _items(spark, raw, titles)
    ev_cfg = EvidenceConfig(window=2, history=4, max_items=9, pairs_per_slice=40, recent_days=3)
    sliced_cfg = cfg.model_copy(update={"evidence": ev_cfg})
    train = spark.createDataFrame(inter, SCHEMA)
    for as_of in (True, False):  # training examples carry as_of_item_id; scoring candidates do not
        listed = candidates if as_of else candidates.drop(columns="as_of_item_id")
        expected = _reference(
            inter, listed.assign(as_of_item_id=listed.get("as_of_item_id")), ev_cfg, categories, weights
        )
        assert expected[C.EV_COOC_SUM].gt(0).mean() > 0.3 and (expected[C.EV_POPULARITY_TOP] < 100).any()
        assert expected[C.EV_CATEGORY_MEAN].gt(0).mean() > 0.3
        assert (expected[C.EV_CATEGORY_MAX] > expected[C.EV_CATEGORY_MEAN]).any()
        assert expected[C.EV_TEXT_MEAN].gt(0).mean() > 0.3 and (expected[C.EV_TEXT_RECENT] > 0).any()
        recent, popular = expected[C.EV_POPULARITY_RECENT], expected[C.EV_POPULARITY]
        assert recent.gt(0).mean() > 0.3 and (recent < popular).mean() > 0.3  # the window leaves users out
        schema = CAND_SCHEMA + (", as_of_item_id BIGINT" if as_of else "") + f", {C.RETRIEVAL_RANK} INT"
        spark_cands = spark.createDataFrame(listed.astype(object).where(listed.notna(), None), schema)
        whole = candidate_evidence(train, spark_cands, ev_cfg, items).toPandas()
        with Staging(sliced_cfg.catalog, "ref") as staging:
            sliced = staged_evidence(spark, sliced_cfg.evidence, train, spark_cands, items, staging, "ev").toPandas()
        keys = ["user_id", "item_id", *(["as_of_item_id"] if as_of else [])]
        columns = [*keys, *C.EVIDENCE_COLUMNS, *C.EVIDENCE_NOTE_COLUMNS]

        def ordered(frame: pd.DataFrame, columns: list[str] = columns, keys: list[str] = keys) -> pd.DataFrame:
            return frame[columns].astype("float64").sort_values(keys).reset_index(drop=True)

        pd.testing.assert_frame_equal(ordered(whole), ordered(expected), atol=1e-9)
        pd.testing.assert_frame_equal(ordered(sliced), ordered(expected), atol=1e-9)


def test_ranker_learns_the_useful_feature_and_round_trips() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(200), 10)
    useful = rng.normal(size=len(groups))
    noise = rng.normal(size=len(groups))
    positive = np.zeros(len(groups), dtype=bool)
    for g in range(200):  # the positive is the row with the highest `useful` value, most of the time
        rows = np.flatnonzero(groups == g)
        positive[rows[np.argmax(useful[rows] + 0.3 * rng.normal(size=10))]] = True
    frame = {"useful": useful, "noise": noise, "constant": np.ones(len(groups))}
    ranker = fit_ranker(frame, ["useful", "noise", "constant"], groups, positive)
    weights = dict(zip(ranker.features, ranker.weights, strict=True))
    assert weights["useful"] > 5 * abs(weights["noise"]) and weights["constant"] == 0.0
    again = LinearRanker.from_dict(ranker.to_dict(), "test")
    np.testing.assert_allclose(again.apply(frame), ranker.apply(frame))


def test_quadratic_ranker_follows_an_effect_a_line_cannot() -> None:
    # The target is the candidate whose x is nearest 0: no weight on x alone orders that, its square does.
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(300), 10)
    x = rng.normal(size=len(groups))
    positive = np.zeros(len(groups), dtype=bool)
    for g in range(300):
        rows = np.flatnonzero(groups == g)
        positive[rows[np.argmin(np.abs(x[rows]))]] = True
    frame = {"x": x}

    def hits(ranker: LinearRanker) -> float:
        scores = pd.Series(ranker.apply(frame))
        top = scores.groupby(groups).idxmax().to_numpy()
        return float(positive[top].mean())

    line = fit_ranker(frame, ["x"], groups, positive)
    curve = fit_ranker(frame, quadratic(["x"]), groups, positive)
    assert curve.features == ("x", squared("x")) and curve.weight(squared("x")) < 0
    assert hits(curve) > 0.95 and hits(line) < 0.3
    again = LinearRanker.from_dict(curve.to_dict(), "test")
    np.testing.assert_allclose(again.apply(frame), curve.apply(frame))


def test_ranker_column_equals_numpy(spark) -> None:
    ranker = LinearRanker(("a", "b", squared("a")), (1.0, -2.0, 3.0), (2.0, 0.5, 1.5), (0.7, -1.3, 0.4))
    frame = pd.DataFrame({"a": [0.0, 1.5, -3.0], "b": [2.0, -1.0, 0.25]})
    out = spark.createDataFrame(frame).select(ranker.column().alias("s")).toPandas()["s"].to_numpy()
    np.testing.assert_allclose(out, ranker.apply(frame))


@pytest.mark.classic
def test_evidence_identical_on_local_engine_and_classic_spark(spark, tiny_cfg, tmp_path: Path) -> None:
    """The protocol and the evidence jobs on the embedded Sail engine (Delta) and on classic local Spark
    (Parquet): the same split, lists and evidence."""
    from instructrec_batch.stages.evidence import evidence_job

    inter, items = load_synthetic(spark, tiny_cfg, n_users=20, n_items=80, per_user=10)
    items = items.assign(
        title=[
            f"{['Star Wars', 'STAR trek: Am&eacute;lie', 'Heat (1995)', 'Men&#39;s'][i % 4]} {i % 5}"
            for i in items.item_id
        ],
        category=[
            ["Drama", "Comedy, Drama", None, "Film > Action|Comedy", "['Toys &amp; Games']"][i % 5]
            for i in items.item_id
        ],
    )
    write_input(spark, tiny_cfg, "items", items, "item_id BIGINT, title STRING, category STRING")
    run_stage(evidence_job, spark, tiny_cfg)
    classic_root = tmp_path / "classic" / "tables"
    write_parquet_inputs(classic_root, {"interactions": inter, "items": items})
    classic = ["--config", str(REPO / "conf" / "local-classic.yaml"), "--workdir", str(tmp_path / "classic")]
    options = ["--set", "engine.master=local[1]", "--set", f"model.base={tiny_cfg.model.base}"]
    options += ["--set", f"sasrec.min_steps={tiny_cfg.sasrec.min_steps}"]  # as the local run
    for command in (["data", "protocol"], ["evidence"]):
        proc = run_cli([*command, *classic, *options], timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    # The protocol's tables first: the same split and the same lists, in the same order, on both engines.
    for table, order in {"holdout": ["user_id", "split"], "candidates": ["user_id", "retrieval_rank"]}.items():
        here = deltalake.DeltaTable(str(Path(tiny_cfg.tables_root) / table)).to_pandas()
        there = pq.read_table(classic_root / table).to_pandas()
        here, there = (f.sort_values(order).reset_index(drop=True) for f in (here, there[here.columns]))
        if "event_ts" in here:
            for frame in (here, there):
                frame["event_ts"] = frame["event_ts"].dt.tz_localize(None).astype("datetime64[us]")
        assert len(here) > 0
        pd.testing.assert_frame_equal(here, there, check_dtype=False)
    keys = ["user_id", "item_id"]
    local = deltalake.DeltaTable(str(Path(tiny_cfg.tables_root) / "candidate_evidence")).to_pandas()
    other = pq.read_table(classic_root / "candidate_evidence").to_pandas()
    columns = [*keys, *C.EVIDENCE_COLUMNS]
    local = local[columns].sort_values(keys).reset_index(drop=True)
    other = other[columns].sort_values(keys).reset_index(drop=True)
    assert len(local) == 20 * 20 and local[C.EV_COOC_SUM].gt(0).any() and local[C.EV_CATEGORY_MEAN].gt(0).any()
    assert local[C.EV_TEXT_MEAN].gt(0).any()
    # the sequential model is trained on each engine's rows: the same rows and seed give the same model,
    # up to float32 arithmetic in its vectors
    assert local[C.EV_SEQUENCE].gt(SEQUENCE_FLOOR).all()
    np.testing.assert_allclose(local.pop(C.EV_SEQUENCE), other.pop(C.EV_SEQUENCE), atol=1e-4)
    pd.testing.assert_frame_equal(local, other, check_dtype=False, atol=1e-12)


def test_two_stage_head_collapses_to_one_linear_head_with_the_same_ranking() -> None:
    from instructrec_batch.ranking.fusion import BLEND, collapse

    rng = np.random.default_rng(2)
    frame = pd.DataFrame({c: rng.normal(size=50) for c in (C.LM_SCORE, *C.EVIDENCE_COLUMNS)})
    n = len(C.EVIDENCE_COLUMNS)
    blend = LinearRanker(
        C.EVIDENCE_COLUMNS, tuple(rng.normal(size=n)), tuple(rng.random(n) + 0.5), tuple(rng.normal(size=n))
    )
    frame[BLEND] = blend.apply(frame)
    stack = LinearRanker((C.LM_SCORE, BLEND), (0.3, -0.2), (1.7, 2.5), (0.8, 1.4))
    head = collapse(stack, blend)
    difference = head.apply(frame) - stack.apply(frame)
    np.testing.assert_allclose(difference, difference[0], atol=1e-9)  # a constant shift: same order


def _fusion_lists(lm_weight: float, users: int = 120, seed: int = 4) -> pd.DataFrame:
    """Lists of 10 with one positive: evidence that ranks it well, and a model score that carries
    lm_weight of an independent signal about it (0: noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        hidden = rng.normal(size=10)  # what decides the positive besides the evidence
        evidence, popularity = rng.normal(size=10), rng.normal(size=10)  # popularity tells nothing here
        best = int(np.argmax(evidence + hidden))
        for i in range(10):
            lm = lm_weight * hidden[i] + rng.normal()
            values = {C.EV_COOC_SUM: evidence[i], C.EV_POPULARITY: popularity[i]}
            rows.append((u, i, lm, *(values.get(c, 0.0) for c in C.EVIDENCE_COLUMNS), i == best))
    return pd.DataFrame(rows, columns=[C.USER_ID, C.ITEM_ID, C.LM_SCORE, *C.EVIDENCE_COLUMNS, "positive"])


def test_fusion_head_keeps_a_score_that_adds_and_drops_one_that_does_not() -> None:
    """A model score that carries what the evidence lacks gets weight; pure noise gets none, and the
    head then ranks exactly as the blend it is built on does."""
    from instructrec_batch.ranking.fusion import stack_head

    blend = LinearRanker((C.EV_COOC_SUM,), (0.0,), (1.0,), (1.0,))
    lists = _fusion_lists(3.0)
    useful, useful_figures = stack_head(lists, blend.apply(lists), blend, seed=42)
    assert useful_figures["model_kept"] and useful_figures["fusion_gain"] > 0.05
    assert useful.weights[0] > 0.5 and useful_figures["fusion_mrr_head"] > useful_figures["fusion_mrr_evidence"]
    noise = _fusion_lists(0.0)
    final = LinearRanker((C.EV_COOC_SUM, C.EV_POPULARITY), (0.0, 0.0), (1.0, 1.0), (1.0, 0.3))  # fitted on all users
    head, figures = stack_head(noise, blend.apply(noise), final, seed=42)
    assert not figures["model_kept"] and figures["fusion_gain"] <= figures["fusion_gain_se"]
    assert figures["weight_model"] == 0.0
    assert head.weights[0] == 0.0
    lists = noise.assign(h=head.apply(noise), f=final.apply(noise), b=blend.apply(noise)).groupby(C.USER_ID)
    assert all(g.h.rank().eq(g.f.rank()).all() for _, g in lists)  # the order of the blend it is built on
    assert not all(g.h.rank().eq(g.b.rank()).all() for _, g in lists)  # not the held-out blend's
    assert figures["fusion_mrr_head"] == figures["fusion_mrr_evidence"]


def test_cross_fitted_blend_scores_never_see_their_own_users_labels() -> None:
    """Each user's rows are scored by a blend fitted without that user: moving the target of one user's
    list leaves that user's scores as they were and changes the others' (their blends saw it), even
    when the scored users are all the users there are."""
    from instructrec_batch.ranking.blend import cross_fitted, fit_blend

    lists = _fusion_lists(0.0, users=40)
    before = cross_fitted(lists, lists, seed=3)
    moved = lists.copy()
    own = (moved[C.USER_ID] == 7).to_numpy()
    moved.loc[own, "positive"] = moved.loc[own, "positive"].to_numpy()[::-1]  # another candidate is the target
    after = cross_fitted(moved, moved, seed=3)
    np.testing.assert_array_equal(after[own], before[own])
    assert not np.allclose(after[~own], before[~own])
    assert not np.allclose(before[own], fit_blend(lists).apply(lists[own]))  # not the blend fitted on everyone


def test_cross_fitting_keeps_every_list_of_a_user_out_of_the_blend_that_scores_them() -> None:
    """A user's lists at other moments (keyed "<j>:<user>", OWNER the user) may hold the very target of
    their scored list: moving the target of user 7's other list leaves user 7's scores as they were."""
    from instructrec_batch.ranking.blend import OWNER, cross_fitted

    scored = _fusion_lists(0.0, users=40)
    scored = scored.assign(**{C.USER_ID: scored[C.USER_ID].astype(str)})
    other = scored.assign(**{C.USER_ID: "1:" + scored[C.USER_ID]})  # each user's list at an earlier moment
    lists = pd.concat([scored.assign(**{OWNER: scored[C.USER_ID]}), other.assign(**{OWNER: scored[C.USER_ID]})])
    before = cross_fitted(lists, scored, seed=3)
    moved = lists.copy()
    theirs = (moved[C.USER_ID] == "1:7").to_numpy()
    moved.loc[theirs, "positive"] = moved.loc[theirs, "positive"].to_numpy()[::-1]
    own = (scored[C.USER_ID] == "7").to_numpy()
    np.testing.assert_array_equal(cross_fitted(moved, scored, seed=3)[own], before[own])
    # Without OWNER the other list is nobody's scored user: every fold's blend sees it, user 7's too.
    unowned = [cross_fitted(frame.drop(columns=OWNER), scored, seed=3)[own] for frame in (lists, moved)]
    assert not np.allclose(*unowned)


def test_an_evidence_table_from_an_older_version_is_refused_before_writing(spark, tiny_cfg) -> None:
    """A Delta table's columns cannot change in a run: a candidate_evidence table written without the
    text columns is refused with what to do, and left as it was."""
    from deltalake import write_deltalake

    from instructrec_batch.errors import ContractError
    from instructrec_batch.stages.evidence import evidence_job

    load_synthetic(spark, tiny_cfg, n_users=6, n_items=30, per_user=6)
    old = [c for c in C.EVIDENCE_COLUMNS if c not in (C.EV_TEXT_MEAN, C.EV_TEXT_RECENT)]
    frame = pd.DataFrame({"run_id": ["old"], "user_id": [1], "item_id": [2], **{c: [0.5] for c in old}})
    frame = frame.assign(**{c: np.array([1], dtype="int32") for c in C.EVIDENCE_NOTE_COLUMNS})
    path = str(Path(tiny_cfg.tables_root) / "candidate_evidence")
    write_deltalake(path, frame)
    with pytest.raises(ContractError, match=r"ev_text_mean, ev_text_recent .*move it aside"):
        run_stage(evidence_job, spark, tiny_cfg)
    table = deltalake.DeltaTable(path)
    assert table.version() == 0 and table.to_pandas()["run_id"].tolist() == ["old"]
