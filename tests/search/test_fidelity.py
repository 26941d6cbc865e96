"""The archive's fidelity column and the front that believes each candidate's most faithful row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from paretoprune.errors import InputError
from paretoprune.search.archive import Archive
from paretoprune.search.fidelity import BASE, Fidelity
from paretoprune.search.finalists import select
from paretoprune.search.pareto import Objectives
from paretoprune.search.run import EVALUATIONS_FILE

OBJECTIVES = ("kl", "sparsity")


def _search_rows(archive: Archive, rows: list[tuple[float, float]]) -> None:
    for kl, sparsity in rows:
        archive.append(generation=0, genome=[sparsity], candidate={"kl": kl},
                       objectives={"kl": kl, "sparsity": sparsity})  # fmt: skip


def test_fidelity_labels_read_back_and_order_applied_above_masks_then_tokens() -> None:
    for fidelity in (Fidelity(), Fidelity(16384), Fidelity(16384, ("update",)), Fidelity(2048, ("fw", "update"))):
        assert Fidelity.parse(fidelity.label) == fidelity
    assert Fidelity(16384, ("update",)).label == "16384+update"
    ranked = sorted([Fidelity(65536), Fidelity(2048, ("update",)), Fidelity(), Fidelity(16384, ("update",))],
                    key=lambda f: f.order)  # fmt: skip
    assert [f.label for f in ranked] == [BASE, "65536", "2048+update", "16384+update"]
    with pytest.raises(InputError, match="not understood"):
        Fidelity.parse("lots+update")


def test_the_fidelity_column_round_trips(tmp_path: Path) -> None:
    archive = Archive(tmp_path, OBJECTIVES)
    _search_rows(archive, [(0.5, 0.5), (0.4, 0.4)])
    archive.append(generation=0, genome=[0.5], objectives={"kl": 0.3, "sparsity": 0.5}, fidelity="4096+update",
                   source_id=0)  # fmt: skip
    archive.compact()
    frame = Archive.load(tmp_path).frame()
    assert frame["fidelity"].tolist() == [BASE, BASE, "4096+update"]
    assert frame["source_id"].isna().tolist() == [True, True, False] and frame["source_id"][2] == 0
    with pytest.raises(ValueError, match="source_id"):  # a finalist row must say what it scores again
        archive.append(generation=0, genome=[0.4], objectives={"kl": 0.2, "sparsity": 0.4}, fidelity="4096+update")
    with pytest.raises(ValueError, match="not an evaluation"):
        archive.append(generation=0, genome=[0.4], objectives={"kl": 0.2, "sparsity": 0.4}, fidelity="4096",
                       source_id=99)  # fmt: skip


def test_an_archive_written_before_the_column_loads_as_base_and_takes_finalists(tmp_path: Path) -> None:
    old = pa.schema([("eval_id", pa.int64()), ("generation", pa.int64()), ("genome", pa.list_(pa.float64())),
                     ("candidate", pa.string()), ("kl", pa.float64()), ("worker", pa.string()),
                     ("node_id", pa.string()), ("seconds", pa.float64()), ("status", pa.string()),
                     ("error", pa.string())])  # fmt: skip
    rows = [{"eval_id": i, "generation": 0, "genome": [0.1 * i], "candidate": "{}", "kl": 1.0 - 0.1 * i,
             "worker": "w", "node_id": "n", "seconds": 1.0, "status": "ok", "error": None}
            for i in range(3)]  # fmt: skip
    written = {"version": 1, "objectives": ["kl"], "epoch": 0}
    metadata = {b"paretoprune.archive": json.dumps(written).encode()}
    table = pa.Table.from_pylist(rows, schema=old).replace_schema_metadata(metadata)
    pq.write_table(table, tmp_path / EVALUATIONS_FILE)

    frame = Archive.load(tmp_path).frame()
    assert frame["fidelity"].tolist() == [BASE] * 3 and frame["source_id"].isna().all()
    archive = Archive(tmp_path, ("kl",))  # a rescore of an old run appends to it
    archive.append(generation=0, genome=[0.1], objectives={"kl": 0.05}, fidelity="4096+update", source_id=1)
    again = Archive.load(tmp_path).frame()
    assert again["fidelity"].tolist() == [BASE] * 3 + ["4096+update"]
    # Candidate 1 is believed at its new fidelity; 2, the best at base, was not scored again and stays.
    assert Objectives.of(["kl"]).front(again)["eval_id"].tolist() == [3, 2]


def test_the_front_believes_each_candidates_most_faithful_row_and_compares_like_with_like(tmp_path: Path) -> None:
    archive = Archive(tmp_path, OBJECTIVES)
    # base: 0 (kl 0.40 at 0.5), 1 (0.41 at 0.5, dominated by 0), 2 (0.60 at 0.6), 3 (0.90 at 0.6, dominated)
    _search_rows(archive, [(0.40, 0.5), (0.41, 0.5), (0.60, 0.6), (0.90, 0.6)])
    objectives = Objectives.of(OBJECTIVES)
    assert objectives.front(archive.frame())["eval_id"].tolist() == [0, 2]
    # Scored as applied, candidate 1 beats candidate 0: the update changed which allocation is best.
    for source, kl in ((0, 0.30), (1, 0.25)):
        archive.append(generation=0, genome=[0.5], objectives={"kl": kl, "sparsity": 0.5}, fidelity="4096+update",
                       source_id=source)  # fmt: skip
    front = objectives.front(archive.frame())
    # 1's finalist row (eval 5) beats 0's at their fidelity; 2 was not scored again and no base row
    # dominates it. The finalists' low kl is never compared with 2's base kl (2 would be dominated).
    assert front["eval_id"].tolist() == [5, 2]
    assert front["fidelity"].tolist() == ["4096+update", BASE]
    # A more faithful stage outranks the first: candidate 0 wins on more tokens.
    for source, kl in ((0, 0.31), (1, 0.33)):
        archive.append(generation=0, genome=[0.5], objectives={"kl": kl, "sparsity": 0.5}, fidelity="16384+update",
                       source_id=source)  # fmt: skip
    assert objectives.front(archive.frame())["eval_id"].tolist() == [6, 2]
    assert archive.front()["eval_id"].tolist() == [6, 2]  # the archive's own front agrees


def test_finalists_are_whole_fronts_then_the_least_crowded(tmp_path: Path) -> None:
    archive = Archive(tmp_path, OBJECTIVES)
    # A front of five along sparsity, and two dominated rows.
    front = [(0.1, 0.40), (0.2, 0.50), (0.25, 0.52), (0.4, 0.60), (0.8, 0.70)]
    _search_rows(archive, front + [(0.5, 0.45), (0.9, 0.60)])
    objectives = Objectives.of(OBJECTIVES)
    frame = archive.frame()
    assert select(frame, objectives, BASE, 3) == [0, 4, 3]  # the ends, then the loneliest middle
    assert sorted(select(frame, objectives, BASE, 6)) == [0, 1, 2, 3, 4, 5]  # all of the first front first
    kl_only = Objectives.of(["kl"])
    assert select(frame, kl_only, BASE, 3) == [0, 1, 2]
    assert select(frame, kl_only, BASE, 2, among=[3, 4, 6]) == [3, 4]
    assert np.all(pd.Series(select(frame, objectives, "4096+update", 3)).empty)  # nothing at that fidelity
