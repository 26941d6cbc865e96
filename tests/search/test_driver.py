"""Whole searches on a tiny real model with a real local Ray cluster, through the CLI.

Each search runs as its own process, as a user would start it, so that SIGINT and a killed
evaluator process are the real thing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from paretoprune.recipe import load_recipe
from paretoprune.search.archive import Archive
from paretoprune.search.run import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    EVALUATIONS_FILE,
    FRONT_PLOT,
    FRONT_TABLE,
    MEMORY_FILE,
    PARTS_FOLDER,
    RECIPES_FOLDER,
    Run,
)
from paretoprune.testing import save_tiny_model, tiny_model

pytestmark = pytest.mark.ray

ENV = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", TOKENIZERS_PARALLELISM="false")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    save_tiny_model(folder, tiny_model("llama", layers=3))
    return folder


def _search_args(model_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "paretoprune", "search", "--model", str(model_dir), "--calib", "builtin",
        "--nsamples", "4", "--seqlen", "64", "--pop", "8", "--workers", "2", "--seed", "3",
        "--out", str(out), "--quiet", "--objectives", "kl,sparsity", *extra,
    ]  # fmt: skip


def _run(args: list[str], timeout: float = 240) -> dict:
    done = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1]) if "--json" in args else {}


def _archive(out: Path) -> pd.DataFrame:
    frame = Archive.load(out).frame().sort_values("eval_id").reset_index(drop=True)
    frame["genome"] = frame["genome"].map(lambda g: [round(float(x), 12) for x in g])
    return frame


def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[["eval_id", "generation", "genome", "candidate", "kl", "sparsity", "status"]]


def test_layerwise_search_end_to_end(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = _run(_search_args(model_dir, out, "--mode", "layerwise", "--sparsity", "0.5",
                                "--generations", "3", "--stats-nsamples", "6", "--stats-seqlen", "96",
                                "--json"))  # fmt: skip
    frame = _archive(out)
    assert len(frame) == summary["evaluations"] == 24
    assert list(frame["eval_id"]) == list(range(24))
    assert (frame["status"] == "ok").all()
    # The repair makes the targets' weighted mean exactly 0.5; what is achieved differs only by
    # rounding to whole weights per row (rows of 64 or 128 inputs here).
    assert ((frame["sparsity"] - 0.5).abs() <= 0.5 / 64).all()
    first = json.loads(frame.loc[0, "candidate"])
    assert set(first["sparsities"].values()) == {0.5}  # uniform Wanda is in the first population
    assert frame["kl"].min() <= frame.loc[0, "kl"]  # the front is never worse than the baseline
    for name in (FRONT_TABLE, FRONT_PLOT, CONFIG_FILE, CHECKPOINT_FILE):
        assert (out / name).exists(), name
    assert _compacted_ids(out) == list(range(24))
    table = pd.read_csv(out / FRONT_TABLE)  # what a person opens: short columns, no candidate JSON
    assert list(table.columns) == ["eval_id", "generation", "kl", "sparsity", "fidelity", "rule", "recipe"]
    assert set(table["rule"]) == {"wanda"}
    assert max(len(cell) for cell in table.astype(str).to_numpy().ravel()) <= 200
    recipes = sorted((out / RECIPES_FOLDER).glob("*.yaml"))
    assert len(recipes) == len(summary["front"]) >= 1
    assert [out / RECIPES_FOLDER / name for name in table["recipe"]] == recipes == Run.open(out).recipes()
    best = load_recipe(recipes[0])
    assert best.objectives["kl"] == pytest.approx(frame["kl"].min())
    # The statistics came from their own windows; the fitness from the --nsamples ones.
    calibration = best.provenance.calibration
    assert (calibration.nsamples, calibration.seqlen) == (6, 96)
    assert best.provenance.fitness["text"] == {"kind": "text", "sequences": 4, "seqlen": 64, "seed": 3}
    front = _run([sys.executable, "-m", "paretoprune", "front", str(out), "--json"])
    assert front["front"] == summary["front"]
    # Each of the two actors reported its peak resident memory, within what was estimated
    # before they started (for so tiny a model, mostly the runtime).
    memory = summary["memory"]
    assert memory == json.loads((out / MEMORY_FILE).read_text())
    assert len(memory["peaks"]) == 2
    assert memory["on_gpus"] is False and memory["bound"] == memory["estimate"]["total"]  # CPU actors
    assert 0 < max(memory["peaks"]) <= memory["bound"]
    # So did the driver (this search's own process), against its own estimate.
    driver = memory["driver"]
    assert 0 < driver["peak"] <= driver["estimate"]["total"], driver
    assert driver["estimate"]["rank_cache"] == driver["estimate"]["targets"] == 0


def test_a_bf16_search_keeps_its_dtype_in_config_yaml_and_on_resume(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    _run(_search_args(model_dir, out, "--mode", "layerwise", "--sparsity", "0.5", "--generations", "1",
                      "--dtype", "bfloat16"))  # fmt: skip
    assert Run.open(out).config.dtype == "bfloat16"
    _run([sys.executable, "-m", "paretoprune", "search", "--resume", str(out), "--generations", "2", "--quiet"])
    assert Run.open(out).config.dtype == "bfloat16"
    frame = _archive(out)
    assert list(frame["eval_id"]) == list(range(16)) and (frame["status"] == "ok").all()
    assert (frame["kl"] > 0).all()


def _ctrl_c_as_in_a_terminal() -> None:
    """Let the child see SIGINT as Ctrl-C even when this suite runs as a shell's background job,
    whose children inherit SIGINT ignored (and then Python never raises KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_then_resume_gives_the_uninterrupted_archive(model_dir: Path, tmp_path: Path) -> None:
    # Enough generations that the SIGINT (after the first checkpoint) lands before the search
    # ends, even on a fast machine: four generations of 8 are left then.
    args = ("--mode", "joint", "--sparsity", "0.5", "--generations", "6")
    straight = tmp_path / "straight"
    _run(_search_args(model_dir, straight, *args))

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(_search_args(model_dir, interrupted, *args), env=ENV, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=_ctrl_c_as_in_a_terminal)  # fmt: skip
    _wait_for(lambda: (interrupted / CHECKPOINT_FILE).exists() and _rows(interrupted) >= 10, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "resume" in stderr
    assert _rows(interrupted) < 6 * 8
    assert 10 <= len(_compacted_ids(interrupted)) < 6 * 8  # Ctrl-C folds the journal in too

    _run([sys.executable, "-m", "paretoprune", "search", "--resume", str(interrupted), "--quiet"])
    assert _compacted_ids(straight) == _compacted_ids(interrupted) == list(range(6 * 8))
    a, b = _comparable(_archive(straight)), _comparable(_archive(interrupted))
    pd.testing.assert_frame_equal(a, b)
    columns = ["eval_id", "kl", "sparsity", "rule", "recipe"]  # not worker ids or timings
    pd.testing.assert_frame_equal(
        pd.read_csv(straight / FRONT_TABLE)[columns], pd.read_csv(interrupted / FRONT_TABLE)[columns]
    )


def _evaluator_hosts_under(pid: int) -> list[psutil.Process]:
    """The Ray evaluator processes that descend from process ``pid`` (its local cluster's)."""
    hosts = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "EvaluatorHost" in " ".join(child.cmdline()):
                hosts.append(child)
        except psutil.NoSuchProcess:  # a worker that ended while we looked
            continue
    return hosts


def test_a_killed_evaluator_is_replaced_and_nothing_is_lost(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    process = subprocess.Popen(
        _search_args(model_dir, out, "--mode", "joint", "--sparsity", "0.6", "--generations", "4"),
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    _wait_for(lambda: _rows(out) >= 4, process)
    victims = _evaluator_hosts_under(process.pid)  # never another search's evaluators on this machine
    assert victims, "no evaluator process found"
    victims[0].send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr[-2000:]
    frame = _archive(out)
    assert list(frame["eval_id"]) == list(range(32))  # every candidate exactly once
    assert (frame["status"] == "ok").all()


def test_optuna_driver_end_to_end(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    summary = _run(_search_args(model_dir, out, "--mode", "metric", "--sparsity", "0.5", "--generations", "2",
                                "--algorithm", "optuna", "--storage", storage, "--json"))  # fmt: skip
    assert summary["evaluations"] == 16
    import optuna

    study = optuna.load_study(study_name="paretoprune", storage=storage)
    assert len(study.trials) == 16
    assert len(summary["front"]) >= 1


def test_sensitivity_search_end_to_end(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = _run(_search_args(model_dir, out, "--mode", "layerwise", "--sparsity", "0.6", "--generations", "3",
                                "--algorithm", "sensitivity", "--pop", "2", "--delta", "0.3",
                                "--objectives", "kl", "--json"))  # fmt: skip
    frame = _archive(out)
    # The start genomes (uniform Wanda and OWL), a probe below and above each of the 3 blocks,
    # then 2 model steps.
    assert list(frame.groupby("generation").size()) == [2, 6, 2] and summary["evaluations"] == 10
    assert (frame["status"] == "ok").all()
    probes = [json.loads(c)["sparsities"] for c in frame.loc[frame["generation"] == 1, "candidate"]]
    assert all(len(set(p.values())) > 1 for p in probes)  # each probe moves a block off the centre
    assert len({tuple(sorted(p.items())) for p in probes}) == 6
    assert frame["kl"].min() <= frame.loc[frame["generation"] == 0, "kl"].min()
    best = load_recipe(Run.open(out).recipes()[0])
    assert best.objectives["kl"] == pytest.approx(frame["kl"].min())
    table = pd.read_csv(out / FRONT_TABLE)  # kl alone: the achieved sparsity gets its own column
    assert list(table.columns) == ["eval_id", "generation", "kl", "fidelity", "achieved_sparsity", "rule", "recipe"]
    assert table["achieved_sparsity"].between(0.6 - 1 / 64, 0.6 + 1 / 64).all()


def _compacted_ids(out: Path) -> list[int]:
    """The eval_ids in the table a user would open alone, checked to be every evaluation."""
    assert not list((out / PARTS_FOLDER).glob("*.parquet")), "evaluations left in the journal"
    ids = sorted(pd.read_parquet(out / EVALUATIONS_FILE)["eval_id"])
    assert ids == sorted(Archive.load(out).frame()["eval_id"])
    return ids


def _rows(out: Path) -> int:
    try:
        return len(Archive.load(out).frame())
    except Exception:  # not written yet
        return 0


def _wait_for(condition, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"search ended early: {process.communicate()[1][-2000:]}")
        if condition():
            return
        time.sleep(0.2)
    process.kill()
    raise AssertionError("condition not reached in time")


def test_two_stage_search_uses_the_best_metric_of_stage_one(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    summary = _run(_search_args(model_dir, out, "--stages", "metric,layerwise", "--sparsity", "0.5",
                                "--generations", "1", "--json"))  # fmt: skip
    stage1, stage2 = _archive(out / "stage1-metric"), _archive(out / "stage2-layerwise")
    best = json.loads(stage1.loc[stage1["kl"].idxmin(), "candidate"])["metric"]
    metrics = {json.dumps(json.loads(c)["metric"], sort_keys=True) for c in stage2["candidate"]}
    assert metrics == {json.dumps(best, sort_keys=True)}  # stage 2 only moves the sparsities
    assert summary["front"][0]["kl"] <= stage2.loc[0, "kl"]


def test_task_aware_front_is_the_non_dominated_set_of_text_and_task_kl(
    model_dir: Path, tmp_path: Path, shared_data: Path
) -> None:
    out = tmp_path / "run"
    summary = _run([
        sys.executable, "-m", "paretoprune", "search", "--model", str(model_dir), "--calib", "builtin",
        "--nsamples", "4", "--seqlen", "64", "--pop", "8", "--workers", "1", "--out", str(out), "--quiet",
        "--mode", "layerwise", "--sparsity", "0.6", "--generations", "1", "--objectives", "kl,kl@arc_easy",
        "--task-dir", str(shared_data / "zeroshot"), "--json",
    ])  # fmt: skip
    frame = _archive(out)
    assert {"kl", "kl@arc_easy"} <= set(frame.columns)
    assert (frame["kl@arc_easy"] > 0).all() and not frame["kl@arc_easy"].equals(frame["kl"])
    assert all({"kl", "kl@arc_easy"} <= set(member) for member in summary["front"])
    # The front holds exactly the evaluations no other one beats on both: sorted by text KL, its
    # task KL falls strictly (each member trades one for the other), and every evaluation off the
    # front is dominated by a member.
    front = sorted((m["kl"], m["kl@arc_easy"]) for m in summary["front"])
    assert all(b[1] < a[1] for a, b in zip(front, front[1:]))
    members = {m["eval_id"] for m in summary["front"]}
    others = frame[~frame["eval_id"].isin(members)][["kl", "kl@arc_easy"]].to_numpy()
    for text, task in others:  # dominated, or a duplicate of a member
        assert any(k <= text and t <= task for k, t in front)
