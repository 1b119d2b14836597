"""ReDial as tables: a user per dialogue, films in order, the seeker's words as intents, held-out target turns."""

from __future__ import annotations

import json
from pathlib import Path

import deltalake
import pytest

from instructrec_batch import contracts as C
from instructrec_batch.config import Config
from instructrec_batch.context import run_stage
from instructrec_batch.data.redial import read_redial, split_of, title_of_uri
from instructrec_batch.errors import DataSourceError
from instructrec_batch.stages.data import redial_job
from tests.helpers import REPO
from tests.redial_fixture import FILMS, PERSON, write_redial

SHARES = (0.4, 0.2, 0.4)


def test_titles_come_from_the_dbpedia_uri_with_their_year() -> None:
    assert title_of_uri("<http://dbpedia.org/resource/Water_(1985_film)>") == "Water (1985)"
    assert title_of_uri("<http://dbpedia.org/resource/It_(2017_American_film)>") == "It (2017)"
    assert title_of_uri("<http://dbpedia.org/resource/Alien_(film)>") == "Alien"


def test_a_dialogue_becomes_one_user_with_its_films_in_order_and_the_seekers_words(tmp_path: Path) -> None:
    tables = read_redial(write_redial(tmp_path / "redial"), seed=3, shares=SHARES)
    assert tables.splits.user_id.nunique() == 30 and set(tables.splits.split) == {"train", "valid", "test"}
    assert PERSON not in set(tables.interactions.item_id)  # people named in a dialogue are not films
    d = "test_20004"  # films a=104, b=124, c=152; the seeker wants something scary
    films = tables.interactions[tables.interactions.user_id == d].sort_values(C.EVENT_TS)
    # the seeker's film, then the recommender's two (theirs kept too: what the dialogue is about), each once
    assert films.item_id.tolist() == [104, 124, 152]
    intents = tables.intents[tables.intents.user_id == d].sort_values(C.INTENT_TS).intent.tolist()
    assert intents[0] == "Hi! I loved Film 104 (1954) with Some Actor"
    assert intents[1] == "Hi! I loved Film 104 (1954) with Some Actor / Seen it. Now I want something scary"
    assert tables.items.set_index(C.ITEM_ID).title[104] == "Film 104 (1954)"


def test_held_out_dialogues_keep_their_last_turn_whose_film_was_not_named_before(tmp_path: Path) -> None:
    tables = read_redial(write_redial(tmp_path / "redial"), seed=3, shares=SHARES)
    held = tables.splits[tables.splits.split != "train"].user_id
    assert sorted(tables.holdout.user_id) == sorted(held)
    by_user = tables.holdout.set_index("user_id")
    for user in held:
        d = int(user.split("_")[1]) - 20000
        c = FILMS[40 + (d * 3) % 20]
        # the third turn re-recommends b (named before): the second turn's fresh film c is the target
        assert by_user.item_id[user] == c
        assert by_user.split[user] == tables.splits.set_index("user_id").split[user]
        mine = tables.interactions[tables.interactions.user_id == user]
        assert mine[C.EVENT_TS].max() == by_user[C.EVENT_TS][user]  # nothing after the target turn
        intents = tables.intents[tables.intents.user_id == user]
        assert (intents[C.INTENT_TS] < by_user[C.EVENT_TS][user]).all()  # stated before the recommendation
        assert not intents.intent.str.contains("one more").any()  # the third turn's words are after it


def test_dialogues_not_turns_are_split_and_the_split_follows_the_seed() -> None:
    assert split_of("test_1", 1, (1.0, 0.0, 0.0)) == "train"
    assert split_of("test_1", 1, (0.0, 0.0, 1.0)) == "test"
    draws = [split_of(f"test_{i}", 7, (0.6, 0.1, 0.3)) for i in range(2000)]
    assert 0.55 < draws.count("train") / 2000 < 0.65 and 0.25 < draws.count("test") / 2000 < 0.35
    assert draws != [split_of(f"test_{i}", 8, (0.6, 0.1, 0.3)) for i in range(2000)]


def test_names_removed_reads_the_seekers_words_without_film_names(tmp_path: Path) -> None:
    tables = read_redial(write_redial(tmp_path / "redial"), seed=3, shares=SHARES, names_removed=True)
    assert tables.intents.intent.str.contains("[movie]", regex=False).any()
    assert not tables.intents.intent.str.contains(r"Film \d+ \(", regex=True).any()
    assert len(tables.interactions) > 0  # the films themselves are still known


def test_a_missing_file_names_the_file_and_the_folder_layout(tmp_path: Path) -> None:
    folder = write_redial(tmp_path / "redial")
    (folder / "item_ids.json").unlink()
    with pytest.raises(DataSourceError, match=r"item_ids\.json is missing.*--source"):
        read_redial(folder)


def test_the_data_job_writes_the_tables_and_test_lists_of_unnamed_negatives(spark, tiny_cfg: Config, tmp_path) -> None:
    folder = write_redial(tmp_path / "redial")
    cfg = tiny_cfg.model_copy(
        update={"redial": tiny_cfg.redial.model_copy(update={"source": str(folder), "shares": SHARES})}
    )
    counts = run_stage(redial_job, spark, cfg)
    root = Path(cfg.tables_root)
    read = {
        name: deltalake.DeltaTable(str(root / name)).to_pandas()
        for name in ("interactions", "holdout", "candidates", "intents")
    }
    test_users = set(read["holdout"].query("split == 'test'").user_id)
    assert counts.users == len(test_users) > 0
    assert set(read["candidates"].user_id) == test_users
    for user, rows in read["candidates"].groupby("user_id"):
        assert len(rows) == 1 + cfg.data.negatives
        interactions, holdout = read["interactions"], read["holdout"]
        named = set(interactions[interactions.user_id == user].item_id)
        target = holdout[holdout.user_id == user].item_id.iloc[0]
        assert target in set(rows.item_id) and not (named - {target}) & set(rows.item_id)
        assert sorted(rows.retrieval_rank) == list(range(1, 2 + cfg.data.negatives))
    assert len(read["intents"]) > 0


def test_the_redial_pipeline_trains_on_intentions_and_reports_every_method_with_the_control(
    spark, tiny_cfg: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`instructrec-batch redial` end to end on the fixture: the text baselines, the blend, LoRA, the hybrid
    and the shuffled-intention control rows, on the test dialogues' lists. With MLflow on, training registers
    the adapter and score and evaluate both use that registered version, which the pipeline downloads from
    the store once and hands to both jobs."""
    import mlflow

    from instructrec_batch.config import load_config
    from instructrec_batch.pipeline import run_redial

    downloads: list[str] = []
    real = mlflow.artifacts.download_artifacts

    def counted(*args: object, **kwargs: object) -> str:
        downloads.append(str(kwargs.get("artifact_uri")))
        return real(*args, **kwargs)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", counted)

    overlay = load_config([REPO / "conf" / "redial.yaml"]).model_dump(include={"prompt", "evidence", "evaluate"})
    cfg = tiny_cfg.model_copy(
        update={
            "redial": tiny_cfg.redial.model_copy(
                update={"source": str(write_redial(tmp_path / "redial")), "shares": SHARES}
            ),
            "prompt": tiny_cfg.prompt.model_copy(update={**overlay["prompt"], "max_tokens": 1024}),
            "evidence": tiny_cfg.evidence.model_copy(update={"sequential": False}),
            "train": tiny_cfg.train.model_copy(
                update={"max_steps": 2, "eval_every": 2, "val_users": 4, "fusion_users": 4, "batch_size": 4}
            ),
            "evaluate": tiny_cfg.evaluate.model_copy(update={**overlay["evaluate"], "bootstrap": 20}),
            "mlflow": tiny_cfg.mlflow.model_copy(update={"enabled": True}),
        }
    )
    result = run_redial(cfg, lambda _: None, session=spark)
    assert downloads == ["models:/instructrec_adapter/1"]
    runs = deltalake.DeltaTable(str(Path(cfg.tables_root) / "runs")).to_pandas()
    assert set(runs.job) >= {"redial", "evidence", "prompts", "train", "score", "evaluate"}
    assert set(runs.status) == {"succeeded"}
    recs = deltalake.DeltaTable(str(Path(cfg.tables_root) / "recommendations")).to_pandas()
    assert recs.model_id.str.endswith("(models:/instructrec_adapter/1)").all()
    metrics = deltalake.DeltaTable(str(Path(cfg.tables_root) / "metrics")).to_pandas()
    methods = set(metrics.method)
    expected = {"random", "popularity", "itemknn", "bm25", "minilm", "blend", "lora/pointwise", "hybrid/pointwise"}
    assert expected <= methods
    assert {"blend/shuffled-intents", "hybrid/pointwise/shuffled-intents"} <= methods
    assert metrics.n_users.max() == len(
        deltalake.DeltaTable(str(Path(cfg.tables_root) / "candidates")).to_pandas().user_id.unique()
    )
    bm25 = metrics[(metrics.method == "bm25") & (metrics.metric == "NDCG") & (metrics.k == 10) & metrics.versus.isna()]
    assert bm25.value.iloc[0] > 0
    manifest = json.loads((Path(result.adapter) / "manifest.json").read_text())
    assert sum(manifest["instruction_forms"]["train_examples"].values()) > 0
