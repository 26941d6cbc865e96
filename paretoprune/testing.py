"""Tiny real models and a byte tokenizer, built offline, for tests and quick experiments.

The models are genuine transformers models of each supported family, only small and randomly
initialised, so code paths are the real ones while a test runs in milliseconds.
"""

from __future__ import annotations

from typing import Any

from pathlib import Path

import torch

__all__ = ["FAMILIES", "TINY_VOCAB", "byte_tokenizer", "save_tiny_model", "tiny_model", "write_statement_sets"]

# Byte tokens, then end-of-sequence and padding; rounded up so every family accepts it.
TINY_VOCAB = 320
_EOS, _PAD = "<eos>", "<pad>"

FAMILIES = ("llama", "mistral", "qwen2", "gemma3", "opt", "gpt2")


def _config(family: str, layers: int, hidden: int, **overrides: Any) -> Any:
    import transformers as tf

    common = dict(vocab_size=TINY_VOCAB, max_position_embeddings=512)
    llama_like = dict(
        common,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    builders = {
        "llama": lambda: tf.LlamaConfig(**llama_like),
        "mistral": lambda: tf.MistralConfig(**llama_like, sliding_window=None),
        "qwen2": lambda: tf.Qwen2Config(**llama_like),
        "gemma3": lambda: tf.Gemma3TextConfig(**llama_like, head_dim=hidden // 4),
        "opt": lambda: tf.OPTConfig(
            **common,
            hidden_size=hidden,
            ffn_dim=2 * hidden,
            num_hidden_layers=layers,
            num_attention_heads=4,
            word_embed_proj_dim=hidden,
        ),
        "gpt2": lambda: tf.GPT2Config(
            vocab_size=TINY_VOCAB,
            n_positions=512,
            n_embd=hidden,
            n_layer=layers,
            n_head=4,
            bos_token_id=TINY_VOCAB - 2,
            eos_token_id=TINY_VOCAB - 2,
        ),
    }
    if family not in builders:
        raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")
    config = builders[family]()
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def tiny_model(
    family: str = "llama", seed: int = 0, layers: int = 2, hidden: int = 64, **overrides: Any
) -> Any:
    """A small randomly initialised causal LM of the given family, fp32, in eval mode."""
    from transformers import AutoModelForCausalLM

    config = _config(family, layers, hidden, **overrides)
    config.pad_token_id = TINY_VOCAB - 1
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


def save_tiny_model(folder: Path, model: Any = None) -> Path:
    """Save ``model`` (default: ``tiny_model()``) with the byte tokenizer into ``folder``, so that
    commands can load it by path as they load any checkpoint; returns ``folder``."""
    (model if model is not None else tiny_model()).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder


def byte_tokenizer() -> Any:
    """A byte-level tokenizer (one token per UTF-8 byte) that needs no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: index for index, symbol in enumerate(alphabet)}
    vocab[_EOS] = TINY_VOCAB - 2
    vocab[_PAD] = TINY_VOCAB - 1
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=_EOS, pad_token=_PAD)


def write_statement_sets(folder: Path, per_topic: int = 12) -> Path:
    """The statement sets TPLO's probes read (its four topics, true and false alternating), small
    enough for a tiny model; returns ``folder``."""
    from paretoprune.truth import TPLO_TOPICS

    folder.mkdir(parents=True)
    for topic in TPLO_TOPICS:
        rows = [f"Statement {i} about {topic} is {'true' if i % 2 else 'false'}.,{i % 2}" for i in range(per_topic)]
        (folder / f"{topic}.csv").write_text("statement,label\n" + "\n".join(rows) + "\n")
    return folder
