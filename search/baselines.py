"""The baselines of a search: the known methods it starts from, found again in its archive.

A search's first population holds the known methods its space can express
(:meth:`~paretoprune.search.space.SearchSpace.baselines`: uniform Wanda and OWL at the target,
or uniform Wanda at three levels of a range). They are the yardstick of the search: the finalist
stage scores them beside the finalists on the validation windows, and the exported recipe is
judged against them there (:mod:`paretoprune.search.validation`).

The algorithm repairs its start genomes, and its first generation may add random ones, so a
baseline's row is found by its genome among the generation-0 rows of the search's fitness. The
run folder keeps what was found (``Run.save_baselines``): ``export`` reads it without loading
the model.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from paretoprune.search.fidelity import BASE

__all__ = ["GENOME_TOLERANCE", "baseline_table", "first_population_baselines"]

# How far a generation-0 genome may lie from a baseline's and still be it: a repair re-encodes
# the decoded candidate, which moves genes by rounding only.
GENOME_TOLERANCE = 1e-6


def first_population_baselines(frame: pd.DataFrame, genomes: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Name -> eval_id of the generation-0 search row whose genome is each baseline's.

    A baseline the archive does not hold (an algorithm that did not start from it) is left out.
    """
    rows = frame[(frame["generation"] == 0) & (frame["fidelity"] == BASE)] if len(frame) else frame
    found: dict[str, int] = {}
    for name, genome in genomes.items():
        wanted = np.asarray(genome, dtype=float)
        for eval_id, stored in zip(rows["eval_id"], rows["genome"]):
            stored = np.asarray(stored, dtype=float)
            if stored.shape == wanted.shape and np.allclose(stored, wanted, rtol=0.0, atol=GENOME_TOLERANCE):
                found[name] = int(eval_id)
                break
    return found


def baseline_table(found: Mapping[str, int]) -> pd.DataFrame:
    """The run folder's table of baselines: one row per name, with its generation-0 eval_id."""
    return pd.DataFrame({"name": list(found), "eval_id": pd.array(list(found.values()), dtype="Int64")})
