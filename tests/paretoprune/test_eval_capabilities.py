"""``eval --truth-probe`` and ``eval --tasks ... --test-time-prune`` as scripts see them."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from paretoprune.cli import main
from paretoprune.testing import save_tiny_model, tiny_model

TOPICS = ("cities", "neg_cities", "sp_en_trans", "neg_sp_en_trans")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-qwen2")
    save_tiny_model(folder, tiny_model("qwen2"))
    return folder


def truth_folder(folder: Path, single_class: str | None = None) -> Path:
    """Statements whose last word gives the label away; ``single_class`` names a topic left all true."""
    folder.mkdir()
    for topic in TOPICS:
        labels = [1 if topic == single_class else i % 2 for i in range(12)]
        rows = [f"The claim {topic} {i} is {'right' if y else 'wrong'}.,{y}" for i, y in enumerate(labels)]
        (folder / f"{topic}.csv").write_text("statement,label\n" + "\n".join(rows) + "\n")
    return folder


def run(*args: str) -> tuple[int, dict | None, list[str]]:
    """Exit code, the JSON last line (if any) and the ``error:`` lines, run in this process."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exited:
        main([*args, "--json", "--quiet"])
    lines = stdout.getvalue().strip().splitlines()
    summary = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else None
    assert "Traceback" not in stderr.getvalue()
    return int(exited.value.code or 0), summary, [line for line in stderr.getvalue().splitlines() if line.startswith("error:")]


def test_truth_probe_of_a_model_against_itself_reports_both_splits_alike(model_dir: Path, tmp_path: Path) -> None:
    folder = truth_folder(tmp_path / "truth")
    code, summary, _ = run("eval", "--model", str(model_dir), "--reference", str(model_dir),
                           "--truth-probe", "--truth-dir", str(folder), "--truth-limit", "8")  # fmt: skip
    assert code == 0 and summary is not None
    report = summary["truth_probe"]
    assert report["pivot_from"] == "reference" and 0 <= report["pivot_block"] < len(report["separability"])
    assert report["pivot_block"] == max(range(len(report["separability"])), key=report["separability"].__getitem__)
    assert report["statements"] == {topic: 8 for topic in TOPICS}
    assert report["model"] == report["reference"]  # the same weights read at the same block
    for split in ("topics", "statements"):
        accuracies = report["model"][split]
        assert set(accuracies) == {*TOPICS, "mean"}
        assert accuracies["mean"] == pytest.approx(sum(accuracies[t] for t in TOPICS) / 4)
    alone = run("eval", "--model", str(model_dir), "--truth-probe", "--truth-dir", str(folder), "--truth-limit", "8")[1]
    assert alone is not None and "reference" not in alone["truth_probe"] and alone["truth_probe"]["pivot_from"] == "model"


@pytest.mark.parametrize(
    "extra, fragment",
    [
        ([], "pass --truth-dir DIR"),
        (["--truth-dir", "SINGLE"], "holds only true statements: a probe needs both true and false ones"),
        (["--truth-dir", "GOOD", "--truth-topics", "cities"], "name at least two topics"),
        (["--test-time-prune", "0.5"], "scores text windows or zero-shot tasks"),
    ],
)  # fmt: skip
def test_bad_truth_probe_and_test_time_options_exit_2_in_one_line(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str], fragment: str
) -> None:
    monkeypatch.delenv("PARETOPRUNE_TRUTH_DIR", raising=False)
    folders = {"SINGLE": lambda: truth_folder(tmp_path / "single", "cities"), "GOOD": lambda: truth_folder(tmp_path / "good")}
    args = [str(folders[a]()) if a in folders else a for a in extra]
    code, _, errors = run("eval", "--model", str(model_dir), "--truth-probe", *args)
    assert code == 2 and len(errors) == 1 and fragment in errors[0], errors


def test_test_time_pruning_of_zero_shot_tasks_is_exact_at_ratio_one(model_dir: Path, shared_data: Path) -> None:
    common = ("eval", "--model", str(model_dir), "--tasks", "arc_easy,winogrande",
              "--task-dir", str(shared_data / "zeroshot"), "--limit", "3")  # fmt: skip
    code, exact, _ = run(*common, "--test-time-prune", "1.0")
    assert code == 0 and exact is not None
    assert exact["test_time"]["ratio"] == 1.0 and exact["test_time"]["structured"] is False
    tested, unpruned = exact["test_time"]["tasks"]["tasks"], exact["tasks"]["tasks"]
    assert set(tested) == {"arc_easy", "winogrande"}
    for task in tested:
        assert tested[task]["acc"] == unpruned[task]["acc"] and tested[task]["n"] == 3
    assert "perplexity" not in exact["test_time"]  # no --data: no windows were scored
