"""Activations on statements, separability and probes of a live model, and TPLO's allocation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from paretoprune.errors import InputError
from paretoprune.evaluators.stats import collect_stats
from paretoprune.evaluators.truth import (
    block_separability,
    probe_accuracy,
    probe_accuracy_by_block,
    separability_by_set,
    statement_activations,
    tplo_from_owl,
    tplo_sparsities,
)
from paretoprune.metrics.allocation import weighted_mean
from paretoprune.metrics.truth import mean_separability, pivot_block, separability
from paretoprune.models import find_layout
from paretoprune.testing import byte_tokenizer, tiny_model
from paretoprune.truth import TPLO_TOPICS, StatementSet, load_statements

STATEMENTS = ["The sky is blue.", "No.", "Water boils at one hundred degrees.", "Ice is cold", "A"]


@pytest.fixture(scope="module")
def llama() -> torch.nn.Module:
    return tiny_model("llama", layers=3)


@pytest.fixture(scope="module")
def tokenizer() -> object:
    return byte_tokenizer()


def alone(model: torch.nn.Module, tokenizer: object, text: str) -> list[torch.Tensor]:
    """Every block's output at the last token, running the statement by itself."""
    ids = torch.tensor([tokenizer(text)["input_ids"]])  # type: ignore[operator]
    with torch.inference_mode():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    return [state[0, -1] for state in hidden[1:]]


def marked_sets(topics: tuple[str, ...] = ("alpha", "beta", "gamma")) -> dict[str, StatementSet]:
    """True statements end in '!', false ones in '?': the last token gives the label away."""
    sets = {}
    for number, topic in enumerate(topics):
        texts = [f"{topic} claim {i * (number + 3)}" for i in range(12)]
        labels = np.array([i % 2 for i in range(12)])
        sets[topic] = StatementSet([t + ("!" if y else "?") for t, y in zip(texts, labels)], labels)
    return sets


# ----------------------------------------------------------------------------------------------
# Activations.


@pytest.mark.parametrize("family", ["llama", "gpt2", "opt"])
def test_batched_activations_equal_each_statement_run_alone(family: str, tokenizer: object) -> None:
    model = tiny_model(family, layers=3)
    batched = statement_activations(model, tokenizer, STATEMENTS, batch_size=3)
    assert batched.shape == (3, len(STATEMENTS), 64) and batched.dtype == np.float32
    for index, text in enumerate(STATEMENTS):
        single = statement_activations(model, tokenizer, [text])[:, 0]
        np.testing.assert_allclose(batched[:, index], single, atol=1e-5)


def test_activations_are_each_block_output_at_the_last_token(llama: torch.nn.Module, tokenizer: object) -> None:
    acts = statement_activations(llama, tokenizer, STATEMENTS, batch_size=2)
    for index, text in enumerate(STATEMENTS):
        reference = alone(llama, tokenizer, text)
        # hidden_states[-1] is after the final norm, so only the inner blocks compare directly.
        for block in range(2):
            np.testing.assert_allclose(acts[block, index], reference[block].numpy(), atol=1e-5)
        assert not np.allclose(acts[0, index], acts[1, index])


def test_a_left_padding_tokenizer_gives_the_same_activations(llama: torch.nn.Module) -> None:
    left = byte_tokenizer()
    left.padding_side = "left"
    np.testing.assert_allclose(
        statement_activations(llama, left, STATEMENTS, batch_size=5),
        statement_activations(llama, byte_tokenizer(), STATEMENTS, batch_size=1),
        atol=1e-5,
    )


def test_chosen_blocks_come_in_the_order_asked(llama: torch.nn.Module, tokenizer: object) -> None:
    every = statement_activations(llama, tokenizer, STATEMENTS)
    np.testing.assert_array_equal(statement_activations(llama, tokenizer, STATEMENTS, blocks=[2, 0]), every[[2, 0]])
    # Stopping after block 1 (the deepest asked for) and asking for a block twice change nothing.
    twice = statement_activations(llama, tokenizer, STATEMENTS, blocks=[1, 0, 1])
    np.testing.assert_array_equal(twice, every[[1, 0, 1]])


def test_a_block_outside_the_model_is_refused(llama: torch.nn.Module, tokenizer: object) -> None:
    with pytest.raises(InputError, match="block 3 is not one of the model's blocks 0..2"):
        statement_activations(llama, tokenizer, STATEMENTS, blocks=[3])


def test_the_hooks_are_removed_afterwards(llama: torch.nn.Module, tokenizer: object) -> None:
    blocks = find_layout(llama).blocks
    before = [dict(block.module._forward_hooks) for block in blocks]  # transformers may keep its own
    statement_activations(llama, tokenizer, STATEMENTS)
    assert [dict(block.module._forward_hooks) for block in blocks] == before


# ----------------------------------------------------------------------------------------------
# Separability and probes.


def test_block_separability_is_the_mean_profile_of_each_sets_ratios(llama: torch.nn.Module, tokenizer: object) -> None:
    sets = marked_sets()
    raw = separability_by_set(llama, tokenizer, sets, batch_size=5)
    for topic, statement_set in sets.items():
        acts = statement_activations(llama, tokenizer, statement_set.statements)
        np.testing.assert_allclose(raw[topic], [separability(a, statement_set.labels) for a in acts], rtol=1e-6)
    profile = block_separability(llama, tokenizer, sets)
    np.testing.assert_allclose(profile, mean_separability(raw), rtol=1e-6)
    assert profile.shape == (3,) and profile.sum() == pytest.approx(1.0)


def test_probes_read_a_label_the_last_token_gives_away(llama: torch.nn.Module, tokenizer: object) -> None:
    result = probe_accuracy(llama, tokenizer, marked_sets(), block=0)
    assert set(result) == {"alpha", "beta", "gamma", "mean"}
    assert result == {"alpha": 1.0, "beta": 1.0, "gamma": 1.0, "mean": 1.0}


def test_probe_accuracy_by_block_agrees_with_one_block(llama: torch.nn.Module, tokenizer: object) -> None:
    sets = marked_sets()
    sets["beta"] = StatementSet(sets["beta"].statements, 1 - sets["beta"].labels)  # mislabelled: harder
    by_block = probe_accuracy_by_block(llama, tokenizer, sets, batch_size=4)
    assert list(by_block) == [0, 1, 2]
    assert by_block[1] == pytest.approx(probe_accuracy(llama, tokenizer, sets, block=1))
    assert by_block[1]["mean"] == pytest.approx(np.mean([by_block[1][t] for t in sets]))


def test_probes_on_held_out_statements_of_each_topic(llama: torch.nn.Module, tokenizer: object) -> None:
    sets = marked_sets()
    result = probe_accuracy(llama, tokenizer, sets, block=1, split="statements")
    assert result == {"alpha": 1.0, "beta": 1.0, "gamma": 1.0, "mean": 1.0}
    with pytest.raises(InputError, match="unknown probe split 'words': use topics or statements"):
        probe_accuracy(llama, tokenizer, sets, block=1, split="words")


def test_a_probe_on_a_single_class_is_refused(llama: torch.nn.Module, tokenizer: object) -> None:
    sets = {topic: StatementSet(s.statements, np.ones(len(s), dtype=np.int64)) for topic, s in marked_sets().items()}
    with pytest.raises(InputError, match="a probe needs at least 1 true and 1 false"):
        probe_accuracy(llama, tokenizer, sets, block=0)


# ----------------------------------------------------------------------------------------------
# TPLO.


def test_tplo_from_owl_keeps_owl_before_the_pivot_and_the_exact_mean(llama: torch.nn.Module) -> None:
    layout = find_layout(llama)
    owl = {linear.name: 0.45 + 0.05 * linear.block_index for linear in layout.linears}
    profile = np.array([0.2, 0.5, 0.3])
    sparsities = tplo_from_owl(layout, owl, profile, target=0.5)
    assert list(sparsities) == layout.names
    assert weighted_mean([sparsities[n] for n in layout.names], layout.numels) == pytest.approx(0.5, abs=1e-10)
    per_block = {linear.block_index: sparsities[linear.name] for linear in layout.linears}
    assert all(sparsities[linear.name] == per_block[linear.block_index] for linear in layout.linears)
    assert pivot_block(profile) == 1
    assert per_block[1] < per_block[2]  # the pivot separates better than the block after it
    with pytest.raises(InputError, match="lack 1 linear"):
        tplo_from_owl(layout, dict(list(owl.items())[1:]), profile, target=0.5)


def test_tplo_sparsities_runs_end_to_end_at_the_exact_mean(llama: torch.nn.Module, tokenizer: object) -> None:
    layout = find_layout(llama)
    tokens = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(0))
    stats = collect_stats(llama, layout, tokens, batch_size=2)
    sparsities = tplo_sparsities(llama, layout, stats, tokenizer, marked_sets(), target=0.6)
    assert set(sparsities) == set(layout.names)
    assert weighted_mean([sparsities[n] for n in layout.names], layout.numels) == pytest.approx(0.6, abs=1e-10)


# ----------------------------------------------------------------------------------------------
# The real model.


@pytest.mark.real_model
def test_smollm2_reads_the_truth_sets_batched_as_alone(shared_data: Path) -> None:
    from paretoprune.models import load_model

    loaded = load_model("smollm2-135m")
    sets = load_statements(shared_data / "truth", TPLO_TOPICS, limit=16, seed=0)
    texts = sets["cities"].statements[:4]
    batched = statement_activations(loaded.model, loaded.tokenizer, texts, blocks=[10, 20], batch_size=4)
    single = np.stack(
        [statement_activations(loaded.model, loaded.tokenizer, [text], blocks=[10, 20])[:, 0] for text in texts], axis=1
    )
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-4)
    profile = block_separability(loaded.model, loaded.tokenizer, sets, batch_size=16)
    assert profile.shape == (30,) and profile.sum() == pytest.approx(1.0)
