"""Text sources to token windows: every file format, the builtin corpus, hub names, windows."""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
import types
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from paretoprune import data
from paretoprune.data import (
    TextSource,
    calibration_windows,
    contiguous_windows,
    evaluation_windows,
    load_text,
    padded_batch,
    random_windows,
    text_provenance,
    tokenize,
)
from paretoprune.errors import InputError
from paretoprune.testing import byte_tokenizer

DOCS = ["First document.\nIt has two lines.", "Second: ünïcödé ✓", ""]
JOINED = "\n\n".join(DOCS)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return byte_tokenizer()


@pytest.fixture
def no_hub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither offline flag set, so each test decides what the hub looks like."""
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


# --- local files ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".txt", ".raw"])
def test_plain_text_is_read_verbatim_and_hashed(tmp_path: Path, suffix: str) -> None:
    raw = " = Title = \r\n line with ünicode\n\n\n  trailing  ".encode()
    path = tmp_path / f"corpus{suffix}"
    path.write_bytes(raw)

    source = load_text(str(path))

    assert source.text == raw.decode("utf-8")  # no newline translation, no stripping
    assert source.sha256 == hashlib.sha256(raw).hexdigest()
    assert (source.name, source.kind) == (str(path), "file")


def test_jsonl_documents_are_joined_with_a_blank_line(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text(
        "\n".join(json.dumps({"text": doc, "url": "u"}) for doc in DOCS) + "\n\n", encoding="utf-8"
    )

    assert load_text(str(path)).text == JOINED


@pytest.mark.parametrize("key", ["content", "document"])
def test_jsonl_falls_back_to_common_text_keys(tmp_path: Path, key: str) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", [{key: doc, "id": i} for i, doc in enumerate(DOCS)])

    assert load_text(str(path)).text == JOINED


@pytest.mark.parametrize(
    "payload",
    [
        [{"text": doc} for doc in DOCS],
        {"data": [{"text": doc} for doc in DOCS]},
        DOCS,
    ],
    ids=["list", "data-key", "strings"],
)
def test_json_layouts(tmp_path: Path, payload: Any) -> None:
    path = tmp_path / "docs.json"
    path.write_text(json.dumps(payload), encoding="utf-8")

    assert load_text(str(path)).text == JOINED


@pytest.mark.parametrize("name", ["docs.json.gz", "docs.jsonl.gz"])
def test_gzipped_json_lines(tmp_path: Path, name: str) -> None:
    # C4 ships JSON Lines under a .json.gz name; both names must read the same documents.
    lines = "".join(json.dumps({"text": doc, "timestamp": "t"}) + "\n" for doc in DOCS)
    path = tmp_path / name
    path.write_bytes(gzip.compress(lines.encode("utf-8")))

    assert load_text(str(path)).text == JOINED


def test_gzipped_json_list(tmp_path: Path) -> None:
    path = tmp_path / "docs.json.gz"
    path.write_bytes(gzip.compress(json.dumps([{"text": doc} for doc in DOCS]).encode()))

    assert load_text(str(path)).text == JOINED


@pytest.mark.parametrize("column", ["text", "content"])
def test_parquet_text_column(tmp_path: Path, column: str) -> None:
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": list(range(len(DOCS))), column: DOCS}), path)

    assert load_text(str(path)).text == JOINED


def test_parquet_without_text_column_lists_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": [1, 2], "body": ["a", "b"]}), path)

    with pytest.raises(InputError, match=r"no text field .*found: id, body"):
        load_text(str(path))


def test_unknown_text_key_lists_the_keys_found(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", [{"body": "x", "url": "u"}])

    with pytest.raises(InputError, match=r"text, content, document; found: body, url"):
        load_text(str(path))


def test_a_document_without_the_text_field_is_named(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "docs.jsonl", [{"text": "a"}, {"text": "b"}, {"url": "c"}])

    with pytest.raises(InputError, match="document 3"):
        load_text(str(path))


def test_invalid_json_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "ok"}\n{"text": broken\n', encoding="utf-8")

    with pytest.raises(InputError, match="line 2 is not valid JSON"):
        load_text(str(path))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.txt", None, "does not exist"),
        ("empty.txt", b"", "holds no text"),
        ("blank.txt", b" \n\t\n", "holds no text"),
        ("empty.jsonl", b"\n\n", "holds no documents"),
        ("table.csv", b"text\nhello\n", "unsupported extension"),
        ("latin1.txt", "café".encode("latin-1"), "not UTF-8"),
        ("broken.json.gz", b"not gzip at all", "cannot read data file"),
        ("broken.parquet", b"not parquet", "cannot read parquet file"),
    ],
)
def test_bad_files_give_one_line_errors(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)

    with pytest.raises(InputError, match=message) as caught:
        load_text(str(path))

    assert "\n" not in str(caught.value)
    assert name in str(caught.value)


def test_a_directory_or_an_unknown_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is not a file"):
        load_text(str(tmp_path))
    with pytest.raises(InputError, match="unknown data source 'wikitext'"):
        load_text("wikitext")


# --- builtin and provenance ----------------------------------------------------------------


def test_builtin_is_the_stdlib_english_corpus() -> None:
    first, second = load_text("builtin"), load_text("BUILTIN")

    assert first.kind == "builtin"
    assert len(first.text) > 100_000
    assert 'The "assert" statement' in first.text
    assert first == second  # same text, same hash, every time


def test_sha256_is_of_the_text_and_tells_texts_apart(tmp_path: Path) -> None:
    one, other = tmp_path / "one.txt", tmp_path / "other.txt"
    one.write_text("alpha beta", encoding="utf-8")
    other.write_text("alpha beta.", encoding="utf-8")

    assert load_text(str(one)).sha256 == hashlib.sha256(b"alpha beta").hexdigest()
    assert load_text(str(one)).sha256 != load_text(str(other)).sha256


def test_text_provenance_names_the_text() -> None:
    source = load_text("builtin")

    assert text_provenance("builtin") == {
        "name": "builtin",
        "sha256": source.sha256,
        "kind": "builtin",
    }
    assert text_provenance(source) == text_provenance("builtin")


# --- hub names -----------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"])
def test_hub_names_offline_ask_for_a_local_file(
    monkeypatch: pytest.MonkeyPatch, no_hub_env: None, flag: str
) -> None:
    monkeypatch.setenv(flag, "1")

    with pytest.raises(InputError, match="offline mode.*pass a local file path instead"):
        load_text("wikitext2")


def test_hub_names_without_datasets_ask_for_a_local_file(
    monkeypatch: pytest.MonkeyPatch, no_hub_env: None
) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail

    with pytest.raises(InputError, match="needs the `datasets` package.*local file path"):
        load_text("c4")


class FakeRows:
    """Just enough of `datasets.Dataset` for the loader: len, select, a column."""

    def __init__(self, rows: list[dict[str, str]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, indices: range) -> FakeRows:
        return FakeRows([self.rows[i] for i in indices])

    def __getitem__(self, column: str) -> list[str]:
        return [row[column] for row in self.rows]


def fake_datasets(calls: list[dict[str, Any]], failure: Exception | None = None) -> Any:
    def load_dataset(path: str, config: str | None, data_files: Any, split: str) -> FakeRows:
        calls.append({"path": path, "config": config, "data_files": data_files, "split": split})
        if failure is not None:
            raise failure
        column = "sentence" if "ptb" in path else "text"
        return FakeRows([{column: f"{split} doc {i}"} for i in range(2000)])

    return types.SimpleNamespace(load_dataset=load_dataset)


def test_hub_c4_follows_the_paper_protocol(
    monkeypatch: pytest.MonkeyPatch, no_hub_env: None
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets(calls))

    evaluation = load_text("c4")
    calibration = load_text("c4", purpose="calibration")

    # evaluation: the first 1100 validation documents joined with spaces, as SparseGPT does
    assert evaluation.text == " ".join(f"validation doc {i}" for i in range(1100))
    assert (evaluation.name, evaluation.kind) == ("c4:validation", "dataset")
    assert calls[0]["data_files"] == {"validation": "en/c4-validation.00000-of-00008.json.gz"}
    assert calls[1]["split"] == "train"
    assert calibration.text.startswith("train doc 0\n\ntrain doc 1")


def test_hub_wikitext2_test_stream(monkeypatch: pytest.MonkeyPatch, no_hub_env: None) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets(calls))

    source = load_text("wikitext2")

    wikitext = {"path": "Salesforce/wikitext", "config": "wikitext-2-raw-v1", "data_files": None}
    assert calls == [{**wikitext, "split": "test"}]
    assert source.text.startswith("test doc 0\n\ntest doc 1")


def test_hub_failure_is_one_line_with_the_way_out(
    monkeypatch: pytest.MonkeyPatch, no_hub_env: None
) -> None:
    failure = ConnectionError("cannot reach the hub\nlong traceback text")
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets([], failure))

    message = r"could not load 'ptb' .*cannot reach the hub\).*local file"
    with pytest.raises(InputError, match=message):
        load_text("ptb")


# --- tokens and windows --------------------------------------------------------------------


def test_tokenize_adds_no_special_tokens_and_does_not_warn(
    capsys: pytest.CaptureFixture[str],
) -> None:
    tokenizer = byte_tokenizer()  # a fresh one: this test shortens its model_max_length
    tokenizer.model_max_length = 16
    text = "a text much longer than sixteen bytes, tokenized in one call"

    ids = tokenize(tokenizer, TextSource("t", text, "0", "file"))

    assert "longer than the specified maximum" not in capsys.readouterr().err
    warned = "sequence-length-is-longer-than-the-specified-maximum"
    assert not tokenizer.deprecation_warnings.get(warned, False)
    assert ids.dtype == torch.long and ids.dim() == 1
    assert len(ids) == len(text.encode("utf-8"))  # one id per byte, no BOS/EOS added
    assert tokenizer.decode(ids) == text


def test_a_long_text_is_tokenized_in_pieces_without_loss(
    tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "".join(f"line {i} of the text\n  indented {i}\n\n" for i in range(200))
    whole = tokenize(tokenizer, TextSource("t", text, "0", "file"))
    monkeypatch.setattr(data, "ONE_SHOT_CHARS", 100)
    monkeypatch.setattr(data, "PIECE_CHARS", 97)

    pieces = list(data._pieces(text, 97))
    assert "".join(pieces) == text
    assert all(not piece[0].isspace() for piece in pieces)  # cut only before a plain line
    assert torch.equal(tokenize(tokenizer, TextSource("t", text, "0", "file")), whole)


def is_slice_of(window: torch.Tensor, tokens: torch.Tensor) -> bool:
    return bool((tokens.unfold(0, len(window), 1) == window).all(dim=1).any())


def test_calibration_windows_are_seeded_slices(tokenizer: Any) -> None:
    source = load_text("builtin")
    tokens = tokenize(tokenizer, source)

    first = calibration_windows(tokenizer, source, nsamples=6, seqlen=32, seed=3)
    torch.manual_seed(12345)  # the global RNG must not matter
    again = calibration_windows(tokenizer, "builtin", nsamples=6, seqlen=32, seed=3)
    other = calibration_windows(tokenizer, source, nsamples=6, seqlen=32, seed=4)

    assert first.shape == (6, 32) and first.dtype == torch.long
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert all(is_slice_of(window, tokens) for window in first)


def test_random_windows_cover_the_whole_valid_range() -> None:
    tokens = torch.arange(10)

    windows = random_windows(tokens, nsamples=400, seqlen=4, seed=0)

    # starts lie in [0, total - seqlen - 1] = [0, 5], as in SparseGPT's loaders
    assert set(windows[:, 0].tolist()) == set(range(6))
    assert torch.equal(windows - windows[:, :1], torch.arange(4).expand(400, 4))


def test_calibration_needs_seqlen_plus_one_tokens() -> None:
    only_start = random_windows(torch.arange(5), nsamples=2, seqlen=4, seed=0)
    assert only_start.tolist() == [[0, 1, 2, 3]] * 2
    with pytest.raises(InputError, match="fewer than seqlen\\+1 = 6"):
        random_windows(torch.arange(5), nsamples=2, seqlen=5, seed=0)


@pytest.mark.parametrize(("nsamples", "seqlen"), [(0, 8), (2, 0), (-1, 8), (2, 2.5)])
def test_window_sizes_must_be_positive_integers(tokenizer: Any, nsamples: Any, seqlen: Any) -> None:
    with pytest.raises(InputError, match="must be a positive integer"):
        calibration_windows(tokenizer, "builtin", nsamples=nsamples, seqlen=seqlen, seed=0)


def test_evaluation_windows_are_contiguous_and_non_overlapping(tokenizer: Any) -> None:
    tokens = tokenize(tokenizer, "builtin")

    windows = evaluation_windows(tokenizer, "builtin", seqlen=1000)
    first_three = evaluation_windows(tokenizer, "builtin", seqlen=1000, max_windows=3)

    assert windows.shape == (len(tokens) // 1000, 1000)
    assert torch.equal(windows.reshape(-1), tokens[: windows.numel()])
    assert torch.equal(first_three, windows[:3])


def test_contiguous_window_limits() -> None:
    assert contiguous_windows(torch.arange(10), seqlen=3, max_windows=99).tolist() == [
        [0, 1, 2],
        [3, 4, 5],
        [6, 7, 8],
    ]
    with pytest.raises(InputError, match="fewer than one window of 11"):
        contiguous_windows(torch.arange(10), seqlen=11)
    with pytest.raises(InputError, match="max_windows must be a positive integer"):
        contiguous_windows(torch.arange(10), seqlen=3, max_windows=0)


# --- the real corpora ----------------------------------------------------------------------


WIKITEXT_SHA256 = "173c87a53759e0201f33e0ccf978e510c2042d7f2cb78229d9a50d79b9e7dd08"


def test_real_wikitext2_test_file(shared_data: Path, tokenizer: Any) -> None:
    source = load_text(str(shared_data / "wikitext2" / "wiki.test.raw"))

    assert source.sha256 == WIKITEXT_SHA256  # read verbatim: the text's hash is the file's
    assert source.text.startswith(" \n = Robert Boulter = \n")
    assert source.text.count("\n") == 4358

    windows = evaluation_windows(tokenizer, source, seqlen=128, max_windows=2)
    assert tokenizer.decode(windows[0]).startswith(" \n = Robert Boulter = \n")


def test_real_c4_files(shared_data: Path) -> None:
    c4 = shared_data / "c4"
    validation = load_text(str(c4 / "c4-en-validation-shard00000-first1000.json.gz"))
    train = load_text(str(c4 / "c4-en-train-shard00000-first1000.jsonl"))

    assert validation.text.startswith(
        "The woman who died after falling from a bridge over the A21 has been identified"
    )
    assert train.text.startswith("Beginners BBQ Class Taking Place in Missoula!")
    # 1000 documents each, joined by 999 blank lines; the C4 texts total 2,163,590 characters
    assert len(validation.text) == 2_163_590 + 2 * 999
    assert len(train.text) == 2_189_457 + 2 * 999


# --- short texts as one padded batch ---------------------------------------------------------


def test_padded_batch_pads_on_the_right_and_masks_the_padding(tokenizer: Any) -> None:
    ids, mask = padded_batch(tokenizer, ["abc", "a", "abcdefgh"], seqlen=5)
    assert ids.shape == mask.shape == (3, 5)  # as wide as the longest row after the cut
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]
    expected = tokenizer("abcdefgh", add_special_tokens=False).input_ids[:5]
    assert ids[2].tolist() == expected and ids[0, :3].tolist() == expected[:3]
    assert set(ids[1, 1:].tolist()) == {tokenizer.pad_token_id}
    with pytest.raises(InputError, match="no texts"):
        padded_batch(tokenizer, [], seqlen=5)
