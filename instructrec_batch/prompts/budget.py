"""Token budgets measured with the real tokenizer.

History is the only part that gives way: the newest items that fit are kept (cut from the oldest
side); the instruction, the candidates and the answer cue are never cut. When even an empty history
does not fit, the caller rejects the user rather than emit an over-long prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from instructrec_batch.prompts.render import UserContext, render_listwise, render_pointwise
from instructrec_batch.prompts.templates import Template

# Token counts of a batch of texts (no special tokens), e.g. from a fast tokenizer.
TokenCounter = Callable[[Sequence[str]], list[int]]


def prompt_tokens(template: Template, ctx: UserContext, candidates: Sequence[str], count: TokenCounter) -> int:
    """Length of the longest model input this user produces: prefix + longest candidate, or the list."""
    if template.task == "pointwise":
        prompt = render_pointwise(template, ctx, candidates)
        prefix, *suffixes = count([prompt.prefix, *prompt.suffixes])
        return prefix + max(suffixes, default=0)
    return count([render_listwise(template, ctx, candidates).text])[0]


def fit_history(
    template: Template, ctx: UserContext, candidates: Sequence[str], count: TokenCounter, budget: int
) -> tuple[UserContext, int] | None:
    """Keep the longest newest-suffix of the history that fits `budget` tokens; None if nothing fits.

    Token count grows with every history item kept, so a binary search over how many to keep finds
    the exact cut in O(log n) tokenizations.
    """
    full = prompt_tokens(template, ctx, candidates, count)
    if full <= budget:
        return ctx, full
    history = ctx.history
    lo, hi = 0, len(history) - 1  # keep count in [lo, hi]; len(history) is known not to fit
    best: tuple[UserContext, int] | None = None
    while lo <= hi:
        keep = (lo + hi) // 2
        trial = replace(ctx, history=history[len(history) - keep :])
        tokens = prompt_tokens(template, trial, candidates, count)
        if tokens <= budget:
            best, lo = (trial, tokens), keep + 1
        else:
            hi = keep - 1
    return best
