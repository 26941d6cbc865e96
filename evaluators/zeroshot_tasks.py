"""The zero-shot tasks as lm-evaluation-harness poses them, read from local files.

Each reader turns one file format into :class:`Example` objects: the (context, continuation)
pairs the model scores, which of them is right, and the choice strings whose length in
characters normalises ``acc_norm``. The prompts follow the harness's task configs (the
``doc_to_text`` / ``doc_to_choice`` / ``doc_to_target`` of lm-eval 0.4): the context is the
rendered question, and every continuation is the harness's target delimiter (one space)
followed by the choice. WinoGrande is the exception: its choices are the two contexts (the
sentence up to the blank, filled in with each option) and they share one continuation, the rest
of the sentence (the harness's "partial scoring"). LAMBADA has one continuation, the last word.

A task is found in a data folder laid out as the project's zero-shot folder (``arc/``, ``boolq/``,
...) or with its files directly inside the folder. The readers themselves take any path.
"""

from __future__ import annotations

import bz2
import csv
import json
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paretoprune.errors import InputError
from paretoprune.registry import Registry

__all__ = [
    "TASKS",
    "Example",
    "LoadedTask",
    "Request",
    "TaskSpec",
    "example_text",
    "load_task",
    "read_arc",
    "read_boolq",
    "read_hellaswag",
    "read_lambada",
    "read_openbookqa",
    "read_piqa",
    "read_rte",
    "read_winogrande",
    "select_indices",
    "split_indices",
    "task_examples",
    "task_names",
]

# The harness's default target_delimiter: the text between the context and each choice.
DELIMITER = " "

HELLASWAG_DERIVED_NOTE = (
    "HellaSwag read from the derived llama.cpp-format file (hellaswag_val_full.txt): its contexts "
    "use the raw ctx, so the second part is not capitalized as in lm-eval; close to, but not "
    "protocol-identical with, lm-eval's hellaswag"
)


@dataclass(frozen=True)
class Request:
    """One string pair to score: log P(continuation | context)."""

    context: str
    continuation: str


@dataclass(frozen=True)
class Example:
    """One question: its requests (one per choice), the right one, and the choice strings.

    ``choices`` are the strings the harness measures for ``acc_norm`` (the choice text without
    the delimiter); for WinoGrande they are the filled-in contexts, for LAMBADA the target.
    """

    requests: tuple[Request, ...]
    gold: int
    choices: tuple[str, ...]


def multiple_choice(context: str, choices: Sequence[str], gold: int) -> Example:
    """The common case: one context, each choice as a continuation after the delimiter."""
    requests = tuple(Request(context, DELIMITER + choice) for choice in choices)
    return Example(requests=requests, gold=gold, choices=tuple(choices))


def example_text(example: Example) -> str:
    """The right answer written out in full: context and gold continuation, for calibration."""
    request = example.requests[example.gold]
    return request.context + request.continuation


# --------------------------------------------------------------------------------------------
# Small file helpers


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """The records of a JSON-lines file with their line numbers; blank lines are skipped."""
    with _open_text(path) as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as error:
                    raise InputError(
                        f"{path} line {number} is not JSON ({error.msg}): "
                        "pass the task's jsonl file"
                    ) from error


def _open_text(path: Path) -> Any:
    if path.suffix == ".bz2":
        return bz2.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def _labels(path: Path) -> list[str]:
    """A labels file: one label per line, as PIQA's and WinoGrande's ``.lst``."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _field(record: dict[str, Any], key: str, path: Path, number: int) -> Any:
    if key not in record:
        raise InputError(
            f"{path} line {number} has no field {key!r}: is this the right file for the task?"
        )
    return record[key]


def _letter_index(labels: Sequence[str], key: str, path: Path, number: int) -> int:
    if key not in labels:
        raise InputError(
            f"{path} line {number}: answer {key!r} is not among the choice labels {list(labels)}"
        )
    return list(labels).index(key)


# --------------------------------------------------------------------------------------------
# Readers: one per format


def read_boolq(path: Path) -> list[Example]:
    """BoolQ (SuperGLUE jsonl: passage, question, label true/false); choices no/yes."""
    examples = []
    for number, record in _jsonl(path):
        passage = _field(record, "passage", path, number)
        question = _field(record, "question", path, number)
        label = _field(record, "label", path, number)
        gold = int(label in (True, 1, "true", "True"))
        examples.append(
            multiple_choice(f"{passage}\nQuestion: {question}?\nAnswer:", ["no", "yes"], gold)
        )
    return examples


def read_piqa(path: Path, labels_path: Path) -> list[Example]:
    """PIQA (goal, sol1, sol2 per line, the labels 0/1 in a separate .lst file)."""
    records = list(_jsonl(path))
    labels = _labels(labels_path)
    if len(labels) != len(records):
        raise InputError(
            f"{labels_path} has {len(labels)} labels but {path} has {len(records)} records: "
            "pass matching files"
        )
    examples = []
    for (number, record), label in zip(records, labels, strict=True):
        goal = _field(record, "goal", path, number)
        choices = [_field(record, "sol1", path, number), _field(record, "sol2", path, number)]
        examples.append(multiple_choice(f"Question: {goal}\nAnswer:", choices, int(label)))
    return examples


def _hellaswag_clean(text: str) -> str:
    """lm-eval's HellaSwag preprocessing: drop WikiHow's bracket tags, tidy the spaces."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def read_hellaswag(path: Path) -> list[Example]:
    """HellaSwag: the official jsonl (preprocessed as lm-eval does) or llama.cpp's 6-line text.

    The text form (``hellaswag_val_full.txt``, optionally ``.bz2``) holds per task the context,
    the gold label and four endings, already cleaned by its own generator; see
    ``HELLASWAG_DERIVED_NOTE`` for how it differs from the harness.
    """
    if path.name.endswith((".jsonl", ".json")):
        return [_hellaswag_official(record) for _, record in _jsonl(path)]
    with _open_text(path) as handle:
        lines = [line.rstrip("\n") for line in handle]
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) % 6:
        raise InputError(
            f"{path} has {len(lines)} lines, not a multiple of 6: "
            "pass llama.cpp's hellaswag_val_full.txt"
        )
    examples = []
    for start in range(0, len(lines), 6):
        context, label, *endings = lines[start : start + 6]
        if not label.strip().isdigit():
            raise InputError(f"{path} line {start + 2} should be a label 0-3, got {label!r}")
        examples.append(multiple_choice(context, endings, int(label)))
    return examples


def _hellaswag_official(record: dict[str, Any]) -> Example:
    context = record["ctx_a"] + " " + record["ctx_b"].capitalize()
    query = _hellaswag_clean(record["activity_label"] + ": " + context)
    endings = [_hellaswag_clean(ending) for ending in record["endings"]]
    return multiple_choice(query, endings, int(record["label"]))


def read_winogrande(path: Path, labels_path: Path | None = None) -> list[Example]:
    """WinoGrande (sentence with one ``_``, option1, option2, answer "1"/"2"), partial scoring.

    Each option fills the blank and the sentence up to there becomes a context; both contexts
    are scored on the shared rest of the sentence.
    """
    labels = _labels(labels_path) if labels_path is not None else None
    examples = []
    for index, (number, record) in enumerate(_jsonl(path)):
        sentence = _field(record, "sentence", path, number)
        if "_" not in sentence:
            raise InputError(f"{path} line {number}: the sentence has no blank '_'")
        answer = (
            labels[index] if labels is not None else str(_field(record, "answer", path, number))
        )
        blank = sentence.index("_")
        contexts = [sentence[:blank] + record["option1"], sentence[:blank] + record["option2"]]
        continuation = DELIMITER + sentence[blank + 1 :].strip()
        requests = tuple(Request(context, continuation) for context in contexts)
        examples.append(Example(requests=requests, gold=int(answer) - 1, choices=tuple(contexts)))
    return examples


def read_arc(path: Path) -> list[Example]:
    """ARC (AI2 jsonl: question.stem, question.choices[{text,label}], answerKey)."""
    examples = []
    for number, record in _jsonl(path):
        question = _field(record, "question", path, number)
        texts = [choice["text"] for choice in question["choices"]]
        labels = [choice["label"] for choice in question["choices"]]
        gold = _letter_index(labels, _field(record, "answerKey", path, number), path, number)
        examples.append(multiple_choice(f"Question: {question['stem']}\nAnswer:", texts, gold))
    return examples


def read_openbookqa(path: Path) -> list[Example]:
    """OpenBookQA main: the official jsonl (as ARC's) or test.tsv; the stem alone is the context."""
    if path.suffix == ".tsv":
        return _openbookqa_tsv(path)
    examples = []
    for number, record in _jsonl(path):
        question = _field(record, "question", path, number)
        texts = [choice["text"] for choice in question["choices"]]
        labels = [choice["label"] for choice in question["choices"]]
        gold = _letter_index(
            labels, _field(record, "answerKey", path, number).strip(), path, number
        )
        examples.append(multiple_choice(question["stem"], texts, gold))
    return examples


def _openbookqa_tsv(path: Path) -> list[Example]:
    examples = []
    with path.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.DictReader(handle, delimiter="\t"), start=2):
            parts = re.split(r"\(([A-D])\) ", row["Choices"])
            labels, texts = parts[1::2], [text.strip() for text in parts[2::2]]
            gold = _letter_index(labels, row["Answer Key"].strip(), path, number)
            examples.append(multiple_choice(row["Question Stem"], texts, gold))
    return examples


def read_rte(path: Path) -> list[Example]:
    """RTE: GLUE parquet (sentence1, sentence2, label 0=entailment) or SuperGLUE jsonl.

    Both get lm-eval ``rte``'s prompt and choices True/False; entailment is True.
    """
    if path.suffix == ".parquet":
        rows = _parquet_rows(path)
        pairs = [(row["sentence1"], row["sentence2"], int(row["label"])) for row in rows]
    else:
        pairs = []
        for number, record in _jsonl(path):
            label = _field(record, "label", path, number)
            gold = 0 if label in ("entailment", 0) else 1
            premise = _field(record, "premise", path, number)
            pairs.append((premise, _field(record, "hypothesis", path, number), gold))
    return [
        multiple_choice(
            f"{premise}\nQuestion: {hypothesis} True or False?\nAnswer:", ["True", "False"], gold
        )
        for premise, hypothesis, gold in pairs
    ]


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as error:  # pyarrow raises several types for a bad file
        raise InputError(
            f"cannot read parquet file {path} ({error}): pass GLUE RTE's validation parquet"
        ) from error


def read_lambada(path: Path) -> list[Example]:
    """LAMBADA (OpenAI jsonl of {"text"}): context = all but the last word, target = " " + it.

    The split is on single spaces, as the harness's ``lambada_openai`` does.
    """
    examples = []
    for number, record in _jsonl(path):
        words = _field(record, "text", path, number).split(" ")
        target = DELIMITER + words[-1]
        request = Request(" ".join(words[:-1]), target)
        examples.append(Example(requests=(request,), gold=0, choices=(target,)))
    return examples


# --------------------------------------------------------------------------------------------
# The task registry


@dataclass(frozen=True)
class Layout:
    """One way a task's files may be laid out: paths relative to the data folder, and a note."""

    files: tuple[str, ...]
    note: str = ""


@dataclass(frozen=True)
class TaskSpec:
    """A zero-shot task: how it is scored, where its files are, and how to read them."""

    name: str
    kind: str  # "multiple_choice" or "loglikelihood"
    metrics: tuple[str, ...]  # the metrics the harness's config lists for it
    layouts: tuple[Layout, ...]  # tried in order; the first whose files all exist wins
    reader: Callable[..., list[Example]]


def _spec(
    name: str,
    kind: str,
    metrics: tuple[str, ...],
    reader: Callable[..., list[Example]],
    *layouts: Layout,
) -> TaskSpec:
    return TaskSpec(name=name, kind=kind, metrics=metrics, layouts=layouts, reader=reader)


_ACC, _ACC_NORM = ("acc",), ("acc", "acc_norm")

# The evaluation tasks: ``eval --tasks``, ``prune/apply --eval-tasks`` and the ``objective@TASK``
# objectives of a search read this registry.
TASKS: Registry[TaskSpec] = Registry("evaluation task", option="--tasks")
_BUILTIN_TASKS = (
    _spec("boolq", "multiple_choice", _ACC, read_boolq, Layout(("boolq/val.jsonl",))),
    _spec(
        "piqa",
        "multiple_choice",
        _ACC_NORM,
        read_piqa,
        Layout(("piqa/valid.jsonl", "piqa/valid-labels.lst")),
        Layout(("piqa/dev.jsonl", "piqa/dev-labels.lst")),
    ),
    _spec(
        "hellaswag",
        "multiple_choice",
        _ACC_NORM,
        read_hellaswag,
        Layout(("hellaswag/hellaswag_val.jsonl",)),
        Layout(("hellaswag/hellaswag_val_full.txt.bz2",), HELLASWAG_DERIVED_NOTE),
        Layout(("hellaswag/hellaswag_val_full.txt",), HELLASWAG_DERIVED_NOTE),
    ),
    _spec(
        "winogrande",
        "multiple_choice",
        _ACC,
        read_winogrande,
        Layout(("winogrande/dev.jsonl",)),
    ),
    _spec(
        "arc_easy", "multiple_choice", _ACC_NORM, read_arc, Layout(("arc/ARC-Easy-Test.jsonl",))
    ),
    _spec(
        "arc_challenge",
        "multiple_choice",
        _ACC_NORM,
        read_arc,
        Layout(("arc/ARC-Challenge-Test.jsonl",)),
    ),
    _spec(
        "openbookqa",
        "multiple_choice",
        _ACC_NORM,
        read_openbookqa,
        Layout(("openbookqa/test.jsonl",)),
        Layout(("openbookqa/test.tsv",)),
    ),
    _spec(
        "rte",
        "multiple_choice",
        _ACC,
        read_rte,
        Layout(("rte/glue_rte_validation.parquet",)),
        Layout(
            ("rte/val.jsonl",),
            "RTE read from SuperGLUE's val.jsonl (6 texts lack a leading quote that GLUE has)",
        ),
    ),
    _spec(
        "lambada",
        "loglikelihood",
        ("acc", "perplexity"),
        read_lambada,
        Layout(("lambada/lambada_test.jsonl",)),
    ),
)
for _task in _BUILTIN_TASKS:
    TASKS.register(_task.name, _task, summary=f"{_task.kind.replace('_', ' ')}, scored by {', '.join(_task.metrics)}")


def task_names() -> list[str]:
    """The known task names, in the order papers list them."""
    return list(TASKS)


@dataclass(frozen=True)
class LoadedTask:
    """A task's examples with where they came from (paths relative to the data folder)."""

    spec: TaskSpec
    examples: list[Example]
    files: tuple[str, ...]
    note: str


def _spec_for(task: str) -> TaskSpec:
    return TASKS.lookup(task)


def _shared_names() -> set[str]:
    """File names that more than one task uses (val.jsonl, dev.jsonl, ...)."""
    owners: dict[str, set[str]] = {}
    for spec in TASKS.values():
        for layout in spec.layouts:
            for relative in layout.files:
                owners.setdefault(Path(relative).name, set()).add(spec.name)
    return {name for name, tasks in owners.items() if len(tasks) > 1}


def _locate(task_dir: Path, relative: str) -> Path | None:
    """A file of the layout in its subfolder, or directly in the data folder if its name is
    not one that another task's file shares."""
    candidates = [task_dir / relative]
    if Path(relative).name not in _shared_names():
        candidates.append(task_dir / Path(relative).name)
    return next((candidate for candidate in candidates if candidate.is_file()), None)


def load_task(task: str, task_dir: Path) -> LoadedTask:
    """Read a task's examples from the first layout whose files exist under ``task_dir``."""
    spec = _spec_for(task)
    task_dir = Path(task_dir)
    if not task_dir.is_dir():
        raise InputError(
            f"task folder {task_dir} does not exist: "
            "pass --task-dir pointing at the zero-shot data folder"
        )
    for layout in spec.layouts:
        paths = [_locate(task_dir, relative) for relative in layout.files]
        if all(path is not None for path in paths):
            examples = spec.reader(*paths)
            if not examples:
                raise InputError(
                    f"task {task}: {paths[0]} holds no examples: pass a non-empty file"
                )
            files = tuple(str(path.relative_to(task_dir)) for path in paths)
            return LoadedTask(spec=spec, examples=examples, files=files, note=layout.note)
    wanted = " or ".join(" + ".join(layout.files) for layout in spec.layouts)
    raise InputError(
        f"task {task}: no data file in {task_dir} (looked for {wanted}): "
        "pass --task-dir pointing at the zero-shot data folder"
    )


# --------------------------------------------------------------------------------------------
# Subsets and the calibration / evaluation split


def select_indices(
    total: int, limit: int | None, subset: str = "seeded", seed: int = 0
) -> list[int]:
    """Which examples a limited run scores, in file order.

    ``"first"`` takes the first ``limit`` (what lm-eval's ``--limit`` does); ``"seeded"`` a fixed
    random sample that spreads over the whole file, the same for the same seed.
    """
    if subset not in ("first", "seeded"):
        raise InputError(f"unknown subset {subset!r}: use 'first' or 'seeded'")
    if limit is not None and limit < 1:
        raise InputError(f"limit must be a positive number of examples, got {limit}")
    if limit is None or limit >= total:
        return list(range(total))
    if subset == "first":
        return list(range(limit))
    return sorted(random.Random(seed).sample(range(total), limit))


def split_indices(total: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded split of ``range(total)`` into a calibration part (``fraction``) and the rest."""
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"calibration fraction must be in [0, 1), got {fraction}")
    order = list(range(total))
    random.Random(seed).shuffle(order)
    cut = round(fraction * total)
    return sorted(order[:cut]), sorted(order[cut:])


def task_examples(
    task: str, task_dir: Path, part: str = "calib", fraction: float = 0.5, seed: int = 0
) -> list[Example]:
    """One part of a task's seeded calibration / evaluation split (for task-aware search).

    The same ``fraction`` and ``seed`` always give the same parts, and the parts never overlap,
    so a search may calibrate on ``"calib"`` while accuracy is reported on ``"eval"``.
    """
    if part not in ("calib", "eval"):
        raise InputError(f"unknown task part {part!r}: use 'calib' or 'eval'")
    examples = load_task(task, task_dir).examples
    calib, held_out = split_indices(len(examples), fraction, seed)
    return [examples[index] for index in (calib if part == "calib" else held_out)]
