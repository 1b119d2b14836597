"""ReDial (Li et al. 2018, CC BY 4.0): movie-recommendation dialogues as the project's table contracts.

The files are those He et al. (2023) prepared for LLM evaluation (their repository's data/redial/):
`test.jsonl`, one recommendation turn per line (`context`, `rec`, `prev_entity`, `entity_name`,
`dialog_id`, `turn_id`, `input`: the context rendered as "User: …" / "System: …" lines, the User lines
being the seeker's words), `item_ids.json` (which entity ids are films) and `entity2id.json` (DBpedia
URI → entity id; the URI holds the title). `test_p3.jsonl` is the same turns with film names removed
from the words, used with `names_removed`. The files are read from a local folder, never fetched.

How a dialogue becomes tables (pure pandas here; the data job writes them):
- one user per dialogue (user_id = dialog_id);
- interactions: the films mentioned in the dialogue, in the order they came up, the seeker's and the
  recommender's alike (a dialogue's films are what the conversation is about, and they are what
  ReDial's own `prev_entity` lists; a co-mention model learns from both), each once, at its first
  mention; event_ts is a position (100 per utterance), so "before" means earlier in the dialogue;
- intents: at each recommendation turn, what the seeker has said so far (their utterances joined,
  newest last, cut from the oldest side to INTENT_CHARS), at that turn's position, so the latest
  intent at or before a target is the request the recommender answered;
- items: every film with its title and year;
- target turns: turns that recommend a film not named earlier in the dialogue; a held-out dialogue's
  target is its last such turn (the most context) and its first such film; the dialogue's rows after
  that turn are left out;
- dialogues (never turns) are split into train / valid / test by a seeded hash, so no conversation
  is on both sides.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from instructrec_batch import contracts as C
from instructrec_batch.errors import DataSourceError

TURNS, TURNS_NAMES_REMOVED = "test.jsonl", "test_p3.jsonl"
FILMS, ENTITIES = "item_ids.json", "entity2id.json"
STEP = 100  # event_ts units per utterance: mentions, the intent and the recommendation of one turn fit inside
INTENT_CHARS = 300  # the seeker's words kept per intent, newest last (prompt.text_max_chars by default)
SPLITS = (C.SPLIT_TRAIN, C.SPLIT_VALID, C.SPLIT_TEST)
_SPEAKER = re.compile(r"^(User|System): ?(.*)$")


@dataclass(frozen=True)
class Tables:
    """The contracts' frames: interactions, items, intents, holdout (valid and test targets), and each
    dialogue's split."""

    interactions: pd.DataFrame  # user_id, item_id, event_ts
    items: pd.DataFrame  # item_id, title
    intents: pd.DataFrame  # user_id, intent, intent_ts
    holdout: pd.DataFrame  # user_id, item_id, event_ts, split
    splits: pd.DataFrame  # user_id, split


def _read_json(folder: Path, name: str) -> object:
    path = folder / name
    if not path.is_file():
        raise DataSourceError(
            f"ReDial file {path} is missing: --source must be a folder holding {TURNS}, {FILMS} and {ENTITIES} "
            f"(and {TURNS_NAMES_REMOVED} for names removed) as in data/redial/ of He et al.'s repository"
        )
    try:
        if name.endswith(".jsonl"):
            return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataSourceError(f"ReDial file {path} is not valid JSON (line {exc.lineno}): {exc.msg}") from None


_URI = re.compile(r"^<?https?://dbpedia\.org/resource/(?P<name>.+?)>?$")
_FILM_SUFFIX = re.compile(r"_\((?:(?P<year>\d{4})_)?(?:[A-Za-z]+_)*film\)$")


def title_of_uri(uri: str) -> str:
    """A DBpedia film URI as a title with its year: `Water_(1985_film)` → `Water (1985)`."""
    found = _URI.match(uri)
    name = found["name"] if found else uri
    suffix = _FILM_SUFFIX.search(name)
    year = suffix["year"] if suffix else None
    if suffix:
        name = name[: suffix.start()]
    title = name.replace("_", " ").strip()
    return f"{title} ({year})" if year else title


def _check_turn(turn: object, line: int) -> dict:
    wanted = ("context", "rec", "prev_entity", "dialog_id", "turn_id", "input")
    if not isinstance(turn, dict) or any(key not in turn for key in wanted):
        raise DataSourceError(f"ReDial {TURNS} line {line} lacks one of {', '.join(wanted)}; is it the He et al. file?")
    return turn


def _seeker_words(rendered: str) -> list[str]:
    """The seeker's utterances of a turn's `input` (its "User:" lines), in order."""
    words = []
    for line in rendered.splitlines():
        found = _SPEAKER.match(line.strip())
        if found and found[1] == "User" and found[2].strip():
            words.append(found[2].strip())
    return words


def _intent(words: Sequence[str]) -> str | None:
    """The seeker's words joined newest last, cut from the oldest side to INTENT_CHARS."""
    text = " / ".join(words)
    if len(text) > INTENT_CHARS:
        text = "…" + text[-(INTENT_CHARS - 1) :].lstrip()
    return text or None


def split_of(dialog_id: str, seed: int, shares: tuple[float, float, float]) -> str:
    """The split of a dialogue: a seeded hash of its id against the train / valid / test shares."""
    digest = hashlib.sha256(f"{seed}:{dialog_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < shares[0]:
        return C.SPLIT_TRAIN
    return C.SPLIT_VALID if u < shares[0] + shares[1] else C.SPLIT_TEST


def _dialogues(turns: list[dict]) -> Iterator[tuple[str, list[dict]]]:
    by_dialogue: dict[str, list[dict]] = {}
    for turn in turns:
        by_dialogue.setdefault(str(turn["dialog_id"]), []).append(turn)
    for dialog_id in sorted(by_dialogue):
        yield dialog_id, sorted(by_dialogue[dialog_id], key=lambda t: (len(t["context"]), t["turn_id"]))


def read_redial(
    folder: Path | str,
    *,
    seed: int = 42,
    shares: tuple[float, float, float] = (0.6, 0.1, 0.3),
    names_removed: bool = False,
) -> Tables:
    """The tables of the ReDial files in `folder` (see the module docstring for the mapping)."""
    folder = Path(folder)
    if len(shares) != 3 or any(s < 0 for s in shares) or abs(sum(shares) - 1.0) > 1e-9:
        raise DataSourceError(f"ReDial split shares {shares} must be three non-negative numbers summing to 1")
    turns = [_check_turn(t, i + 1) for i, t in enumerate(_read_json(folder, TURNS))]  # type: ignore[arg-type]
    films = {int(i) for i in _read_json(folder, FILMS)}  # type: ignore[union-attr]
    entities = _read_json(folder, ENTITIES)
    if not isinstance(entities, dict):
        raise DataSourceError(f"ReDial file {folder / ENTITIES} must map DBpedia URIs to entity ids")
    titles = {int(i): title_of_uri(uri) for uri, i in entities.items() if int(i) in films}
    for turn in turns:  # the turns' own rendering of a film's name wins over the URI's
        for entity, name in zip(turn.get("entity", []), turn.get("entity_name", []), strict=False):
            if int(entity) in films and re.search(r"\(\d{4}\)$", str(name)):
                titles[int(entity)] = str(name)
    words_of: dict[int, str] = {}
    if names_removed:
        words_of = {int(t["turn_id"]): t["input"] for t in _read_json(folder, TURNS_NAMES_REMOVED)}  # type: ignore[union-attr]

    interactions, intents, holdout, splits = [], [], [], []
    for dialog_id, dialogue in _dialogues(turns):
        split = split_of(dialog_id, seed, shares)
        splits.append((dialog_id, split))
        seen: dict[int, int] = {}  # film → event_ts of its first mention
        events: list[tuple[int, int, int]] = []  # (turn index, item, event_ts)
        asks: list[tuple[int, str, int]] = []  # (turn index, intent, intent_ts)
        targets: list[tuple[int, int, int]] = []  # (turn index, item, event_ts) of qualifying turns
        for index, turn in enumerate(dialogue):
            at = len(turn["context"]) * STEP
            for order, entity in enumerate(turn["prev_entity"]):
                if int(entity) in films and int(entity) not in seen:
                    seen[int(entity)] = at + order % (STEP // 2)
                    events.append((index, int(entity), seen[int(entity)]))
            rendered = words_of.get(int(turn["turn_id"]), turn["input"])
            intent = _intent(_seeker_words(rendered))
            if intent is not None:
                asks.append((index, intent, at + STEP // 2))
            fresh = [int(e) for e in turn["rec"] if int(e) in films and int(e) not in seen]
            if fresh:
                targets.append((index, fresh[0], at + STEP - 1))
            for entity in turn["rec"]:
                if int(entity) in films and int(entity) not in seen:
                    seen[int(entity)] = at + STEP - 1
                    events.append((index, int(entity), seen[int(entity)]))
        if split == C.SPLIT_TRAIN or not targets:
            last = len(dialogue)
        else:
            last, item, ts = targets[-1]
            holdout.append((dialog_id, item, ts, split))
        # a held-out dialogue keeps its rows up to its target (the target's own row included, as leave-one-out
        # keeps the held-out interaction; the history cut removes it and everything after it)
        interactions += [(dialog_id, item, ts) for index, item, ts in events if index <= last]
        intents += [(dialog_id, text, ts) for index, text, ts in asks if index <= last]
    return Tables(
        pd.DataFrame(interactions, columns=[C.USER_ID, C.ITEM_ID, C.EVENT_TS]),
        pd.DataFrame(sorted(titles.items()), columns=[C.ITEM_ID, C.TITLE]),
        pd.DataFrame(intents, columns=[C.USER_ID, C.INTENT, C.INTENT_TS]),
        pd.DataFrame(holdout, columns=[C.USER_ID, C.ITEM_ID, C.EVENT_TS, C.SPLIT]),
        pd.DataFrame(splits, columns=[C.USER_ID, C.SPLIT]),
    )
