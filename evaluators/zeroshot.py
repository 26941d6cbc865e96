"""Zero-shot accuracy with the lm-evaluation-harness protocol, from local task files.

Every question is scored by log-likelihood: for each choice, the sum of the log-probabilities
of the continuation's tokens given the context. The tokens are split as the harness splits
them: the context and the whole string are tokenized, and the continuation is whatever the whole
string has beyond the context's tokens (spaces that end the context move to the continuation
first). ``acc`` picks the choice of highest log-likelihood, ``acc_norm`` the highest
log-likelihood per character of the choice. LAMBADA counts a passage as right when greedy
decoding reproduces every token of its last word, and its perplexity is ``exp`` of the mean
negative log-likelihood of that word, per passage, as the harness aggregates it.

The scoring is batched: identical model inputs are run once (the choices " no" and " yes" after
one passage need a single forward), the inputs are sorted by length so a batch pads little, and
only the positions that predict continuation tokens go through the output head where the model
allows it.

With a test-time pruner (μ-MoE), each distinct context is pruned for on its own: the masks are
made from the context's tokens alone, then every continuation that follows that context is
scored with them, so no scored token ever reaches the masks.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from paretoprune.errors import InputError
from paretoprune.evaluators.zeroshot_tasks import (
    TASKS,
    Example,
    LoadedTask,
    Request,
    example_text,
    load_task,
    select_indices,
    split_indices,
    task_examples,
    task_names,
)

__all__ = [
    "PROTOCOL",
    "Example",
    "Request",
    "Scored",
    "encode_pair",
    "evaluate_tasks",
    "example_text",
    "lambada_metrics",
    "multiple_choice_metrics",
    "score_requests",
    "score_requests_test_time",
    "score_token_pairs",
    "task_examples",
    "task_names",
]

if TYPE_CHECKING:
    from paretoprune.evaluators.runtime_pruning import TestTimePruner

logger = logging.getLogger(__name__)

PROTOCOL = (
    "lm-evaluation-harness zero-shot protocol: log-likelihood of each choice given the context "
    "(acc; acc_norm divides by the choice's length in characters), WinoGrande partial scoring, "
    "LAMBADA (OpenAI) last-word greedy accuracy and perplexity"
)

# lm-eval's fallback when neither the config nor the tokenizer states a context length.
_DEFAULT_MAX_LENGTH = 2048


@dataclass(frozen=True)
class Scored:
    """A request's log-likelihood and whether greedy decoding would produce its continuation."""

    loglik: float
    greedy: bool


# --------------------------------------------------------------------------------------------
# Tokenization


def _encode(tokenizer: Any, text: str) -> list[int]:
    # The tokenizer's own default for special tokens, as lm-eval (0.4.x) calls it.
    return list(tokenizer(text)["input_ids"])


def _prefix_token(tokenizer: Any) -> int:
    """What an empty context is replaced by: BOS, else EOS (the harness's prefix token)."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise InputError(
            "the tokenizer has neither a BOS nor an EOS token: an empty context cannot be scored"
        )
    return token


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation tokens, split as the harness splits them.

    Trailing spaces of the context move to the continuation; the continuation's tokens are
    those of ``context + continuation`` beyond the context's own tokens, so a word is tokenized
    as it would be in running text.
    """
    if context == "":
        tokens = list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
        prefix = _prefix_token(tokenizer)
        return ([prefix], tokens) if tokens[:1] != [prefix] else (tokens[:1], tokens[1:])
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = _encode(tokenizer, context + continuation)
    context_tokens = _encode(tokenizer, context)
    return context_tokens, whole[len(context_tokens) :]


def _max_length(model: Any, tokenizer: Any) -> int:
    """The model's context length: from its config, else the tokenizer, else 2048 (as lm-eval)."""
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config  # composite (multimodal) configs
    for attribute in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 10**9 else _DEFAULT_MAX_LENGTH


# --------------------------------------------------------------------------------------------
# Scoring


def _model_input(context: list[int], continuation: list[int], max_length: int) -> tuple[int, ...]:
    """What the model reads to predict ``continuation``: left-truncated to the context length."""
    if not continuation:
        raise InputError("a continuation produced no tokens: every choice must be non-empty text")
    if len(continuation) > max_length:
        raise InputError(
            f"a continuation of {len(continuation)} tokens exceeds the model's context "
            f"of {max_length}"
        )
    return tuple((context + continuation)[-(max_length + 1) :][:-1])


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _accepts_logits_to_keep(model: Any) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _forward_tail(
    model: Any, rows: Sequence[tuple[int, ...]], first_needed: int, pad_id: int
) -> tuple[torch.Tensor, int]:
    """fp32 log-probabilities for positions ``first_needed..`` of right-padded rows.

    Returns them with the offset of their first position, so position ``p`` of a row is at
    index ``p - offset``. Padding on the right leaves the earlier positions of a causal model
    untouched.
    """
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[index, : len(row)] = 1
    device = _device(model)
    kwargs: dict[str, Any] = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    keep = width - first_needed
    if _accepts_logits_to_keep(model):
        kwargs["logits_to_keep"] = keep
    logits = model(**kwargs).logits[:, -keep:, :]
    return F.log_softmax(logits.float(), dim=-1), first_needed


def _batches(order: list[int], batch_size: int) -> list[list[int]]:
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def score_token_pairs(
    model: Any,
    pairs: Sequence[tuple[list[int], list[int]]],
    batch_size: int = 8,
    max_length: int = _DEFAULT_MAX_LENGTH,
    pad_id: int = 0,
    progress: bool = False,
    desc: str = "scoring",
) -> list[Scored]:
    """Log-likelihood and greedy match of each (context tokens, continuation tokens) pair.

    Pairs that give the model the same input share one row of a batch; rows are sorted longest
    first, as the harness does, so each batch pads little.
    """
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    inputs = [
        _model_input(list(context), list(continuation), max_length)
        for context, continuation in pairs
    ]
    rows = list(dict.fromkeys(inputs))
    row_of = {row: index for index, row in enumerate(rows)}
    users: dict[int, list[int]] = {}
    for pair_index, row in enumerate(inputs):
        users.setdefault(row_of[row], []).append(pair_index)
    order = sorted(range(len(rows)), key=lambda index: (-len(rows[index]), rows[index]))
    results: list[Scored | None] = [None] * len(pairs)
    with (
        torch.inference_mode(),
        tqdm(total=len(pairs), desc=desc, disable=not progress, leave=False) as bar,
    ):
        for batch in _batches(order, batch_size):
            _score_batch(
                model,
                [rows[index] for index in batch],
                [users[index] for index in batch],
                pairs,
                pad_id,
                results,
            )
            bar.update(sum(len(users[index]) for index in batch))
    return [result for result in results if result is not None]  # every pair has a row


def _score_batch(
    model: Any,
    rows: list[tuple[int, ...]],
    row_users: list[list[int]],
    pairs: Sequence[tuple[list[int], list[int]]],
    pad_id: int,
    results: list[Scored | None],
) -> None:
    """Run one batch and fill in the results of every pair that reads one of its rows."""
    # The earliest position of the batch that predicts a continuation token.
    first_needed = min(
        len(row) - len(pairs[user][1])
        for row, users in zip(rows, row_users, strict=True)
        for user in users
    )
    logprobs, offset = _forward_tail(model, rows, first_needed, pad_id)
    for index, (row, users) in enumerate(zip(rows, row_users, strict=True)):
        for pair_index in users:
            continuation = torch.tensor(
                pairs[pair_index][1], dtype=torch.long, device=logprobs.device
            )
            start = len(row) - len(continuation) - offset
            window = logprobs[index, start : start + len(continuation)]
            picked = window.gather(-1, continuation.unsqueeze(-1)).squeeze(-1)
            greedy = bool((window.argmax(dim=-1) == continuation).all())
            results[pair_index] = Scored(loglik=float(picked.sum()), greedy=greedy)


def _encoded(tokenizer: Any, requests: Sequence[Request]) -> list[tuple[list[int], list[int]]]:
    """Each request as (context ids, continuation ids), tokenized as the harness does."""
    return [encode_pair(tokenizer, request.context, request.continuation) for request in requests]


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def score_requests(
    model: Any,
    tokenizer: Any,
    requests: Sequence[Request],
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "scoring",
) -> list[Scored]:
    """Score string requests: tokenize as the harness does, then :func:`score_token_pairs`."""
    return score_token_pairs(
        model,
        _encoded(tokenizer, requests),
        batch_size=batch_size,
        max_length=_max_length(model, tokenizer),
        pad_id=_pad_id(tokenizer),
        progress=progress,
        desc=desc,
    )


def score_requests_test_time(
    pruner: TestTimePruner,
    tokenizer: Any,
    requests: Sequence[Request],
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "scoring",
) -> list[Scored]:
    """:func:`score_requests` with masks made per context by ``pruner`` from its tokens alone.

    Requests that share a context (the choices of one question) share its masks; a context
    longer than the model's window is cut to the tokens the model reads, as the scoring does.
    """
    pairs = _encoded(tokenizer, requests)
    max_length, pad_id = _max_length(pruner.model, tokenizer), _pad_id(tokenizer)
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, (context, _) in enumerate(pairs):
        groups.setdefault(tuple(context[-max_length:]), []).append(index)
    results: list[Scored | None] = [None] * len(pairs)
    for context, members in tqdm(groups.items(), desc=desc, disable=not progress, leave=False):
        with pruner.masked(torch.tensor(context, dtype=torch.long)):
            scored = score_token_pairs(pruner.model, [pairs[index] for index in members], batch_size, max_length, pad_id)
        for index, score in zip(members, scored, strict=True):
            results[index] = score
    return [result for result in results if result is not None]


# --------------------------------------------------------------------------------------------
# Metrics


def _first_argmax(values: Sequence[float]) -> int:
    """Index of the largest value; the first one on ties, as numpy's argmax."""
    return max(range(len(values)), key=lambda index: (values[index], -index))


def _mean_and_stderr(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and its standard error (sample standard deviation / sqrt(n), as lm-eval)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    variance = sum((value - mean) ** 2 for value in values) / (len(values) - 1)
    return mean, math.sqrt(variance / len(values))


def multiple_choice_metrics(
    examples: Sequence[Example], logliks: Sequence[Sequence[float]]
) -> dict[str, float | None]:
    """``acc`` and ``acc_norm`` (log-likelihood per character of the choice) with their stderr."""
    hits, norm_hits = [], []
    for example, values in zip(examples, logliks, strict=True):
        normalised = [
            value / max(len(choice), 1)
            for value, choice in zip(values, example.choices, strict=True)
        ]
        hits.append(float(_first_argmax(values) == example.gold))
        norm_hits.append(float(_first_argmax(normalised) == example.gold))
    acc, acc_stderr = _mean_and_stderr(hits)
    acc_norm, acc_norm_stderr = _mean_and_stderr(norm_hits)
    return {
        "acc": acc,
        "acc_stderr": acc_stderr,
        "acc_norm": acc_norm,
        "acc_norm_stderr": acc_norm_stderr,
    }


def lambada_metrics(scores: Sequence[Scored]) -> dict[str, float | None]:
    """Last-word accuracy (greedy tokens all match) and perplexity exp(-mean loglik) per passage."""
    acc, acc_stderr = _mean_and_stderr([float(score.greedy) for score in scores])
    mean_loglik = sum(score.loglik for score in scores) / len(scores)
    return {"acc": acc, "acc_stderr": acc_stderr, "perplexity": math.exp(-mean_loglik)}


# --------------------------------------------------------------------------------------------
# Tasks


@dataclass(frozen=True)
class _Options:
    """How every task of one call is run (the keyword arguments of :func:`evaluate_tasks`)."""

    limit: int | None
    batch_size: int
    seed: int
    progress: bool
    subset: str
    calib_fraction: float
    split_seed: int
    logliks: bool
    pruner: TestTimePruner | None = None  # μ-MoE: masks per context


@dataclass(frozen=True)
class _Selection:
    """Which examples of a task are scored, and the sentence that says so in the output."""

    indices: list[int]
    sample: str


def _select(total: int, options: _Options) -> _Selection:
    pool, prefix = list(range(total)), ""
    if options.calib_fraction > 0:
        _, pool = split_indices(total, options.calib_fraction, options.split_seed)
        prefix = (
            f"evaluation part ({len(pool)} of {total}; {options.calib_fraction:g} held out for "
            f"calibration, split seed {options.split_seed}), "
        )
    chosen = select_indices(len(pool), options.limit, options.subset, options.seed)
    indices = [pool[index] for index in chosen]
    if len(chosen) == len(pool):
        return _Selection(indices, f"{prefix}all {len(pool)}")
    how = f"seeded subset, seed {options.seed}" if options.subset == "seeded" else "the first ones"
    return _Selection(indices, f"{prefix}limit {len(chosen)} of {len(pool)} ({how})")


def _per_example(examples: list[Example], scores: list[Scored]) -> list[list[float]]:
    """The flat list of request scores regrouped as one list of choice logliks per example."""
    grouped, start = [], 0
    for example in examples:
        grouped.append([score.loglik for score in scores[start : start + len(example.requests)]])
        start += len(example.requests)
    return grouped


def _task_metrics(
    task: LoadedTask, examples: list[Example], scores: list[Scored]
) -> dict[str, Any]:
    if task.spec.kind == "loglikelihood":
        return lambada_metrics(scores)
    metrics = multiple_choice_metrics(examples, _per_example(examples, scores))
    # Report what the harness's config lists for the task (BoolQ, RTE, WinoGrande: acc only).
    return {
        name: value
        for name, value in metrics.items()
        if name.removesuffix("_stderr") in task.spec.metrics
    }


def _evaluate_one(
    model: Any, tokenizer: Any, task: LoadedTask, options: _Options
) -> dict[str, Any]:
    selection = _select(len(task.examples), options)
    examples = [task.examples[index] for index in selection.indices]
    requests = [request for example in examples for request in example.requests]
    started = time.perf_counter()
    if options.pruner is None:
        scores = score_requests(model, tokenizer, requests, options.batch_size, options.progress, desc=task.spec.name)
    else:
        scores = score_requests_test_time(
            options.pruner, tokenizer, requests, options.batch_size, options.progress, desc=task.spec.name
        )
    entry: dict[str, Any] = {
        **_task_metrics(task, examples, scores),
        "n": len(examples),
        "total": len(task.examples),
        "sample": selection.sample,
        "files": list(task.files),
        "seconds": round(time.perf_counter() - started, 2),
    }
    if task.note:
        entry["note"] = task.note
    if options.logliks:
        entry["indices"] = selection.indices
        entry["logliks"] = _per_example(examples, scores)
    logger.info("%s: acc %.4f on %s", task.spec.name, entry["acc"], selection.sample)
    return entry


def evaluate_tasks(
    model: Any,
    tokenizer: Any,
    tasks: list[str],
    task_dir: Path,
    limit: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
    subset: str = "seeded",
    calib_fraction: float = 0.0,
    split_seed: int = 0,
    logliks: bool = False,
    pruner: TestTimePruner | None = None,
) -> dict[str, Any]:
    """Zero-shot metrics of ``model`` on each task, and the mean ``acc`` over the tasks.

    ``limit`` scores at most that many examples per task: a fixed sample drawn with ``seed``
    (``subset="seeded"``) or the first ones (``subset="first"``, as lm-eval's ``--limit``).
    With ``calib_fraction`` > 0 each task is first split with ``split_seed`` and only its
    evaluation part is scored (the part :func:`task_examples` does not hand to calibration).
    Every task's entry says which examples were scored, from which file, and any caveat;
    ``logliks=True`` adds each scored example's index and per-choice log-likelihoods.
    With ``pruner`` (a :class:`~paretoprune.evaluators.runtime_pruning.TestTimePruner` on
    ``model``), every context is scored with masks made from that context alone.
    """
    if not tasks:
        raise InputError(f"no zero-shot task given: name some of {', '.join(TASKS)}")
    options = _Options(
        limit, batch_size, seed, progress, subset, calib_fraction, split_seed, logliks, pruner
    )
    # Read every task first, so a bad name or a missing file fails before any scoring.
    loaded = [load_task(task, Path(task_dir)) for task in tasks]
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        results = {
            task.spec.name: _evaluate_one(model, tokenizer, task, options) for task in loaded
        }
    finally:
        model.train(was_training)
    accuracies = [entry["acc"] for entry in results.values()]
    return {
        "protocol": PROTOCOL,
        "limit": limit,
        "subset": subset,
        "seed": seed,
        "tasks": results,
        "mean_acc": sum(accuracies) / len(accuracies),
        "notes": [entry["note"] for entry in results.values() if entry.get("note")],
    }
