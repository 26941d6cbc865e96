"""The finalist stage end to end: a tiny real model, a real local Ray cluster, through the CLI."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from paretoprune.cli import main
from paretoprune.data import calibration_windows, held_out_windows
from paretoprune.models import find_layout, load_model
from paretoprune.pruning import prune_model
from paretoprune.recipe import load_recipe
from paretoprune.search.archive import Archive, candidate_of
from paretoprune.search.finalists import applied_inputs
from paretoprune.search.run import FRONT_TABLE, Run
from paretoprune.testing import save_tiny_model, tiny_model

pytestmark = pytest.mark.ray

ENV = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", TOKENIZERS_PARALLELISM="false")
SEED, SEQLEN, STATS = 3, 64, (6, 96)  # the search's seed, window length and statistics windows
FIDELITY = "512+update"  # 8 finalist windows of 64 tokens, pruned with SparseGPT's update


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    save_tiny_model(folder, tiny_model("llama", layers=3))
    return folder


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "paretoprune", *args], env=ENV, capture_output=True, text=True,
                          timeout=240)  # fmt: skip


def _json(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _kl_as_applied(model_dir: Path, run_dir: Path, candidate_row: pd.Series) -> float:
    """The finalist's error measured independently: prune a fresh copy with prune_model, then
    the mean next-token KL against the dense model on the finalist windows."""
    loaded = load_model(str(model_dir), dtype="float32")
    dense = loaded.model
    calibration = calibration_windows(loaded.tokenizer, "builtin", STATS[0], STATS[1], SEED)
    config = Run.open(run_dir).config
    held = applied_inputs(config, 512 // SEQLEN)
    tokens = held_out_windows(loaded.tokenizer, "builtin", held.windows, SEQLEN, held.seed, held.held_out)
    pruned = copy.deepcopy(dense)
    prune_model(pruned, find_layout(pruned), candidate_of(candidate_row), calibration, progress=False)
    with torch.inference_mode():
        p = torch.log_softmax(dense(input_ids=tokens).logits.double(), dim=-1)
        q = torch.log_softmax(pruned(input_ids=tokens).logits.double(), dim=-1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def test_search_finalists_then_rescore_more_skipping_the_scored(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = _json(_cli(
        "search", "--model", str(model_dir), "--calib", "builtin", "--nsamples", "4", "--seqlen", str(SEQLEN),
        "--stats-nsamples", str(STATS[0]), "--stats-seqlen", str(STATS[1]), "--mode", "layerwise",
        "--sparsity", "0.5", "--pop", "8", "--generations", "2", "--workers", "1", "--seed", str(SEED),
        "--finalists", "2", "--finalist-tokens", "512", "--out", str(out), "--quiet", "--json",
    ))  # fmt: skip
    frame = Archive.load(out).frame()
    base, rescored = frame[frame["fidelity"] == "base"], frame[frame["fidelity"] == FIDELITY]
    # The first population's baselines (uniform Wanda and OWL) are scored beside the finalists.
    baselines = Run.open(out).baseline_ids()
    assert set(baselines) == {"wanda", "owl-wanda"} and base.set_index("eval_id").loc[
        list(baselines.values()), "generation"].eq(0).all()  # fmt: skip
    best_two = base.nsmallest(2, "kl")["eval_id"].tolist()
    beside = [eval_id for eval_id in baselines.values() if eval_id not in best_two]
    assert len(base) == 16 and len(rescored) == 2 + len(beside) and (rescored["status"] == "ok").all()
    assert rescored["source_id"].tolist()[:2] == best_two  # the two best first, then the baselines
    assert sorted(rescored["source_id"].tolist()[2:]) == sorted(beside)
    assert summary["finalists"][0] | {"best": None} == {"fidelity": FIDELITY, "finalists": best_two,
        "baselines": beside, "scored": 2 + len(beside), "skipped": 0, "failed": 0, "best": None}  # fmt: skip

    # Each rescored row holds the error of pruning it for real (masks, then the update).
    for _, row in rescored.iterrows():
        assert json.loads(row["candidate"])["solvers"] == ["update"]
        assert row["kl"] == pytest.approx(_kl_as_applied(model_dir, out, row), rel=1e-4)

    # The front is the best candidate at that fidelity, and its recipe says how to apply it.
    front = Run.open(out).front()
    assert front["eval_id"].tolist() == [int(rescored.loc[rescored["kl"].idxmin(), "eval_id"])]
    assert pd.read_csv(out / FRONT_TABLE)["fidelity"].tolist() == [FIDELITY]
    recipe = load_recipe(Run.open(out).recipes()[0])
    assert recipe.provenance.fitness["finalist"] == {"kind": "finalist", "fidelity": FIDELITY}
    assert _json(_cli("front", str(out), "--json"))["front"][0]["fidelity"] == FIDELITY

    # One more finalist later: the two scored already are skipped, the third is added.
    again = _json(_cli("rescore", str(out), "--finalists", "3", "--finalist-tokens", "512", "--quiet", "--json"))
    third = again["finalists"][0]["finalists"][2]
    new = 0 if third in baselines.values() else 1  # a baseline among the best three was scored already
    assert (again["finalists"][0]["scored"], again["finalists"][0]["skipped"]) == (new, 2 + len(beside))
    frame = Archive.load(out).frame()
    assert frame["fidelity"].value_counts().to_dict() == {"base": 16, FIDELITY: 2 + len(beside) + new}
    assert Run.open(out).config.finalists == (3,)  # kept for a later --resume


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """The command run in this process (no model loads before these errors): exit code, stderr."""
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    return int(exited.value.code), capsys.readouterr().err


@pytest.mark.parametrize(("options", "message"), [
    (("--finalists", "2,3", "--finalist-tokens", "1024,4096"), "no larger than the one before"),
    (("--finalists", "3,2"), "has 2 stages but --finalist-tokens 16384 has 1"),
    (("--finalists", "2", "--finalist-tokens", "16"), "at least one window"),
    (("--finalists", "2", "--finalist-solver", "sgd"), "solver"),
    (("--finalists", "two"), "--finalists two is not understood"),
    (("--finalist-tokens", "4096"), "need --finalists N"),
])  # fmt: skip
def test_bad_finalist_settings_fail_in_one_line_before_the_model_loads(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], options: tuple[str, ...], message: str
) -> None:  # fmt: skip
    code, err = _main(capsys, "search", "--model", str(model_dir), "--sparsity", "0.5", "--seqlen", str(SEQLEN),
                      "--out", str(tmp_path / "run"), *options)  # fmt: skip
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_rescore_of_a_folder_without_a_search_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:  # fmt: skip
    code, err = _main(capsys, "rescore", str(tmp_path / "nothing"), "--finalists", "2")
    assert code == 2 and "holds no search" in err
