"""Text sources to token tensors: the calibration and evaluation data of every run.

A *source* is what the user types after ``--calib`` or ``--data``:

- a local file: ``.txt`` / ``.raw`` (read verbatim), ``.jsonl``, ``.json``, any of those gzipped
  (``.json.gz``, ``.jsonl.gz``, ...), or ``.parquet``. Structured files hold documents in a text
  field (``text``, else ``content``, else ``document``); the documents are joined with a blank
  line (``"\\n\\n"``), the join GPTQ/SparseGPT use for the WikiText-2 test stream.
- ``builtin``: the English help topics that ship with every CPython (``pydoc_data.topics``), so
  a demo runs offline with no data at all.
- ``wikitext2``, ``c4``, ``ptb``: the usual corpora through the ``datasets`` package, when it is
  installed and the machine is online. These follow the SparseGPT/Wanda protocol text (split,
  join, number of C4 documents), so that their numbers compare with the papers.

The text is tokenized once, as a whole and without special tokens, then cut into windows:
seeded random windows for calibration, contiguous non-overlapping windows for evaluation.
Short texts of their own (a task's written-out answers) become one padded batch instead. The
sha256 of the text goes into recipes as provenance, so a result names exactly the text it used.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from paretoprune.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from transformers import PreTrainedTokenizerBase

__all__ = [
    "BUILTIN",
    "DATASET_NAMES",
    "TEXT_KEYS",
    "TextSource",
    "calibration_windows",
    "contiguous_windows",
    "disjoint_windows",
    "evaluation_windows",
    "held_out_windows",
    "load_text",
    "padded_batch",
    "random_windows",
    "text_provenance",
    "tokenize",
]

logger = logging.getLogger(__name__)

Purpose = Literal["evaluation", "calibration"]

BUILTIN = "builtin"
DOCUMENT_JOIN = "\n\n"
TEXT_KEYS = ("text", "content", "document")
TEXT_EXTENSIONS = (".txt", ".raw")
JSON_EXTENSIONS = (".json", ".jsonl")
SUPPORTED = ".txt, .raw, .jsonl, .json, .json.gz, .jsonl.gz, .parquet"
SOURCE_HINT = f"pass a local text file ({SUPPORTED}), `builtin`, or one of wikitext2, c4, ptb"

# Above this many characters a text is tokenized in pieces (see `_pieces`), to bound memory.
ONE_SHOT_CHARS = 8_000_000
PIECE_CHARS = 1_000_000


@dataclass(frozen=True)
class TextSource:
    """A loaded text and where it came from; ``kind`` is "file", "builtin" or "dataset"."""

    name: str
    text: str = field(repr=False)
    sha256: str
    kind: str


@dataclass(frozen=True)
class HubDataset:
    """Where one split of a named corpus lives on the hub, and how the papers make it one text."""

    path: str
    config: str | None
    split: str
    column: str
    join: str
    data_files: dict[str, str] | None = None
    max_documents: int | None = None


def _c4(split: str, shard: str, join: str, max_documents: int) -> HubDataset:
    return HubDataset("allenai/c4", None, split, "text", join, {split: shard}, max_documents)


def _wikitext(split: str, join: str) -> HubDataset:
    return HubDataset("Salesforce/wikitext", "wikitext-2-raw-v1", split, "text", join)


def _ptb(split: str) -> HubDataset:
    return HubDataset("ptb_text_only", "penn_treebank", split, "sentence", " ")


# The SparseGPT/Wanda data protocol per corpus and purpose. For C4 calibration the papers draw
# random documents from the whole train shard; here its first 5000 documents (about 11 M
# characters) stand in for the shard, since windows are drawn from one joined text.
HUB_DATASETS: dict[str, dict[str, HubDataset]] = {
    "wikitext2": {"evaluation": _wikitext("test", "\n\n"), "calibration": _wikitext("train", " ")},
    "c4": {
        "evaluation": _c4("validation", "en/c4-validation.00000-of-00008.json.gz", " ", 1100),
        "calibration": _c4("train", "en/c4-train.00000-of-01024.json.gz", DOCUMENT_JOIN, 5000),
    },
    "ptb": {"evaluation": _ptb("test"), "calibration": _ptb("train")},
}
DATASET_NAMES = tuple(HUB_DATASETS)


# ------------------------------------------------------------------------------------------
# Loading text
# ------------------------------------------------------------------------------------------


def load_text(source: str | os.PathLike[str], purpose: Purpose = "evaluation") -> TextSource:
    """Load a source by name or path (``~`` expands).

    ``purpose`` matters only for the named hub corpora, whose papers calibrate on one split and
    evaluate on another; a file or ``builtin`` is the same text either way. The reserved words
    win over a file of the same name in the working directory: write ``./c4`` for such a file.
    """
    if purpose not in ("evaluation", "calibration"):
        raise InputError(f"unknown data purpose {purpose!r}; use 'evaluation' or 'calibration'")
    name = os.fspath(source).strip()
    if not name:
        raise InputError(f"no data source given; {SOURCE_HINT}")
    if name.lower() == BUILTIN:
        return _text_source(BUILTIN, _builtin_text(), "builtin")
    if name.lower() in HUB_DATASETS:
        return _load_hub_dataset(name.lower(), purpose)
    return _load_file(Path(name).expanduser(), name)


def text_provenance(source: str | TextSource, purpose: Purpose = "evaluation") -> dict[str, str]:
    """What a recipe records about its text: enough to tell whether two runs used the same."""
    loaded = _as_text_source(source, purpose)
    return {"name": loaded.name, "sha256": loaded.sha256, "kind": loaded.kind}


def _text_source(name: str, text: str, kind: str) -> TextSource:
    if not text.strip():
        raise InputError(f"data source {name!r} holds no text; {SOURCE_HINT}")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return TextSource(name=name, text=text, sha256=digest, kind=kind)


def _as_text_source(source: str | TextSource, purpose: Purpose) -> TextSource:
    return source if isinstance(source, TextSource) else load_text(source, purpose)


def _builtin_text() -> str:
    """The stdlib's English corpus: the help topics in key order, so the text is stable."""
    from pydoc_data.topics import topics

    return DOCUMENT_JOIN.join(str(topics[key]) for key in sorted(topics))


# ------------------------------------------------------------------------------------------
# Local files
# ------------------------------------------------------------------------------------------


def _load_file(path: Path, name: str) -> TextSource:
    """Read a local file by its extension; a gzip wrapper is peeled off first."""
    if not path.exists():
        if not path.suffix:
            raise InputError(f"unknown data source {name!r} (no such name or file); {SOURCE_HINT}")
        raise InputError(f"data file {name!r} does not exist; {SOURCE_HINT}")
    if not path.is_file():
        raise InputError(f"data source {name!r} is not a file; pass a file ({SUPPORTED})")
    extension, compressed = _file_format(path)
    if extension == ".parquet" and not compressed:
        return _text_source(name, _parquet_text(path, name), "file")
    if extension not in TEXT_EXTENSIONS + JSON_EXTENSIONS:
        raise InputError(f"data file {name!r} has an unsupported extension; use {SUPPORTED}")
    text = _decode(_read_bytes(path, name, compressed), name)
    if extension in TEXT_EXTENSIONS:
        return _text_source(name, text, "file")
    parse = _jsonl_documents if extension == ".jsonl" else _json_documents
    return _text_source(name, DOCUMENT_JOIN.join(parse(text, name)), "file")


def _file_format(path: Path) -> tuple[str, bool]:
    """The extension that says how to parse the file, and whether gzip wraps it."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    compressed = suffixes[-1:] == [".gz"]
    if compressed:
        suffixes = suffixes[:-1]
    return (suffixes[-1] if suffixes else ""), compressed


def _read_bytes(path: Path, name: str, compressed: bool) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if compressed else raw
    except (OSError, EOFError) as error:
        raise InputError(f"cannot read data file {name!r} ({error}); check the file") from error


def _decode(raw: bytes, name: str) -> str:
    """UTF-8, strictly and verbatim (no newline translation), so the sha256 is the file's."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(
            f"data file {name!r} is not UTF-8 text (bad byte at offset {error.start}); "
            "convert it to UTF-8"
        ) from error


def _jsonl_documents(text: str, name: str) -> list[str]:
    """One JSON object per non-blank line."""
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            records.append(_parse_json_line(line, name, number))
    return _documents(records, name)


def _json_documents(text: str, name: str) -> list[str]:
    """A list of records, ``{"data": [...]}``, one record, or JSON Lines (C4 names those .json)."""
    try:
        loaded = json.loads(text)
    except json.JSONDecodeError:
        return _jsonl_documents(text, name)
    if isinstance(loaded, dict) and isinstance(loaded.get("data"), list):
        loaded = loaded["data"]
    return _documents(loaded if isinstance(loaded, list) else [loaded], name)


def _parse_json_line(line: str, name: str, number: int) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise InputError(
            f"data file {name!r} line {number} is not valid JSON ({error.msg}); fix or drop it"
        ) from error


def _documents(records: list[Any], name: str) -> list[str]:
    """The text of every record; bare strings count as documents themselves."""
    if not records:
        raise InputError(f"data file {name!r} holds no documents; {SOURCE_HINT}")
    key = _text_key(records[0], name)
    return [_document_text(record, key, name, index) for index, record in enumerate(records)]


def _text_key(record: Any, name: str) -> str | None:
    """The first of ``TEXT_KEYS`` the record has (None for a bare-string record)."""
    if isinstance(record, str):
        return None
    if not isinstance(record, dict):
        kind = type(record).__name__
        raise InputError(
            f"data file {name!r} holds {kind} records; expected objects with a text field"
        )
    for key in TEXT_KEYS:
        if key in record:
            return key
    found = ", ".join(map(str, record)) or "none"
    raise InputError(
        f"data file {name!r} has no text field (looked for {', '.join(TEXT_KEYS)}; "
        f"found: {found}); rename the field holding the text to `text`"
    )


def _document_text(record: Any, key: str | None, name: str, index: int) -> str:
    value = record if key is None else (record.get(key) if isinstance(record, dict) else None)
    if not isinstance(value, str):
        where = "record" if key is None else f"field {key!r}"
        raise InputError(
            f"data file {name!r}: the {where} of document {index + 1} is not a string; "
            "fix or drop that document"
        )
    return value


def _parquet_text(path: Path, name: str) -> str:
    """The documents of the text column, joined like any other structured file."""
    import pyarrow.parquet as pq

    columns = _parquet_read(lambda: pq.read_schema(path).names, name)
    key = _text_key(dict.fromkeys(columns), name)
    values = _parquet_read(lambda: pq.read_table(path, columns=[key]).column(0).to_pylist(), name)
    texts = [_document_text({key: value}, key, name, index) for index, value in enumerate(values)]
    return DOCUMENT_JOIN.join(texts)


def _parquet_read(read: Callable[[], list[Any]], name: str) -> list[Any]:
    """Run one pyarrow read; its errors (OSError, ArrowInvalid) become one line for the user."""
    try:
        return read()
    except (OSError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"cannot read parquet file {name!r} ({reason}); check the file") from error


# ------------------------------------------------------------------------------------------
# Named corpora from the hub
# ------------------------------------------------------------------------------------------


def _load_hub_dataset(name: str, purpose: Purpose) -> TextSource:
    """A named corpus through `datasets`; offline or without it, the way out is a local file."""
    spec = HUB_DATASETS[name][purpose]
    way_out = f"pass a local file path instead (a copy of {name} as {SUPPORTED})"
    if _hub_offline():
        raise InputError(
            f"data source {name!r} needs the Hugging Face hub, but offline mode is set; {way_out}"
        )
    try:
        import datasets
    except ImportError as error:
        raise InputError(
            f"data source {name!r} needs the `datasets` package "
            f"(pip install 'paretoprune[hub]'); {way_out}"
        ) from error
    try:
        documents = _hub_documents(datasets, spec)
    except Exception as error:  # any hub failure (network, auth, format) has the same way out
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise InputError(f"could not load {name!r} from the hub ({reason}); {way_out}") from error
    logger.info("loaded %s: %d documents of %s [%s]", name, len(documents), spec.path, spec.split)
    return _text_source(f"{name}:{spec.split}", spec.join.join(documents), "dataset")


def _hub_documents(datasets: Any, spec: HubDataset) -> list[str]:
    rows = datasets.load_dataset(
        spec.path, spec.config, data_files=spec.data_files, split=spec.split
    )
    if spec.max_documents is not None:
        rows = rows.select(range(min(spec.max_documents, len(rows))))
    return [str(value) for value in rows[spec.column]]


def _hub_offline() -> bool:
    flags = (os.environ.get("HF_DATASETS_OFFLINE", ""), os.environ.get("HF_HUB_OFFLINE", ""))
    return any(flag.strip().lower() in ("1", "true", "yes", "on") for flag in flags)


# ------------------------------------------------------------------------------------------
# Tokens and windows
# ------------------------------------------------------------------------------------------


def tokenize(
    tokenizer: PreTrainedTokenizerBase, source: str | TextSource, purpose: Purpose = "evaluation"
) -> torch.Tensor:
    """The whole text as one 1-D LongTensor of token ids, without special tokens.

    The text is tokenized in one call, as the papers do, so no token depends on where a cut
    fell. Only a very long text (above ``ONE_SHOT_CHARS``) is cut into pieces at line starts,
    to bound memory; a token at a cut may then differ from the one-call result.
    """
    text = _as_text_source(source, purpose).text
    pieces = [text] if len(text) <= ONE_SHOT_CHARS else list(_pieces(text, PIECE_CHARS))
    # verbose=False: a text is longer than model_max_length by design; windows keep it in range.
    encoded = tokenizer(
        pieces, add_special_tokens=False, verbose=False, return_attention_mask=False
    )
    ids = [token for piece in encoded["input_ids"] for token in piece]
    return torch.tensor(ids, dtype=torch.long)


def _pieces(text: str, size: int) -> Iterable[str]:
    """Pieces of about ``size`` characters, each cut before a line that starts with a non-space."""
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            end = _line_start_before(text, start, end)
        yield text[start:end]
        start = end


def _line_start_before(text: str, start: int, end: int) -> int:
    """The last start of a non-blank, non-indented line in (start, end], else ``end`` itself."""
    newline = text.rfind("\n", start, end - 1)
    while newline > start and text[newline + 1].isspace():
        newline = text.rfind("\n", start, newline)
    return newline + 1 if newline > start else end


def random_windows(tokens: torch.Tensor, nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """``nsamples`` windows of ``seqlen`` tokens at seeded random starts (with replacement).

    Starts are uniform over ``[0, total - seqlen - 1]``, as in SparseGPT's loaders. A private
    generator keeps the draw independent of torch's global RNG: the same seed gives the same
    windows whatever ran before.
    """
    _check_positive(nsamples=nsamples, seqlen=seqlen)
    flat = tokens.reshape(-1)
    if flat.numel() < seqlen + 1:
        raise InputError(
            f"the calibration text has {flat.numel()} tokens, fewer than seqlen+1 = {seqlen + 1}; "
            "use a longer text or a smaller --seqlen"
        )
    return flat[_random_starts(flat.numel(), nsamples, seqlen, seed)[:, None] + torch.arange(seqlen)[None, :]]


def _random_starts(total: int, nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """The starts :func:`random_windows` draws from a text of ``total`` tokens."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randint(0, total - seqlen, (nsamples,), generator=generator)


def disjoint_windows(
    tokens: torch.Tensor, nsamples: int, seqlen: int, seed: int, taken: Sequence[tuple[int, int, int]]
) -> torch.Tensor:
    """``nsamples`` seeded random windows that share no token with the windows ``taken`` names.

    Each entry of ``taken`` is the ``(nsamples, seqlen, seed)`` of a :func:`random_windows`
    draw from the same ``tokens`` (the fitness windows, say). Starts are drawn uniformly, with
    replacement, among the starts whose whole window lies outside every taken window, so that a
    score on these windows is a score on text the taken windows never saw.
    """
    _check_positive(nsamples=nsamples, seqlen=seqlen)
    flat = tokens.reshape(-1)
    used = torch.zeros(flat.numel(), dtype=torch.int64)
    for count, length, draw_seed in taken:
        for start in _random_starts(flat.numel(), count, length, draw_seed).tolist():
            used[start : start + length] = 1
    # A start is free when its window holds no used token: a difference of running counts.
    running = torch.cat([torch.zeros(1, dtype=torch.int64), used.cumsum(0)])
    starts = torch.arange(max(flat.numel() - seqlen, 0))
    free = starts[running[starts + seqlen] == running[starts]]
    if not len(free):
        raise InputError(f"the calibration text has no {seqlen}-token stretch that the fitness and calibration "
                         "windows leave untouched: use a longer text, fewer --nsamples or a shorter --seqlen")
    generator = torch.Generator().manual_seed(int(seed))
    chosen = free[torch.randint(0, len(free), (nsamples,), generator=generator)]
    return flat[chosen[:, None] + torch.arange(seqlen)[None, :]]


def contiguous_windows(
    tokens: torch.Tensor, seqlen: int, max_windows: int | None = None
) -> torch.Tensor:
    """The standard evaluation cut: ``total // seqlen`` back-to-back windows from the start
    (the first ``max_windows`` of them); the tail shorter than a window is dropped."""
    _check_positive(seqlen=seqlen)
    if max_windows is not None:
        _check_positive(max_windows=max_windows)
    flat = tokens.reshape(-1)
    count = flat.numel() // seqlen
    if count == 0:
        raise InputError(
            f"the evaluation text has {flat.numel()} tokens, fewer than one window of {seqlen}; "
            "use a longer text or a smaller --seqlen"
        )
    if max_windows is not None:
        count = min(count, max_windows)
    return flat[: count * seqlen].reshape(count, seqlen).clone()


def calibration_windows(
    tokenizer: PreTrainedTokenizerBase,
    source: str | TextSource,
    nsamples: int,
    seqlen: int,
    seed: int,
) -> torch.Tensor:
    """LongTensor[nsamples, seqlen]: seeded random windows of the source (its calibration split)."""
    _check_positive(nsamples=nsamples, seqlen=seqlen)  # before the costly tokenization
    return random_windows(tokenize(tokenizer, source, "calibration"), nsamples, seqlen, seed)


def held_out_windows(
    tokenizer: PreTrainedTokenizerBase,
    source: str | TextSource,
    nsamples: int,
    seqlen: int,
    seed: int,
    taken: Sequence[tuple[int, int, int]],
) -> torch.Tensor:
    """LongTensor[nsamples, seqlen]: seeded windows of the calibration split that share no token
    with the :func:`calibration_windows` draws ``taken`` names (see :func:`disjoint_windows`)."""
    _check_positive(nsamples=nsamples, seqlen=seqlen)
    return disjoint_windows(tokenize(tokenizer, source, "calibration"), nsamples, seqlen, seed, taken)


def evaluation_windows(
    tokenizer: PreTrainedTokenizerBase,
    source: str | TextSource,
    seqlen: int,
    max_windows: int | None = None,
) -> torch.Tensor:
    """LongTensor[n, seqlen]: contiguous non-overlapping windows of the source (its test split)."""
    _check_positive(seqlen=seqlen)
    if max_windows is not None:
        _check_positive(max_windows=max_windows)
    return contiguous_windows(tokenize(tokenizer, source, "evaluation"), seqlen, max_windows)


def padded_batch(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], seqlen: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Short texts as one batch: token ids padded on the right, and the attention mask.

    Each text is tokenized on its own (no special tokens) and cut at ``seqlen`` tokens; the
    batch is as wide as its longest row. The mask is 1 for a token and 0 for padding, so that
    whatever scores the batch can leave the padding out.
    """
    _check_positive(seqlen=seqlen)
    if not texts:
        raise InputError("no texts to batch: give at least one")
    rows = [tokenizer(text, add_special_tokens=False).input_ids[:seqlen] for text in texts]
    width = max(len(row) for row in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([row + [pad] * (width - len(row)) for row in rows], dtype=torch.long)
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows], dtype=torch.long)
    return ids, mask


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
