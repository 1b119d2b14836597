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


class MemoCounter:
    """A token counter that remembers lengths by text.

    Warmed with every user's full prefix and every candidate suffix of an Arrow batch in one batched
    (parallel, Rust-side) encode, so the per-user budget check mostly reads lengths from the dict;
    only the binary-search trials of users over budget reach the tokenizer again. Candidate suffixes
    repeat across users (they depend on the item only), which the memo also exploits.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._count = token_counter(tokenizer)
        self._lengths: dict[str, int] = {}

    def warm(self, texts: Sequence[str]) -> None:
        missing = [t for t in dict.fromkeys(texts) if t not in self._lengths]
        if missing:
            self._lengths.update(zip(missing, self._count(missing), strict=True))

    def __call__(self, texts: Sequence[str]) -> list[int]:
        self.warm(texts)
        return [self._lengths[t] for t in texts]

    def clear(self) -> None:
        self._lengths.clear()


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
        f"preference_text STRING, intention_text STRING, history_titles ARRAY<STRING>, "
        f"history_item_ids ARRAY<{item_type}>, history_len INT, "
        f"history_available BIGINT, candidate_ids ARRAY<{item_type}>, candidate_titles ARRAY<STRING>, "
        "cold_start BOOLEAN, prompt_tokens INT"
    )


def shown_candidates(template: Any, cands: Sequence[dict]) -> list[str]:
    """Each candidate as the template shows it: its title, plus the evidence note when the template
    has one (the cands structs then carry the EVIDENCE_NOTE_COLUMNS)."""
    from instructrec_batch.prompts.render import candidate_text

    top, linked = C.EVIDENCE_NOTE_COLUMNS
    return [candidate_text(template, c[C.TITLE], c.get(top), c.get(linked)) for c in cands]


def warmup_texts(users: Sequence[tuple[Any, list[dict], Any, list[dict]]]) -> list[str]:
    """Every text the budget check of these users will count first: full prompts or prefix + suffixes."""
    from instructrec_batch.prompts.render import render_listwise, render_pointwise

    texts: list[str] = []
    for template, cands, ctx, _ in users:
        titles = shown_candidates(template, cands)
        if template.task == "pointwise":
            prompt = render_pointwise(template, ctx, titles)
            texts.append(prompt.prefix)
            texts.extend(prompt.suffixes)
        else:
            texts.append(render_listwise(template, ctx, titles).text)
    return texts


def render_prompts_fn(
    tokenizer_path: str,
    template_version: str,
    template_id: str,
    budget: int,
    text_max_chars: int,
    text_max_tokens: int,
    passthrough: Sequence[str] = (),
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """Per row: clean intent and review, order history and candidates, fit the budget, emit a prompt row.

    Input columns: user_id, cands (array of {pos, item_id, title}, plus EVIDENCE_NOTE_COLUMNS for a
    template that shows evidence), hist (array of {ts, item_id,
    title} or null), history_available, intent, review; optionally template_id (per-row template,
    as training uses; else `template_id`) and the `passthrough` columns, copied to the output after
    PROMPT_COLUMNS. Scoring prompts and training examples both go through this function, which is
    what makes their text byte-identical for the same user, history and template.
    """

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from instructrec_batch.prompts.budget import fit_history
        from instructrec_batch.prompts.render import UserContext
        from instructrec_batch.prompts.templates import load_templates

        tokenizer = tokenizer_for(tokenizer_path)
        count = MemoCounter(tokenizer)
        templates = load_templates(template_version)

        def clean_capped(values: pd.Series) -> list[str | None]:
            return cap_tokens(tokenizer, [clean_text(v, text_max_chars) for v in values], text_max_tokens)

        for frame in batches:
            intents, reviews = clean_capped(frame["intent"]), clean_capped(frame["review"])
            ids = frame["template_id"] if "template_id" in frame else [template_id] * len(frame)
            users = []
            for i, (tid, cands, hist) in enumerate(zip(ids, frame["cands"], frame["hist"], strict=True)):
                cands = sorted(cands, key=lambda c: c["pos"])
                history = [] if hist is None else sorted(hist, key=lambda h: (h["ts"], h["item_id"]))
                ctx = UserContext(tuple(h["title"] for h in history), reviews[i], intents[i])
                users.append((templates.get(tid), cands, ctx, history))
            count.clear()
            count.warm(warmup_texts(users))
            rows = []
            for user, available, (template, cands, ctx, hists) in zip(
                frame[C.USER_ID], frame["history_available"], users, strict=True
            ):
                titles = shown_candidates(template, cands)
                fitted = fit_history(template, ctx, titles, count, budget)
                if fitted is None:  # excluded by check_budget on the driver; reaching here is a bug
                    raise RuntimeError(f"user {user}: prompt exceeds {budget} tokens even without history")
                ctx, tokens = fitted
                kept_ids = [h[C.ITEM_ID] for h in hists[len(hists) - len(ctx.history) :]] if ctx.history else []
                rows.append(
                    (
                        user,
                        template.template_id,
                        template.version,
                        template.task,
                        ctx.preference,
                        ctx.intent,
                        list(ctx.history),
                        kept_ids,
                        len(ctx.history),
                        0 if pd.isna(available) else int(available),
                        [c[C.ITEM_ID] for c in cands],
                        titles,
                        ctx.cold_start,
                        tokens,
                    )
                )
            out = pd.DataFrame(rows, columns=PROMPT_COLUMNS)
            for column in passthrough:
                out[column] = frame[column].to_numpy()
            yield out

    return run
