"""pandas functions run on executors by the prompts job (via mapInPandas).

Each is built by a factory that captures only small, picklable settings (a tokenizer path, caps,
template ids); heavy imports and the tokenizer load happen inside, once per process, through
`executor_cache`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pandas as pd

from instructrec_batch import contracts as C
from instructrec_batch.text.sanitize import ELLIPSIS, clean_text


def tokenizer_for(path: str) -> Any:
    from instructrec_batch.executor_cache import get_or_load
    from instructrec_batch.models.base import load_tokenizer

    return get_or_load(("tokenizer", path), lambda: load_tokenizer(path))


def token_counter(tokenizer: Any) -> Callable[[Sequence[str]], list[int]]:
    """Model-input lengths: the prompts are encoded without special tokens everywhere."""

    backend = tokenizer.backend_tokenizer  # the Rust tokenizer: same ids, no per-text Python dicts
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)

    def count(texts: Sequence[str]) -> list[int]:
        return [len(encoding) for encoding in encode(list(texts), add_special_tokens=False)]

    return count


def splits_at_newlines(tokenizer: Any) -> bool:
    """Whether the tokenizer never merges across a newline between two lines without edge blanks.

    True for byte-level BPE with the GPT-2 split pattern (e.g. SmolLM2, GPT-2): no normaliser, the
    ByteLevel pre-tokenizer with its regex and no added prefix space, no BPE dropout. Its pattern
    ends every pre-token at a newline whose neighbours are not blank and makes that newline a
    pre-token of its own, and BPE merges only inside pre-tokens; so the count of 'a\nb' is
    count(a) + count('\n') + count(b). Any other tokenizer is counted text by text.
    """
    from tokenizers import models, pre_tokenizers

    backend = tokenizer.backend_tokenizer
    pre = backend.pre_tokenizer
    return (
        backend.normalizer is None
        and isinstance(pre, pre_tokenizers.ByteLevel)
        and pre.use_regex
        and not pre.add_prefix_space
        and isinstance(backend.model, models.BPE)
        and not backend.model.dropout
    )


class LineCounter:
    """Exact token counts of prompt texts, built from memoised counts of their lines.

    Prompts are mostly lines that repeat across users (an item's history line, a template line), so
    with a tokenizer for which `splits_at_newlines` holds a text's count is the sum of its lines'
    counts plus one newline token each: each distinct line is encoded once per task (one counter per
    mapInPandas call) instead of every prompt in full. A text with an empty line or a line with edge
    blanks, and every text of any other tokenizer, is encoded whole (and memoised whole). The memo
    is cleared when it grows past `max_entries`, which bounds memory on any number of users.
    """

    def __init__(self, tokenizer: Any, max_entries: int = 200_000) -> None:
        self._encode = token_counter(tokenizer)
        self._lengths: dict[str, int] = {}
        self._max_entries = max_entries
        self._by_line = splits_at_newlines(tokenizer)
        self._newline = self._encode(["\n"])[0]

    def _lines(self, text: str) -> list[str] | None:
        """The lines whose counts add up to the text's, or None when the text must be encoded whole."""
        body = text[:-1] if text.endswith("\n") else text  # a closing newline is one token after the last line
        edges_clear = body and not body[0].isspace() and not body[-1].isspace()
        if self._by_line and edges_clear and not _BLANK_AT_NEWLINE.search(body):
            return body.split("\n")
        return None

    def __call__(self, texts: Sequence[str]) -> list[int]:
        split = [self._lines(text) for text in texts]
        if len(self._lengths) > self._max_entries:
            self._lengths.clear()
        parts = dict.fromkeys(part for text, lines in zip(texts, split, strict=True) for part in (lines or (text,)))
        missing = [part for part in parts if part not in self._lengths]
        if missing:  # one batched encode of whatever is new to this process
            self._lengths.update(zip(missing, self._encode(missing), strict=True))
        lengths = self._lengths
        return [
            lengths[text] if lines is None else sum(map(lengths.__getitem__, lines)) + self._newline * text.count("\n")
            for text, lines in zip(texts, split, strict=True)
        ]


_BLANK_AT_NEWLINE = re.compile(r"\s\n|\n\s")  # a blank line, or a line with a blank at its start or end


def cap_tokens(tokenizer: Any, texts: Sequence[str | None], max_tokens: int) -> list[str | None]:
    """Cut each text to at most `max_tokens` tokens (plus an ellipsis), keeping None as None."""
    present = [t for t in texts if t is not None]
    encoded = iter(tokenizer(present, add_special_tokens=False)["input_ids"]) if present else iter(())
    out: list[str | None] = []
    for text in texts:
        if text is None:
            out.append(None)
            continue
        ids = next(encoded)
        out.append(text if len(ids) <= max_tokens else _cut(tokenizer, ids, max_tokens))
    return out


def _cut(tokenizer: Any, ids: list[int], max_tokens: int) -> str | None:
    """The longest head of `ids` that, with an ellipsis, re-encodes to at most `max_tokens` tokens."""
    keep = max_tokens - 1
    while keep > 0:
        # A byte-level cut can end inside a character; drop the replacement char it decodes to.
        head = tokenizer.decode(ids[:keep]).replace("\ufffd", "").rstrip()
        text = head + ELLIPSIS
        if head and len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= max_tokens:
            return text
        keep -= 1
    return None


ATTRIBUTE_SEPARATOR = " | "


def clean_titles_fn(
    tokenizer_path: str,
    max_chars: int,
    max_tokens: int,
    attributes: Sequence[str] = (),
    attribute_max_tokens: int = 16,
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """items(item_id, title, *attributes) → items(item_id, title): the text an item is shown as.

    The title is sanitised and capped; each attribute (e.g. category, brand) likewise, to its own
    cap, and appended after the title when present ('Toy Story (1995) | Animation, Comedy'). None
    when nothing of the title is left: an item is never shown by its attributes alone.
    """

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        tokenizer = tokenizer_for(tokenizer_path)
        for frame in batches:
            titles = cap_tokens(tokenizer, [clean_text(t, max_chars) for t in frame[C.TITLE]], max_tokens)
            shown = [
                cap_tokens(tokenizer, [clean_text(v, max_chars) for v in frame[a]], attribute_max_tokens)
                for a in attributes
            ]
            texts = [
                None if title is None else ATTRIBUTE_SEPARATOR.join([title, *(v for v in values if v)])
                for title, *values in zip(titles, *shown, strict=True)
            ]
            yield pd.DataFrame({C.ITEM_ID: frame[C.ITEM_ID], C.TITLE: texts})

    return run


PROMPT_COLUMNS = [
    C.USER_ID,
    "template_id",
    "template_version",
    "task",
    "preference_text",
    "intention_text",
    C.TASTE_TEXT,
    "history_titles",
    "history_item_ids",
    "history_len",
    "history_available",
    "candidate_ids",
    "candidate_titles",
    "cold_start",
    "prompt_tokens",
]


def prompt_schema(user_type: str, item_type: str) -> str:
    return (
        f"{C.USER_ID} {user_type}, template_id STRING, template_version STRING, task STRING, "
        f"preference_text STRING, intention_text STRING, taste_text STRING, history_titles ARRAY<STRING>, "
        f"history_item_ids ARRAY<{item_type}>, history_len INT, "
        f"history_available BIGINT, candidate_ids ARRAY<{item_type}>, candidate_titles ARRAY<STRING>, "
        "cold_start BOOLEAN, prompt_tokens INT"
    )


# Input of render_prompts_fn besides user_id: per-user arrays in display order (candidates in upstream
# order, history oldest first), built in Spark by prompts.frames.collect_ordered. Flat arrays, not
# arrays of structs: pandas builds one dict per struct and converts nested timestamps one by one,
# which made the conversion alone ~30x slower than the arrays.
CAND_IDS, CAND_TITLES = "cand_ids", "cand_titles"
CAND_NOTES = tuple(f"cand_{c}" for c in C.EVIDENCE_NOTE_COLUMNS)  # for a template that shows evidence
NOTE_ARRAYS = dict(zip(C.EVIDENCE_NOTE_COLUMNS, CAND_NOTES, strict=True))  # evidence column -> its array
HIST_IDS, HIST_TITLES = "hist_ids", "hist_titles"
TASTE = "taste"  # the user's category profile as one raw string (cleaned and capped here like an intent)


def _plain(values: Any) -> list:
    """A Python list from an Arrow-converted array column value (a numpy array, or already a list)."""
    try:
        return values.tolist()
    except AttributeError:
        return list(values)


def _maybe_int(value: Any) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def shown_candidates(template: Any, titles: Sequence[str], notes: Sequence[Sequence[Any]] | None) -> list[str]:
    """Each candidate as the template shows it: its title, plus the evidence note when the template
    has one (`notes` then holds one array per EVIDENCE_NOTE_COLUMNS, aligned with `titles`)."""
    from instructrec_batch.prompts.render import candidate_text

    if not template.shows_evidence:
        return _plain(titles)
    if notes is None:
        raise ValueError(f"template {template.template_id} shows evidence but the input has no {CAND_NOTES}")
    tops, linked = notes
    return [
        candidate_text(template, title, _maybe_int(top), _maybe_int(link))
        for title, top, link in zip(titles, tops, linked, strict=True)
    ]


def render_prompts_fn(
    tokenizer_path: str,
    template_version: str,
    template_id: str,
    budget: int,
    text_max_chars: int,
    text_max_tokens: int,
    passthrough: Sequence[str] = (),
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """Per row: clean intent, review and taste, fit the history to the budget, emit a prompt row.

    Input columns: user_id, CAND_IDS and CAND_TITLES (upstream order), plus CAND_NOTES for a template
    that shows evidence, HIST_IDS and HIST_TITLES (oldest first, or null), history_available, intent,
    review; optionally TASTE (the user's category profile, see prompts.frames.taste_profile),
    template_id (per-row template, as training uses; else `template_id`) and the `passthrough`
    columns, copied to the output after PROMPT_COLUMNS. Scoring prompts and training examples both go
    through this function, which is what makes their text byte-identical for the same user, history
    and template.
    """

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from instructrec_batch.prompts.budget import fit_history, prompt_lengths
        from instructrec_batch.prompts.render import UserContext
        from instructrec_batch.prompts.templates import load_templates

        tokenizer = tokenizer_for(tokenizer_path)
        count = LineCounter(tokenizer)
        templates = load_templates(template_version)

        def clean_capped(values: pd.Series) -> list[str | None]:
            return cap_tokens(tokenizer, [clean_text(v, text_max_chars) for v in values], text_max_tokens)

        for frame in batches:
            intents, reviews = clean_capped(frame["intent"]), clean_capped(frame["review"])
            tastes = clean_capped(frame[TASTE]) if TASTE in frame else [None] * len(frame)
            ids = frame["template_id"].tolist() if "template_id" in frame else [template_id] * len(frame)
            notes = [frame[c].tolist() for c in CAND_NOTES] if CAND_NOTES[0] in frame else None
            users = []
            for i, (tid, titles, hist) in enumerate(zip(ids, frame[CAND_TITLES], frame[HIST_TITLES], strict=True)):
                template = templates.get(tid)
                ctx = UserContext(() if hist is None else tuple(_plain(hist)), reviews[i], intents[i], tastes[i])
                users.append((template, shown_candidates(template, titles, notes and [n[i] for n in notes]), ctx))
            full = prompt_lengths([(template, ctx, shown) for template, shown, ctx in users], count)
            rows = []
            for user, available, cand_ids, hist_ids, (template, shown, ctx), tokens in zip(
                frame[C.USER_ID], frame["history_available"], frame[CAND_IDS], frame[HIST_IDS], users, full, strict=True
            ):
                if tokens > budget:  # only then is the history cut, newest kept
                    fitted = fit_history(template, ctx, shown, count, budget)
                    if fitted is None:  # excluded by check_budget on the driver; reaching here is a bug
                        raise RuntimeError(f"user {user}: prompt exceeds {budget} tokens even without history")
                    ctx, tokens = fitted
                kept = len(ctx.history)
                rows.append(
                    (
                        user,
                        template.template_id,
                        template.version,
                        template.task,
                        ctx.preference,
                        ctx.intent,
                        ctx.taste if ctx.history else None,  # shown only next to a history
                        list(ctx.history),
                        _plain(hist_ids)[len(hist_ids) - kept :] if kept else [],
                        kept,
                        0 if pd.isna(available) else int(available),
                        _plain(cand_ids),
                        shown,
                        ctx.cold_start,
                        tokens,
                    )
                )
            out = pd.DataFrame(rows, columns=PROMPT_COLUMNS)
            for column in passthrough:
                out[column] = frame[column].to_numpy()
            yield out

    return run
