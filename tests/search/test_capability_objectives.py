"""A search with the probe and passkey objectives: prepared once on the driver, scored by an actor."""

from __future__ import annotations

from pathlib import Path

import pytest

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
from paretoprune.evaluators.remote import RemoteEvaluator
from paretoprune.metrics.scores import KNOWN_METRICS
from paretoprune.models import load_model
from paretoprune.pruning import layer_sparsities
from paretoprune.search.config import load_config
from paretoprune.search.inputs import prepare
from paretoprune.testing import save_tiny_model, tiny_model
from paretoprune.truth import TPLO_TOPICS


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama-long")
    save_tiny_model(folder, tiny_model("llama", max_position_embeddings=1024))  # room for 512-token passkey prompts
    return folder


@pytest.fixture(scope="module")
def truth_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("truth")
    for topic in TPLO_TOPICS:
        rows = [f"The claim {topic} {i} is {'right' if i % 2 else 'wrong'}.,{i % 2}" for i in range(12)]
        (folder / f"{topic}.csv").write_text("statement,label\n" + "\n".join(rows) + "\n")
    return folder


def config(model_dir: Path, tmp_path: Path, **extra):
    return load_config({"model": str(model_dir), "out": str(tmp_path / "run"), "nsamples": 2, "seqlen": 32,
                        "sparsity": 0.5, "objectives": ["kl", "probe", "passkey"], **extra})  # fmt: skip


def test_prepared_inputs_reach_the_actor_and_describe_themselves(model_dir: Path, truth_dir: Path, tmp_path: Path) -> None:
    inputs = prepare(config(model_dir, tmp_path, truth_dir=str(truth_dir)))
    capabilities = inputs.evaluator.capabilities
    assert capabilities is not None and capabilities.probe is not None and capabilities.passkey is not None
    assert set(capabilities.probe.topics) == set(TPLO_TOPICS) and len(capabilities.passkey.prompts) == 2 * 3 * 2
    fitness = inputs.provenance.fitness
    assert fitness["probe"]["statements"] == {topic: 12 for topic in TPLO_TOPICS} and fitness["probe"]["split"] == "topics"
    assert fitness["passkey"]["lengths"] == [256, 512] and fitness["passkey"]["trials"] == 2
    actor = RemoteEvaluator(inputs.evaluator)
    names = inputs.layout.names
    values = actor.evaluate(Candidate(metric=KNOWN_METRICS["wanda"], sparsities={name: 0.5 for name in names}))
    assert set(values) == {"kl", "probe", "passkey"}
    assert 0.0 <= values["probe"] <= 1.0 and values["passkey"] * 12 == pytest.approx(round(values["passkey"] * 12))


def test_the_probe_split_setting_reaches_the_probe_inputs(model_dir: Path, truth_dir: Path, tmp_path: Path) -> None:
    chosen = config(model_dir, tmp_path, truth_dir=str(truth_dir), probe_split="statements", objectives=["probe"])
    capabilities = prepare(chosen).evaluator.capabilities
    assert capabilities is not None and capabilities.probe is not None and capabilities.probe.split == "statements"
    with pytest.raises(InputError, match="unknown probe split 'words'"):
        prepare(config(model_dir, tmp_path, truth_dir=str(truth_dir), probe_split="words"))


def test_the_probe_objective_without_statements_says_how_to_give_them(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PARETOPRUNE_TRUTH_DIR", raising=False)
    with pytest.raises(InputError, match="pass --truth-dir DIR"):
        prepare(config(model_dir, tmp_path))


def test_given_statements_a_layerwise_search_starts_from_tplo_too(model_dir: Path, truth_dir: Path, tmp_path: Path) -> None:
    inputs = prepare(config(model_dir, tmp_path, truth_dir=str(truth_dir), objectives=["kl"]))
    baselines = inputs.space.baselines()
    assert {"wanda", "owl-wanda", "tplo-wanda"} <= set(baselines)
    tplo = inputs.space.decode(baselines["tplo-wanda"])
    loaded = load_model(str(model_dir))
    expected = layer_sparsities(inputs.layout, 0.5, "tplo", inputs.evaluator.stats, model=loaded.model,
                                tokenizer=loaded.tokenizer, truth_dir=truth_dir)  # fmt: skip
    assert tplo.sparsities == pytest.approx(expected, abs=1e-9) and tplo.sparsities != inputs.space.decode(
        baselines["owl-wanda"]).sparsities
    without = prepare(config(model_dir, tmp_path, objectives=["kl"]))
    assert "tplo-wanda" not in without.space.baselines()
