"""The versioned template registry: instruction text lives in templates/<version>.yaml, not in code.

`load_templates("v2")` returns every template of that version; a template id is `<task>-<k>` and
picks paraphrase k of each part. Loading checks the layout rules the renderer and scorers rely on,
so a bad edit to the YAML fails at start-up rather than producing odd prompts at night.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal

import yaml

from instructrec_batch.errors import ConfigError

TaskForm = Literal["pointwise", "listwise"]
TASK_FORMS: tuple[TaskForm, ...] = ("pointwise", "listwise")
ANSWER_CUE = "Answer:"


@dataclass(frozen=True)
class Template:
    """One fully specified instruction template (one paraphrase of every part)."""

    template_id: str
    version: str
    task: TaskForm
    header: str
    preference_implicit: str
    preference_explicit: str
    intention: str
    no_context: str
    history_line: str
    candidate_line: str
    body: str  # pointwise: the per-candidate question; listwise: the candidate block and question
    labels: tuple[str, ...]
    positive: str
    negative: str
    question: str = ""  # optional last line of the user part (pointwise: asked once, not per candidate)
    taste: str = ""  # optional line with the user's most frequent categories ({taste}); "" = the version has none
    # Collaborative evidence in words (v3): a line before the question, how a candidate is shown
    # ({title}, {popularity}, {linked}) and the words of each popularity bucket (top percent).
    evidence_intro: str = ""
    evidence_candidate: str = "{title}"
    popularity_words: tuple[tuple[int, str], ...] = ()
    # Pointwise (v4): the per-candidate suffix when the user stated an intention, with {intent} next to
    # {candidate}; "" = the request is shown once, above the candidates (`body` for every user).
    intent_body: str = ""

    @property
    def shows_evidence(self) -> bool:
        return bool(self.popularity_words)


@dataclass(frozen=True)
class TemplateSet:
    version: str
    templates: dict[str, Template]

    def get(self, template_id: str) -> Template:
        if template_id not in self.templates:
            allowed = ", ".join(sorted(self.templates))
            raise ConfigError(
                f"prompt.template_id '{template_id}' is not in template version {self.version}; allowed: {allowed}"
            )
        return self.templates[template_id]

    def ids(self, task: TaskForm) -> list[str]:
        return sorted(t for t, tpl in self.templates.items() if tpl.task == task)


def _check(template: Template) -> None:
    placeholder = "{candidate}" if template.task == "pointwise" else "{candidates}"
    if placeholder not in template.body or not template.body.endswith(ANSWER_CUE):
        raise ConfigError(
            f"template {template.template_id}: body must contain {placeholder} and end with {ANSWER_CUE!r}"
        )
    if template.intent_body and not (
        "{candidate}" in template.intent_body
        and "{intent}" in template.intent_body
        and template.intent_body.endswith(ANSWER_CUE)
    ):
        raise ConfigError(
            f"template {template.template_id}: pointwise_candidate_with_intent must contain {{intent}} and "
            f"{{candidate}} and end with {ANSWER_CUE!r}"
        )
    for name in (
        "preference_implicit",
        "preference_explicit",
        "intention",
        "history_line",
        "candidate_line",
        "question",
        "taste",
    ):
        if ANSWER_CUE in getattr(template, name):
            raise ConfigError(f"template {template.template_id}: {name} must not contain the answer cue")
    if template.taste and "{taste}" not in template.taste:
        raise ConfigError(f"template {template.template_id}: taste must contain {{taste}}")
    if template.shows_evidence:
        for field in ("{title}", "{popularity}", "{linked}"):
            if field not in template.evidence_candidate:
                raise ConfigError(f"template {template.template_id}: evidence.candidate must contain {field}")


@cache
def load_templates(version: str) -> TemplateSet:
    """Read and validate templates/<version>.yaml from the installed package."""
    source = resources.files("instructrec_batch") / "templates" / f"{version}.yaml"
    if not source.is_file():
        raise ConfigError(f"prompt.template_version '{version}' has no file templates/{version}.yaml")
    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    templates: dict[str, Template] = {}
    evidence = raw.get("evidence") or {}
    for task in TASK_FORMS:
        body = raw["pointwise_candidate"] if task == "pointwise" else raw["listwise_candidates"]
        questions = (raw.get("question") or {}).get(task) or []
        tastes = raw.get("taste") or []
        with_intent = (raw.get("pointwise_candidate_with_intent") or []) if task == "pointwise" else []
        parts = [
            raw["header"][task],
            raw["preference_implicit"],
            raw["preference_explicit"],
            raw["intention"],
            raw["no_context"],
            body,
            *([questions] if questions else []),
            *([tastes] if tastes else []),
            *([with_intent] if with_intent else []),
        ]
        for k in range(min(len(p) for p in parts)):
            template = Template(
                template_id=f"{task}-{k}",
                version=raw["version"],
                task=task,
                header=raw["header"][task][k],
                preference_implicit=raw["preference_implicit"][k],
                preference_explicit=raw["preference_explicit"][k],
                intention=raw["intention"][k],
                no_context=raw["no_context"][k],
                history_line=raw["history_line"],
                candidate_line=raw["candidate_line"],
                body=body[k],
                labels=tuple(raw["labels"]),
                positive=raw["answers"]["positive"],
                negative=raw["answers"]["negative"],
                question=questions[k] if questions else "",
                taste=tastes[k] if tastes else "",
                evidence_intro=evidence.get("intro", ""),
                evidence_candidate=evidence.get("candidate", "{title}"),
                popularity_words=tuple(sorted((int(p), str(w)) for p, w in (evidence.get("popularity") or {}).items())),
                intent_body=with_intent[k] if with_intent else "",
            )
            _check(template)
            templates[template.template_id] = template
    return TemplateSet(version=raw["version"], templates=templates)
