"""Training examples (leakage, identity with scoring prompts), the LoRA loop, adapter artifacts."""

import json
import math
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import deltalake
import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer

from instructrec_batch import contracts as C
from instructrec_batch.config import DEFAULT_TEMPLATE_VERSION as DEFAULT_VERSION
from instructrec_batch.config import Config
from instructrec_batch.context import run_stage
from instructrec_batch.errors import ArtifactError
from instructrec_batch.evidence.features import NEAR
from instructrec_batch.models.adapter import load_adapter, verify_adapter
from instructrec_batch.models.base import BaseModel, load_causal_lm, resolve_base
from instructrec_batch.models.forward import last_logits, pad_id_of
from instructrec_batch.prompts.render import context_of, render_pointwise
from instructrec_batch.prompts.templates import load_templates
from instructrec_batch.spark.tables import read_input
from instructrec_batch.stages.data import protocol_job
from instructrec_batch.stages.evidence import evidence_job
from instructrec_batch.stages.prompts import prompts_job
from instructrec_batch.stages.train import train_job
from instructrec_batch.training.examples import _sample_negatives, build_examples, collect_examples
from tests.helpers import INTERACTIONS_SCHEMA, ITEMS_SCHEMA, load_synthetic, write_input


def _configure(cfg: Config, **train: object) -> Config:
    return cfg.model_copy(
        update={
            "train": cfg.train.model_copy(
                update={
                    "max_steps": 30,
                    "batch_size": 8,
                    "eval_every": 10,
                    "lr": 5e-3,
                    "patience": 5,
                    "val_users": 30,
                    **train,
                }
            ),
            "prompt": cfg.prompt.model_copy(update={"max_history": 10, "max_tokens": 1024}),
            "run": cfg.run.model_copy(update={"run_id": "train-test", "run_date": "2026-01-01"}),
        }
    )


@pytest.fixture
def protocol_cfg(spark, tiny_cfg: Config) -> Config:
    load_synthetic(spark, tiny_cfg, n_users=30, n_items=80, per_user=14)
    return _configure(tiny_cfg)


def _example_frame(spark, cfg: Config):
    """build_examples on the tables `cfg` points at (a lazy DataFrame)."""
    return build_examples(
        read_input(spark, cfg.catalog, C.INTERACTIONS),
        read_input(spark, cfg.catalog, C.ITEMS),
        read_input(spark, cfg.catalog, C.HOLDOUT),
        cfg.train,
        cfg.prompt,
        cfg.evidence,
        str(resolve_base(cfg.model, cfg.cache_path).path),
    )


def _examples(spark, cfg: Config) -> pd.DataFrame:
    return _example_frame(spark, cfg).toPandas()


def test_no_validation_or_test_item_in_training_examples(spark, protocol_cfg: Config) -> None:
    cfg = protocol_cfg.model_copy(
        update={"train": protocol_cfg.train.model_copy(update={"tasks": ["pointwise", "listwise"]})}
    )
    examples = _examples(spark, cfg)
    holdout = deltalake.DeltaTable(str(Path(cfg.tables_root) / "holdout")).to_pandas()
    held = holdout.groupby("user_id")["item_id"].apply(set).to_dict()
    test = holdout[holdout.split == "test"].set_index("user_id")["item_id"].to_dict()
    valid = holdout[holdout.split == "valid"].set_index("user_id")["item_id"].to_dict()
    train = examples[examples.kind == "train"]
    assert len(train) == 30 * 3 * 2  # 3 targets per user, two task forms
    for row in train.itertuples():
        assert row.target_item_id not in held[row.user_id]
        assert not held[row.user_id] & set(row.history_item_ids)
        assert not {test[row.user_id]} & set(row.candidate_ids)  # not even as a negative
    vals = examples[examples.kind == "valid"]
    assert len(vals) == 30 * 2
    for row in vals.itertuples():
        assert row.target_item_id == valid[row.user_id]
        assert test[row.user_id] not in row.history_item_ids and row.target_item_id not in row.history_item_ids
        assert row.template_id == f"{row.task_form}-0"  # validation uses the pinned inference template
    assert train.template_id.nunique() >= 4  # paraphrases are sampled for training
    listwise = examples[examples.task_form == "listwise"]
    assert listwise.candidate_ids.map(len).eq(20).all()
    assert listwise.apply(lambda r: r.target_item_id in list(r.candidate_ids), axis=1).all()


def test_popularity_negatives_follow_interaction_counts_for_training_targets_only(spark) -> None:
    """Item 0 holds 300 of 319 training interactions: popularity draws pick it for nearly every
    training target, uniform draws (validation, fusion, and the default) for about 3 in 20."""
    titles = spark.createDataFrame(pd.DataFrame({C.ITEM_ID: range(20), C.TITLE: [f"t{i}" for i in range(20)]}))
    weights = spark.createDataFrame(pd.DataFrame({C.ITEM_ID: [0] * 300 + list(range(1, 20))}))
    targets = spark.createDataFrame(
        pd.DataFrame(
            {C.USER_ID: list(range(100, 200)) * 2, C.ITEM_ID: [19] * 200, "kind": ["train"] * 100 + ["valid"] * 100}
        )
    )
    seen = targets.select(C.USER_ID, C.ITEM_ID)

    def share_with_item_0(popularity) -> pd.Series:
        drawn = _sample_negatives(targets, titles, seen, 3, 7, popularity).toPandas()
        assert drawn.groupby([C.USER_ID, "kind"]).size().eq(3).all()  # never short of distinct items
        assert (drawn[C.ITEM_ID] != 19).all()  # a seen item is never a negative
        return drawn.groupby("kind").apply(lambda k: k[C.ITEM_ID].eq(0).sum() / 100, include_groups=False)

    by_popularity, uniform = share_with_item_0(weights), share_with_item_0(None)
    assert by_popularity["train"] > 0.9
    assert by_popularity["valid"] < 0.4 and uniform["train"] < 0.4 and uniform["valid"] < 0.4


def test_neighbour_negatives_come_from_the_training_target_anchor_neighbours(spark) -> None:
    """Every training target's first draw picks among its anchor's near items; validation targets
    stay uniform (their near item turns up about as often as any other of the 19)."""
    titles = spark.createDataFrame(pd.DataFrame({C.ITEM_ID: range(20), C.TITLE: [f"t{i}" for i in range(20)]}))
    weights = spark.createDataFrame(pd.DataFrame({C.ITEM_ID: list(range(20))}))
    users = list(range(100, 200))
    targets = spark.createDataFrame(
        pd.DataFrame({C.USER_ID: users * 2, C.ITEM_ID: [19] * 200, "kind": ["train"] * 100 + ["valid"] * 100})
    )
    near_item = {u: 1 + u % 10 for u in users}
    neighbours = spark.createDataFrame(
        pd.DataFrame({C.USER_ID: users, "target_item_id": [19] * 100, NEAR: [[near_item[u]] for u in users]})
    )
    seen = targets.select(C.USER_ID, C.ITEM_ID)
    drawn = _sample_negatives(targets, titles, seen, 3, 7, weights, neighbours).toPandas()
    assert drawn.groupby([C.USER_ID, "kind"]).size().eq(3).all()
    assert (drawn[C.ITEM_ID] != 19).all()
    has_near = drawn.groupby([C.USER_ID, "kind"]).apply(
        lambda g: near_item[g.name[0]] in set(g[C.ITEM_ID]), include_groups=False
    )
    assert has_near.xs("train", level="kind").all()
    assert has_near.xs("valid", level="kind").mean() < 0.4


def _anchor_clusters() -> tuple[pd.DataFrame, pd.DataFrame, dict[tuple[int, int], set[int]]]:
    """Interactions where each of ten users' training targets has its own anchor (the item just
    before it), and each anchor co-occurs, in four other users' sequences, with 20 items of its own
    that the ten never saw. Returns interactions, items and {(user, target): its anchor's items}."""
    t0 = datetime(2024, 1, 1)
    rows, clusters, next_item, next_user = [], {}, 10_000, 1_000
    for u in range(1, 11):
        w, x, y, z, valid, test = (100 * u + k for k in range(6))  # oldest first: targets z, y, x
        rows += [(u, item, t0 + timedelta(days=k), 4.0) for k, item in enumerate((w, x, y, z, valid, test))]
        for target, anchor in ((z, y), (y, x), (x, w)):
            clusters[(u, target)] = set()
            for _ in range(4):
                near = list(range(next_item, next_item + 5))
                next_item += 7  # five near items, then two held out
                clusters[(u, target)].update(near)
                sequence = [anchor, *near, near[-1] + 1, near[-1] + 2]
                rows += [(next_user, item, t0 + timedelta(days=k), 4.0) for k, item in enumerate(sequence)]
                next_user += 1
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "event_ts", "rating"])
    ids = sorted(set(inter.item_id))
    return inter, pd.DataFrame({"item_id": ids, "title": [f"Item {i}" for i in ids]}), clusters


@pytest.mark.parametrize("sampling", ["neighbours", "popularity"])
def test_neighbour_negatives_follow_each_training_targets_own_anchor(spark, tiny_cfg: Config, sampling: str) -> None:
    """Through build_examples: with neighbour sampling, a training example's negatives hold items near
    the user's item just before its target (not near the target, nor near the user's newest item),
    which popularity sampling almost never draws."""
    inter, items, clusters = _anchor_clusters()
    write_input(spark, tiny_cfg, "interactions", inter, INTERACTIONS_SCHEMA)
    write_input(spark, tiny_cfg, "items", items, ITEMS_SCHEMA)
    run_stage(protocol_job, spark, tiny_cfg)
    cfg = _configure(tiny_cfg, negative_sampling=sampling, negatives=3, examples_per_user=3)
    examples = _examples(spark, cfg)
    mine = examples[(examples.kind == "train") & examples.user_id.between(1, 10)]
    assert len(mine) == 30
    hits = [bool(clusters[(r.user_id, r.target_item_id)] & set(r.candidate_ids)) for r in mine.itertuples()]
    if sampling == "neighbours":
        assert sum(hits) >= 24, hits
    else:
        assert sum(hits) <= 6, hits


@pytest.mark.parametrize("version", [DEFAULT_VERSION, "v3"])
def test_same_user_renders_identically_in_training_and_scoring(spark, protocol_cfg: Config, version: str) -> None:
    """Also with v3's evidence notes and with ratings in the history: an item in a user's validation
    list and scoring list reads the same."""
    cfg = protocol_cfg.model_copy(
        update={"prompt": protocol_cfg.prompt.model_copy(update={"template_version": version, "show_ratings": True})}
    )
    run_stage(evidence_job, spark, cfg)
    run_stage(prompts_job, spark, cfg)
    prompts = deltalake.DeltaTable(str(Path(cfg.tables_root) / "prompts")).to_pandas().set_index("user_id")
    examples = _examples(spark, cfg)
    valid = examples[examples.kind == "valid"].set_index("user_id")
    template = load_templates(version).get("pointwise-0")
    assert len(valid) == 30
    compared = 0
    for user, example in valid.iterrows():
        scoring = prompts.loc[user]
        assert list(example.history_item_ids) == list(scoring.history_item_ids)
        train_prefix = render_pointwise(template, context_of(example), ["x"]).prefix
        score_prefix = render_pointwise(template, context_of(scoring), ["x"]).prefix
        assert train_prefix.encode() == score_prefix.encode()
        in_scoring = dict(zip(scoring.candidate_ids, scoring.candidate_titles, strict=True))
        for item, shown in zip(example.candidate_ids, example.candidate_titles, strict=True):
            if item in in_scoring:  # an item in both lists: byte-identical text and input
                assert shown == in_scoring[item]
                a = render_pointwise(template, context_of(example), [shown]).text(0)
                b = render_pointwise(template, context_of(scoring), [in_scoring[item]]).text(0)
                assert a == b
                compared += 1
    assert compared > 0
    if template.shows_evidence:
        assert prompts.candidate_titles.map(lambda ts: all(" links)" in t for t in ts)).all()
    # The synthetic interactions carry ratings: every history line shows one, no candidate ever does
    # (a training target's rating would tell the model the answer).
    for frame in (prompts, examples):
        assert frame.history_titles.map(lambda ts: all(" | rated " in t for t in ts)).all()
        assert not frame.candidate_titles.map(lambda ts: any(" | rated " in t for t in ts)).any()


def test_v3_training_notes_are_the_evidence_as_of_each_target(spark, protocol_cfg: Config) -> None:
    """A training example's notes come from the evidence as of its target (own interaction left out)."""
    from instructrec_batch.evidence.features import AS_OF, candidate_evidence, evidence_interactions
    from instructrec_batch.prompts.render import candidate_text

    cfg = protocol_cfg.model_copy(update={"prompt": protocol_cfg.prompt.model_copy(update={"template_version": "v3"})})
    interactions, holdout = read_input(spark, cfg.catalog, C.INTERACTIONS), read_input(spark, cfg.catalog, C.HOLDOUT)
    examples = _examples(spark, cfg)
    rows = examples[examples.kind == "train"].head(8)
    wanted = pd.DataFrame(
        [(r.user_id, r.target_item_id, item) for r in rows.itertuples() for item in r.candidate_ids],
        columns=["user_id", AS_OF, "item_id"],
    )
    source = evidence_interactions(interactions, holdout)
    ev = candidate_evidence(source, spark.createDataFrame(wanted), cfg.evidence, None)
    ev = wanted.merge(ev.toPandas(), on=["user_id", AS_OF, "item_id"], how="left")
    template = load_templates("v3").get("pointwise-0")
    pairs = zip(ev.ev_popularity_top, ev.ev_linked, strict=True)
    notes = [candidate_text(template, "", top, linked)[2:] for top, linked in pairs]
    shown = [t for r in rows.itertuples() for t in r.candidate_titles]
    assert all(text.endswith(note) for text, note in zip(shown, notes, strict=True))
    assert ev.ev_linked.max() > 0  # some candidates are linked: the notes are not all the same


def _expected_taste(rows: pd.DataFrame, categories: dict[int, list[str]], top: int = 3) -> str | None:
    """The taste line of these history rows, computed independently in pandas."""
    counts: dict[str, int] = {}
    for item in rows.item_id:
        for category in categories[item]:
            counts[category] = counts.get(category, 0) + 1
    best = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return ", ".join(f"{c} ({math.floor(n * 100 / len(rows) + 0.5)}%)" for c, n in best) or None


def test_taste_line_counts_only_rows_before_the_holdout_and_each_training_target(spark, protocol_cfg: Config) -> None:
    """The taste line of a scoring prompt counts the user's rows before the held-out ones; a training
    example's counts the rows before its target (not the target, not later rows), so the line is what
    the user's profile was at that moment. Both checked against a pandas recount, shares included."""
    categories = {i: [f"Genre{i % 4}", f"Mood{i % 7}"] for i in range(1, 81)}
    items = pd.DataFrame(
        {
            "item_id": list(categories),
            "title": [f"Item {i}" for i in categories],
            "category": [", ".join(c) for c in categories.values()],
        }
    )
    write_input(spark, protocol_cfg, "items", items, ITEMS_SCHEMA + ", category STRING")
    cfg = protocol_cfg.model_copy(update={"prompt": protocol_cfg.prompt.model_copy(update={"taste_categories": 3})})
    run_stage(prompts_job, spark, cfg)
    prompts = deltalake.DeltaTable(str(Path(cfg.tables_root) / "prompts")).to_pandas().set_index("user_id")
    examples = _examples(spark, cfg)
    holdout = deltalake.DeltaTable(str(Path(cfg.tables_root) / "holdout")).to_pandas()
    inter = deltalake.DeltaTable(str(Path(cfg.tables_root) / "interactions")).to_pandas()
    key = lambda df: list(zip(df.event_ts, df.item_id, strict=True))  # noqa: E731 - the (ts, item) order
    first_held = {u: min(key(g)) for u, g in holdout.groupby("user_id")}
    by_user = {u: g.assign(_k=key(g)) for u, g in inter.groupby("user_id")}

    def before(user: int, cut: tuple) -> pd.DataFrame:
        rows = by_user[user]
        return rows[rows._k.map(lambda k: k < cut)]

    for user, prompt in prompts.iterrows():
        assert prompt.taste_text == _expected_taste(before(user, first_held[user]), categories)
    train = examples[examples.kind == "train"]
    assert len(train) == 30 * 3
    for row in train.itertuples():
        target = by_user[row.user_id].set_index("item_id").loc[row.target_item_id]
        assert row.taste_text == _expected_taste(before(row.user_id, (target.event_ts, row.target_item_id)), categories)
    # Each user's three targets see different counts, so the recount really tells the moments apart.
    assert train.groupby("user_id").taste_text.nunique().gt(1).mean() > 0.5
    template = load_templates(DEFAULT_VERSION).get("pointwise-0")  # and the prompt shows the line
    first = train.iloc[0]
    assert template.taste.format(taste=first.taste_text) in render_pointwise(template, context_of(first), ["x"]).prefix


def test_collected_examples_come_in_one_order_whatever_the_partitioning(spark, protocol_cfg: Config) -> None:
    """The trainer's seeded shuffle starts from the collected examples: their order must not follow
    Spark's plan, or the same data and seed would tune different adapters on different engines."""
    examples = _example_frame(spark, protocol_cfg).cache()
    one, many = examples.coalesce(1), examples.repartition(5, "target_item_id")
    key = ["user_id", "target_item_id", "kind"]
    assert not one.toPandas()[key].equals(many.toPandas()[key])  # Spark's own order differs
    a, b = collect_examples(one), collect_examples(many)
    assert len(a) == 30 * 4 and a[key].equals(b[key])
    assert a.drop(columns=["candidate_ids", "candidate_titles", "history_titles", "history_item_ids"]).equals(
        b.drop(columns=["candidate_ids", "candidate_titles", "history_titles", "history_item_ids"])
    )


def test_training_lowers_validation_loss_and_adapter_round_trips(
    spark, protocol_cfg: Config, tiny_model_dir, caplog
) -> None:
    with caplog.at_level("INFO", "instructrec_batch"):
        summary = run_stage(train_job, spark, protocol_cfg)
    # No evidence job ran for this run: training fits the sequential model for its fusion lists itself.
    assert any("training the sequential model for the fusion lists" in m for m in caplog.messages)
    head = json.loads((Path(summary.adapter) / "fusion_head.json").read_text())
    assert C.EV_SEQUENCE in head["features"]
    manifest = json.loads((Path(summary.adapter) / "manifest.json").read_text())
    assert manifest["val_loss"] < manifest["zero_shot_val_loss"]  # the loss fell
    # The kept adapter is the best evaluated one (improvements under 1e-4 do not replace it).
    history = [h["val_loss"] for h in manifest["loss_history"]]
    assert manifest["val_loss"] in history and manifest["val_loss"] <= min(history) + 1e-4
    assert manifest["base_model_sha256"] == BaseModel(str(tiny_model_dir), tiny_model_dir).sha256()
    assert manifest["data_versions"]["interactions"] == 0 and manifest["template_version"] == DEFAULT_VERSION
    assert manifest["item_text"] == protocol_cfg.prompt.item_text()  # what scoring checks its configuration against

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    batch = [tokenizer("the user likes star wars", add_special_tokens=False)["input_ids"], [5, 6, 7]]
    info = verify_adapter(summary.adapter, base_sha256=manifest["base_model_sha256"])
    loaded = load_adapter(load_causal_lm(tiny_model_dir), info)
    base_only = load_causal_lm(tiny_model_dir)
    with torch.inference_mode():
        tuned = last_logits(loaded, batch, pad_id_of(tokenizer))
        plain = last_logits(base_only, batch, pad_id_of(tokenizer))
        # Reloading the saved adapter twice gives identical logits, and they differ from the base model's.
        again = last_logits(load_adapter(load_causal_lm(tiny_model_dir), info), batch, pad_id_of(tokenizer))
    assert torch.equal(tuned, again)
    assert not torch.allclose(tuned, plain)
    runs = deltalake.DeltaTable(str(Path(protocol_cfg.tables_root) / "runs")).to_pandas()
    assert runs.query("job == 'train'").status.tolist() == ["succeeded"]


@pytest.fixture(scope="module")
def trained_adapter(tmp_path_factory, tiny_model_dir) -> Path:
    """A real adapter saved by peft (one step, no data) to tamper with."""
    from peft import LoraConfig, get_peft_model

    from instructrec_batch.models.adapter import save_adapter

    model = get_peft_model(
        load_causal_lm(tiny_model_dir), LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM")
    )
    folder = tmp_path_factory.mktemp("adapter")
    save_adapter(model, folder, {"base_model": "tiny", "base_model_sha256": "b" * 64})
    return folder


def test_tampered_adapter_is_refused(trained_adapter: Path, tmp_path: Path) -> None:
    copy = tmp_path / "adapter"
    shutil.copytree(trained_adapter, copy)
    verify_adapter(copy, base_sha256="b" * 64)  # intact: accepted
    weights = copy / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="changed or corrupted after training"):
        verify_adapter(copy)


def test_adapter_for_another_base_missing_files_and_pickles_are_refused(trained_adapter: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="was trained on base model tiny"):
        verify_adapter(trained_adapter, base_sha256="c" * 64)
    missing = tmp_path / "missing"
    shutil.copytree(trained_adapter, missing)
    (missing / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match=r"missing manifest\.json"):
        verify_adapter(missing)
    pickled = tmp_path / "pickled"
    shutil.copytree(trained_adapter, pickled)
    torch.save({"x": torch.zeros(1)}, pickled / "adapter_model.bin")
    with pytest.raises(ArtifactError, match="pickle-format weights"):
        verify_adapter(pickled)
    with pytest.raises(ArtifactError, match="does not exist"):
        verify_adapter(tmp_path / "nope")


def test_pairwise_term_rewards_ranking_the_target_first_and_batches_keep_examples_whole() -> None:
    import random

    import torch

    from instructrec_batch.training.sequences import TrainSequence
    from instructrec_batch.training.trainer import _batches, _pairwise

    yes, no = 5, 7
    batch = [
        TrainSequence([1, 2], yes, group=0, positive=True, yes_no=(yes, no)),
        TrainSequence([1, 3], no, group=0, positive=False, yes_no=(yes, no)),
        TrainSequence([1, 4], no, group=1, positive=False, yes_no=(yes, no)),  # no target in its group here
    ]
    logits = torch.zeros(3, 10)
    logits[0, yes] = 2.0  # target scored above the negative of its own example
    good = _pairwise(logits, batch)
    logits[0, yes], logits[1, yes] = 0.0, 2.0  # now the negative is on top
    bad = _pairwise(logits, batch)
    assert good is not None and bad is not None
    assert good[1] == 1 and float(good[0]) == pytest.approx(-math.log(1 / (1 + math.exp(-2.0))))  # group 0 only
    assert float(bad[0]) > float(good[0])
    assert _pairwise(logits, batch[2:]) is None

    seqs = [
        TrainSequence([1] * (3 + g), no, group=g, positive=j == 0, yes_no=(yes, no))
        for g in range(30)
        for j in range(4)
    ]
    batches = _batches(seqs, 8, random.Random(0))
    assert sum(len(b) for b in batches) == len(seqs)
    where = {}
    for n, b in enumerate(batches):
        for s in b:
            where.setdefault(s.group, set()).add(n)
    assert all(len(found) == 1 for found in where.values())  # each example's sequences share a batch


def test_unsafe_base_model_folders_and_remote_code_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    from instructrec_batch.config import load_config
    from instructrec_batch.errors import ConfigError
    from instructrec_batch.models.base import check_model_folder

    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ConfigError, match=r"pickle-format weights \(pytorch_model\.bin\)"):
        check_model_folder(pickled)

    remote = tmp_path / "remote"
    shutil.copytree(tiny_model_dir, remote)
    config = json.loads((remote / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "evil.EvilModel"}
    (remote / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"auto_map.*trust_remote_code stays off"):
        check_model_folder(remote)
    with pytest.raises(ConfigError, match=r"model\.trust_remote_code"):
        load_config(overrides=["model.trust_remote_code=true"])


def test_one_pass_training_loss_and_gradients_equal_per_sequence(spark, protocol_cfg: Config) -> None:
    """Each pointwise example as one packed sequence: same loss and LoRA gradients (fp32) as every
    candidate's sequence in full, on a fixed batch that mixes examples, lengths and priors."""
    from peft import LoraConfig, get_peft_model

    from instructrec_batch.training.sequences import sequences
    from instructrec_batch.training.trainer import _loss

    frame = _examples(spark, protocol_cfg)
    base = resolve_base(protocol_cfg.model, protocol_cfg.cache_path)
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    seqs = sequences(frame[frame.kind == "train"].head(3), tokenizer, load_templates(DEFAULT_VERSION), 1024)
    seqs = [s.__class__(**{**s.__dict__, "prior": 0.1 * i}) for i, s in enumerate(seqs)]
    assert len({s.group for s in seqs}) == 3 and len({len(s.input_ids) for s in seqs}) > 1
    torch.manual_seed(0)
    model = get_peft_model(
        load_causal_lm(base.path),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM", init_lora_weights=False),
    )
    pad = pad_id_of(tokenizer)
    results = []
    for packed in (False, True):
        model.zero_grad()
        loss = _loss(model, seqs, pad, autocast=False, pairwise_weight=1.0, packed=packed)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((loss.item(), grads))
    (reference, ref_grads), (packed_loss, packed_grads) = results
    assert packed_loss == pytest.approx(reference, abs=1e-4)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, atol=1e-4, rtol=1e-3)
    assert any(float(g.abs().max()) > 1e-6 for g in ref_grads.values())


@pytest.mark.parametrize("packed", [True, False])
def test_micro_batches_accumulate_the_whole_batchs_gradient(spark, protocol_cfg: Config, packed: bool) -> None:
    """A batch run in parts of whole examples (train.micro_batch_tokens) gives the loss and LoRA
    gradients of the batch run at once (fp32), with the pairwise term's mean over all of its pairs."""
    from peft import LoraConfig, get_peft_model

    from instructrec_batch.training.sequences import sequences
    from instructrec_batch.training.trainer import _loss, accumulate_gradients, micro_batches

    frame = _examples(spark, protocol_cfg)
    base = resolve_base(protocol_cfg.model, protocol_cfg.cache_path)
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    seqs = sequences(frame[frame.kind == "train"].head(4), tokenizer, load_templates(DEFAULT_VERSION), 1024)
    seqs = [s.__class__(**{**s.__dict__, "prior": 0.1 * i}) for i, s in enumerate(seqs)]
    parts = micro_batches(seqs, 64, packed)
    assert len(parts) == 4 and all(len({s.group for s in part}) == 1 for part in parts)  # whole examples
    assert [s for part in parts for s in part] == seqs
    torch.manual_seed(0)
    model = get_peft_model(
        load_causal_lm(base.path),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM", init_lora_weights=False),
    )
    pad = pad_id_of(tokenizer)
    model.zero_grad()
    whole = _loss(model, seqs, pad, autocast=False, pairwise_weight=1.0, packed=packed)
    (whole * 0.5).backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    parted = accumulate_gradients(model, seqs, pad, False, 1.0, packed, max_tokens=64, scale=0.5)
    assert parted == pytest.approx(whole.item(), abs=1e-4)
    for name, grad in expected.items():
        torch.testing.assert_close(model.get_parameter(name).grad, grad, atol=1e-5, rtol=1e-4)


def test_evidence_priors_follow_each_examples_candidate_order(spark, protocol_cfg: Config) -> None:
    from instructrec_batch.evidence.features import AS_OF, candidate_evidence, evidence_interactions
    from instructrec_batch.training.fusion import evidence_priors

    interactions = read_input(spark, protocol_cfg.catalog, C.INTERACTIONS)
    items = read_input(spark, protocol_cfg.catalog, C.ITEMS)
    holdout = read_input(spark, protocol_cfg.catalog, C.HOLDOUT)
    base = resolve_base(protocol_cfg.model, protocol_cfg.cache_path)
    examples = build_examples(
        interactions, items, holdout, protocol_cfg.train, protocol_cfg.prompt, protocol_cfg.evidence, str(base.path)
    )
    frame, blend = evidence_priors(examples, examples.toPandas(), interactions, items, holdout, protocol_cfg.evidence)
    rows = frame[frame.kind == "train"].head(5)
    wanted = pd.DataFrame(
        [(r.user_id, r.target_item_id, item) for r in rows.itertuples() for item in r.candidate_ids],
        columns=["user_id", AS_OF, "item_id"],
    )
    ev = candidate_evidence(
        evidence_interactions(interactions, holdout), spark.createDataFrame(wanted), protocol_cfg.evidence, items
    ).toPandas()
    expected = wanted.merge(ev, on=["user_id", AS_OF, "item_id"], how="left")
    got = [p for r in rows.itertuples() for p in r.candidate_priors]
    assert got == pytest.approx(list(blend.apply(expected)), abs=1e-9)
    assert len(set(got)) > 1  # the priors tell candidates apart


def test_training_without_examples_is_a_clear_error(tiny_model_dir) -> None:
    """No examples is a TrainingError naming what to fix (the CLI turns it into exit code 2, not a traceback)."""
    from instructrec_batch.config import TrainConfig
    from instructrec_batch.errors import InstructRecError, TrainingError
    from instructrec_batch.training.trainer import train_lora

    model = load_causal_lm(tiny_model_dir)
    with pytest.raises(TrainingError, match=r"training needs examples: got 0 training.*instructrec-batch protocol"):
        train_lora(model, [], [], TrainConfig(), pad_id_of(AutoTokenizer.from_pretrained(tiny_model_dir)))
    assert issubclass(TrainingError, InstructRecError)
