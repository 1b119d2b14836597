"""The one prompt renderer, shared by training and scoring so both see byte-identical text.

Input is already-cleaned text (see sanitize.py). A pointwise prompt is a user prefix plus one
suffix per candidate (with a v4 template a user's request is repeated in each suffix); the model
input is tokens(prefix) + tokens(suffix), which is what lets the scorer encode the prefix once and
reuse its KV cache. A listwise prompt is one text whose answer is
one of the index labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from instructrec_batch import contracts as C
from instructrec_batch.errors import ConfigError
from instructrec_batch.prompts.templates import Template


@dataclass(frozen=True)
class UserContext:
    """What an instruction says about one user. All text is sanitised and single-line."""

    history: tuple[str, ...] = ()  # item titles, oldest first
    preference: str | None = None  # explicit preference in the user's words (latest review)
    intent: str | None = None  # latest stated intention
    taste: str | None = None  # the categories most frequent across the whole history, with their shares

    @property
    def cold_start(self) -> bool:
        return not self.history and not self.intent and not self.preference


def context_of(row: Any) -> UserContext:
    """The UserContext stored in a `prompts`-shaped row (scoring prompts and training examples alike).
    Prompts written before the taste line existed have no taste_text column: they read as no taste."""
    history = () if row.history_titles is None else tuple(row.history_titles)
    return UserContext(history, row.preference_text, row.intention_text, getattr(row, C.TASTE_TEXT, None))


@dataclass(frozen=True)
class PointwisePrompt:
    prefix: str
    suffixes: tuple[str, ...]

    def text(self, i: int) -> str:
        return self.prefix + self.suffixes[i]


@dataclass(frozen=True)
class ListwisePrompt:
    text: str
    labels: tuple[str, ...]


def context_block(template: Template, ctx: UserContext) -> str:
    """Header, preference, intention and question lines: the part shared by all of a user's candidates."""
    lines = [template.header]
    if ctx.history:
        history = "\n".join(template.history_line.format(title=title) for title in ctx.history)
        lines.append(template.preference_implicit.format(history=history))
        if ctx.taste and template.taste:
            lines.append(template.taste.format(taste=ctx.taste))
    if ctx.preference:
        lines.append(template.preference_explicit.format(preference=ctx.preference))
    if ctx.intent:
        lines.append(template.intention.format(intent=ctx.intent))
    if ctx.cold_start:
        lines.append(template.no_context)
    if template.evidence_intro:
        lines.append(template.evidence_intro)
    if template.question:
        lines.append(template.question)
    return "\n".join(lines) + "\n"


def render_pointwise(template: Template, ctx: UserContext, candidates: Sequence[str]) -> PointwisePrompt:
    if template.task != "pointwise":
        raise ConfigError(f"template {template.template_id} is {template.task}, not pointwise")
    body = template.intent_body if template.intent_body and ctx.intent else template.body
    suffixes = tuple(body.format(candidate=title, intent=ctx.intent) for title in candidates)
    return PointwisePrompt(prefix=context_block(template, ctx), suffixes=suffixes)


def render_listwise(template: Template, ctx: UserContext, candidates: Sequence[str]) -> ListwisePrompt:
    if template.task != "listwise":
        raise ConfigError(f"template {template.template_id} is {template.task}, not listwise")
    if len(candidates) > len(template.labels):
        raise ConfigError(
            f"listwise prompts take at most {len(template.labels)} candidates per user, got {len(candidates)}; "
            "cut the candidate lists or use the pointwise task form"
        )
    labels = template.labels[: len(candidates)]
    block = "\n".join(
        template.candidate_line.format(label=lab, title=t) for lab, t in zip(labels, candidates, strict=True)
    )
    return ListwisePrompt(text=context_block(template, ctx) + template.body.format(candidates=block), labels=labels)


def candidate_text(template: Template, title: str, popularity_top: int | None, linked: int | None) -> str:
    """How a candidate is shown: its title, and with a v3 template the evidence note in the template's
    words. `popularity_top` is the item's popularity bucket (top percent, 100 = the rest) and `linked`
    how many of the user's recent items it co-occurs with; missing evidence reads as none."""
    if not template.shows_evidence:
        return title
    top = 100 if popularity_top is None else int(popularity_top)
    words = next((w for p, w in template.popularity_words if top <= p), template.popularity_words[-1][1])
    count = 0 if linked is None else int(linked)
    return template.evidence_candidate.format(title=title, popularity=words, linked=count)
