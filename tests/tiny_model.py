"""A tiny random Llama and a byte-level BPE tokenizer trained offline: what unit tests load instead of a hub model."""

from __future__ import annotations

from pathlib import Path

from instructrec_batch.prompts.templates import load_templates

_WORDS = (
    "the user item items movie film recent history enjoy like candidate answer yes no recommend choose "
    "next letter option comedy drama action adventure star wars toy story love night day war city king "
    "dream looking for want need new say said taste comment own words list order consumed engaged lately"
).split()


def _corpus() -> list[str]:
    templates = load_templates("v1")  # fixed, so the tiny vocabulary never changes with the default
    lines = []
    for template in templates.templates.values():
        lines += [
            template.header,
            template.preference_implicit,
            template.intention,
            template.body,
            template.preference_explicit,
            template.no_context,
            " Yes",
            " No",
        ]
        # Repeated so BPE merges every answer (" Yes", " No", " A".." Z") into one token, as in real vocabularies.
        lines += [f'({label}) "x" Answer: {label}' for label in template.labels] * 20
        lines += [f"Answer:{template.positive}", f"Answer:{template.negative}"] * 20
    lines += [" ".join(_WORDS[i:] + _WORDS[:i]) for i in range(len(_WORDS))]
    return lines


def build_tiny_model(folder: Path, *, vocab_size: int = 512, hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Save a tokenizer and a random LlamaForCausalLM (safetensors) into `folder` and return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.save_pretrained(folder)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    return folder
