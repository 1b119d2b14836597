"""Model inputs from rendered prompts: the one definition used by training and by every scorer.

A pointwise input is tokens(prefix) + tokens(suffix) and a listwise input tokens(text), always
without special tokens; the answer is the next token after the last input token. Answer tokens are
looked up in the tokenizer (never hard-coded) and must be single tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from instructrec_batch.errors import ConfigError
from instructrec_batch.prompts.render import ListwisePrompt, PointwisePrompt
from instructrec_batch.prompts.templates import Template


def encode(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    backend = tokenizer.backend_tokenizer
    return [enc.ids for enc in backend.encode_batch(list(texts), add_special_tokens=False)]


def single_token(tokenizer: Any, text: str) -> int:
    ids = encode(tokenizer, [text])[0]
    if len(ids) != 1:
        raise ConfigError(
            f"answer {text!r} is {len(ids)} tokens in this tokenizer ({ids}); the templates need single-token "
            "answers: pick another template version or base model"
        )
    return ids[0]


def yes_no_ids(tokenizer: Any, template: Template) -> tuple[int, int]:
    return single_token(tokenizer, template.positive), single_token(tokenizer, template.negative)


def label_ids(tokenizer: Any, labels: Sequence[str]) -> list[int]:
    """Token ids of the listwise answers: each label as it follows the cue (" A", " B", ...)."""
    return [single_token(tokenizer, " " + label) for label in labels]


def pointwise_inputs(tokenizer: Any, prompt: PointwisePrompt) -> tuple[list[int], list[list[int]]]:
    """(prefix ids, per-candidate suffix ids); a candidate's input is prefix + its suffix."""
    prefix, *suffixes = encode(tokenizer, [prompt.prefix, *prompt.suffixes])
    return prefix, suffixes


def listwise_inputs(tokenizer: Any, prompt: ListwisePrompt) -> list[int]:
    return encode(tokenizer, [prompt.text])[0]
