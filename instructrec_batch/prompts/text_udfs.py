"""pandas functions run on executors by the prompts job (via mapInPandas).

Each is built by a factory that captures only small, picklable settings (a tokenizer path, caps,
template ids); heavy imports and the tokenizer load happen inside, once per process, through
`executor_cache`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pandas as pd

from instructrec_batch import contracts as C
from instructrec_batch.prompts.sanitize import ELLIPSIS, clean_text

ITEM_TEXT_SCHEMA_TAIL = f"{C.TITLE} STRING"


def tokenizer_for(path: str) -> Any:
    from instructrec_batch.executor_cache import get_or_load
    from instructrec_batch.models.base import load_tokenizer

    return get_or_load(("tokenizer", path), lambda: load_tokenizer(path))


def token_counter(tokenizer: Any) -> Callable[[Sequence[str]], list[int]]:
    """Model-input lengths: the prompts are encoded without special tokens everywhere."""

    def count(texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    return count


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


def clean_titles_fn(
    tokenizer_path: str, max_chars: int, max_tokens: int
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """items(item_id, title) → items(item_id, title): sanitised and capped; None when nothing is left."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        tokenizer = tokenizer_for(tokenizer_path)
        for frame in batches:
            cleaned = [clean_text(t, max_chars) for t in frame[C.TITLE]]
            yield pd.DataFrame({C.ITEM_ID: frame[C.ITEM_ID], C.TITLE: cap_tokens(tokenizer, cleaned, max_tokens)})

    return run


PROMPT_COLUMNS = [
    C.USER_ID,
    "template_id",
    "template_version",
    "task",
    "preference_text",
    "intention_text",
    "history_titles",
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
        "preference_text STRING, intention_text STRING, history_titles ARRAY<STRING>, history_len INT, "
        f"history_available BIGINT, candidate_ids ARRAY<{item_type}>, candidate_titles ARRAY<STRING>, "
        "cold_start BOOLEAN, prompt_tokens INT"
    )


def render_prompts_fn(
    tokenizer_path: str,
    template_version: str,
    template_id: str,
    budget: int,
    text_max_chars: int,
    text_max_tokens: int,
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """Per user: clean intent and review, order history and candidates, fit the budget, emit a prompt row.

    Input columns: user_id, cands (array of {pos, item_id, title}), hist (array of {ts, item_id,
    title} or null), history_available, intent, review.
    """

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from instructrec_batch.prompts.budget import fit_history
        from instructrec_batch.prompts.render import UserContext
        from instructrec_batch.prompts.templates import load_templates

        tokenizer = tokenizer_for(tokenizer_path)
        count = token_counter(tokenizer)
        template = load_templates(template_version).get(template_id)

        def clean_capped(values: pd.Series) -> list[str | None]:
            return cap_tokens(tokenizer, [clean_text(v, text_max_chars) for v in values], text_max_tokens)

        for frame in batches:
            intents, reviews = clean_capped(frame["intent"]), clean_capped(frame["review"])
            rows = []
            for i, (user, cands, hist, available) in enumerate(
                zip(frame[C.USER_ID], frame["cands"], frame["hist"], frame["history_available"], strict=True)
            ):
                cands = sorted(cands, key=lambda c: c["pos"])
                titles = [c["title"] for c in cands]
                history = [] if hist is None else sorted(hist, key=lambda h: (h["ts"], h["item_id"]))
                ctx = UserContext(tuple(h["title"] for h in history), reviews[i], intents[i])
                fitted = fit_history(template, ctx, titles, count, budget)
                if fitted is None:  # excluded by check_budget on the driver; reaching here is a bug
                    raise RuntimeError(f"user {user}: prompt exceeds {budget} tokens even without history")
                ctx, tokens = fitted
                rows.append(
                    (
                        user,
                        template.template_id,
                        template.version,
                        template.task,
                        ctx.preference,
                        ctx.intent,
                        list(ctx.history),
                        len(ctx.history),
                        0 if pd.isna(available) else int(available),
                        [c[C.ITEM_ID] for c in cands],
                        titles,
                        ctx.cold_start,
                        tokens,
                    )
                )
            yield pd.DataFrame(rows, columns=PROMPT_COLUMNS)

    return run
