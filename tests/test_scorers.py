"""Scorer math on the tiny model: shared-prefix equals the naive reference; listwise reads label logits."""

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from instructrec_batch.config import DEFAULT_TEMPLATE_VERSION as DEFAULT_VERSION
from instructrec_batch.models.base import load_causal_lm
from instructrec_batch.models.forward import last_logits, pad_id_of
from instructrec_batch.prompts.encoding import label_ids, listwise_inputs, pointwise_inputs, yes_no_ids
from instructrec_batch.prompts.render import UserContext, render_listwise, render_pointwise
from instructrec_batch.prompts.templates import load_templates
from instructrec_batch.scoring.scorers import (
    Listwise,
    ModelHandle,
    NaivePointwise,
    OnePassPointwise,
    ScoringPrompt,
    SharedPrefixPointwise,
)

TEMPLATES = load_templates(DEFAULT_VERSION)


@pytest.fixture(scope="module")
def handle(tiny_model_dir) -> ModelHandle:
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return ModelHandle(load_causal_lm(tiny_model_dir), tokenizer, pad_id_of(tokenizer))


def _prompts(task: str) -> list[ScoringPrompt]:
    """Users with very different prefix lengths and candidate titles of different lengths."""
    template = TEMPLATES.get(f"{task}-0")
    long_history = tuple(f"star wars love story number {i}" for i in range(25))
    return [
        ScoringPrompt(template, UserContext(long_history, intent="a comedy"), ("toy story", "war", "night city king")),
        ScoringPrompt(template, UserContext(), ("a", "dream of the king and the city at night", "love")),
        ScoringPrompt(template, UserContext(("toy story",)), tuple(f"movie {i}" * (i + 1) for i in range(7))),
    ]


def test_shared_prefix_equals_naive_within_1e4(handle: ModelHandle) -> None:
    prompts = _prompts("pointwise")
    naive = NaivePointwise(handle, batch_size=5).score(prompts)  # batches mix users and lengths
    shared = SharedPrefixPointwise(handle, batch_size=2).score(prompts)  # several suffix batches per user
    assert [len(s) for s in shared] == [3, 3, 7]
    for a, b in zip(naive, shared, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
    assert np.ptp(np.concatenate(naive)) > 1e-3  # scores actually differ across candidates


@pytest.mark.parametrize("max_batch_tokens", [64, 8192])  # one user per forward / all users in one forward
def test_one_pass_equals_naive_within_1e4(handle: ModelHandle, max_batch_tokens: int) -> None:
    prompts = _prompts("pointwise")
    naive = NaivePointwise(handle, batch_size=5).score(prompts)
    onepass = OnePassPointwise(handle, batch_size=8, max_batch_tokens=max_batch_tokens).score(prompts)
    assert [len(s) for s in onepass] == [3, 3, 7]
    for a, b in zip(naive, onepass, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)


def test_one_pass_mask_keeps_suffixes_apart(handle: ModelHandle) -> None:
    """Changing one candidate's title changes that candidate's score only."""
    template = TEMPLATES.get("pointwise-0")
    ctx = UserContext(("toy story", "star wars"))
    scorer = OnePassPointwise(handle, batch_size=4)
    before = scorer.score([ScoringPrompt(template, ctx, ("love", "war", "night city"))])[0]
    after = scorer.score([ScoringPrompt(template, ctx, ("love", "the king of the city", "night city"))])[0]
    np.testing.assert_allclose(before[[0, 2]], after[[0, 2]], atol=1e-5, rtol=0)
    assert abs(before[1] - after[1]) > 1e-4


def test_naive_scores_equal_single_unpadded_forwards(handle: ModelHandle) -> None:
    prompt = _prompts("pointwise")[1]
    yes, no = yes_no_ids(handle.tokenizer, prompt.template)
    prefix, suffixes = pointwise_inputs(
        handle.tokenizer, render_pointwise(prompt.template, prompt.context, prompt.candidates)
    )
    expected = []
    with torch.inference_mode():
        for suffix in suffixes:
            logits = handle.model(input_ids=torch.tensor([prefix + suffix])).logits[0, -1]
            expected.append((logits[yes] - logits[no]).item())
    np.testing.assert_allclose(NaivePointwise(handle, batch_size=3).score([prompt])[0], expected, atol=1e-4)


def test_listwise_scores_are_label_logits(handle: ModelHandle) -> None:
    prompts = _prompts("listwise")
    scores = Listwise(handle, batch_size=2).score(prompts)
    assert [len(s) for s in scores] == [3, 3, 7]
    prompt = prompts[2]
    rendered = render_listwise(prompt.template, prompt.context, prompt.candidates)
    with torch.inference_mode():
        logits = last_logits(handle.model, [listwise_inputs(handle.tokenizer, rendered)], handle.pad_id)[0]
    expected = logits[label_ids(handle.tokenizer, rendered.labels)].numpy()
    np.testing.assert_allclose(scores[2], expected, atol=1e-4)
