"""Token budgets measured with the real tokenizer.

History is the only part that gives way: the newest items that fit are kept (cut from the oldest
side); the instruction, the candidates and the answer cue are never cut. When even an empty history
does not fit, `fit_history` returns None: the prompts job checks a worst-case prompt on the driver
before any work (`check_budget`), so a user reaching that point is a bug and the job raises rather than
emit an over-long prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from instructrec_batch.prompts.render import UserContext, context_block, render_listwise, render_pointwise
from instructrec_batch.prompts.templates import Template

# Token counts of a batch of texts (no special tokens), e.g. from a fast tokenizer.
TokenCounter = Callable[[Sequence[str]], list[int]]


def prompt_tokens(template: Template, ctx: UserContext, candidates: Sequence[str], count: TokenCounter) -> int:
    """Length of the longest model input this user produces: prefix + longest candidate, or the list."""
    return prompt_lengths([(template, ctx, candidates)], count)[0]


def prompt_lengths(users: Sequence[tuple[Template, UserContext, Sequence[str]]], count: TokenCounter) -> list[int]:
    """prompt_tokens of many users, rendered once and counted in one call of `count` (one batched
    tokenizer call for a whole Arrow batch, instead of one per user)."""
    texts: list[str] = []
    spans: list[tuple[int, int]] = []
    for template, ctx, candidates in users:
        start = len(texts)
        if template.task == "pointwise":
            prompt = render_pointwise(template, ctx, candidates)
            texts += [prompt.prefix, *prompt.suffixes]
        else:
            texts.append(render_listwise(template, ctx, candidates).text)
        spans.append((start, len(texts)))
    counts = count(texts)
    return [counts[start] + max(counts[start + 1 : end], default=0) for start, end in spans]


def _length_fn(
    template: Template, intent: str | None, candidates: Sequence[str], count: TokenCounter
) -> Callable[[UserContext], int]:
    """prompt_tokens for a fixed candidate list and intent. Pointwise inputs are tokens(prefix) +
    tokens(suffix), so the longest suffix is counted once and only the prefix is re-encoded per trial."""
    if template.task == "pointwise":
        suffixes = render_pointwise(template, UserContext(intent=intent), candidates).suffixes
        longest_suffix = max(count(list(suffixes)), default=0)
        return lambda ctx: count([context_block(template, ctx)])[0] + longest_suffix
    return lambda ctx: count([render_listwise(template, ctx, candidates).text])[0]


def fit_history(
    template: Template, ctx: UserContext, candidates: Sequence[str], count: TokenCounter, budget: int
) -> tuple[UserContext, int] | None:
    """Keep the longest newest-suffix of the history that fits `budget` tokens; None if nothing fits.

    Token count grows with every history item kept, so a binary search over how many to keep finds
    the exact cut in O(log n) tokenizations.
    """
    length = _length_fn(template, ctx.intent, candidates, count)
    full = length(ctx)
    if full <= budget:
        return ctx, full
    history = ctx.history
    lo, hi = 0, len(history) - 1  # how many to keep lies in [lo, hi]; all of them is known not to fit
    best: tuple[UserContext, int] | None = None
    while lo <= hi:
        keep = (lo + hi) // 2
        trial = replace(ctx, history=history[len(history) - keep :])
        tokens = length(trial)
        if tokens <= budget:
            best, lo = (trial, tokens), keep + 1
        else:
            hi = keep - 1
    return best
