"""The on-disk cache of global score maps (UniPruning's |Gamma|, LRP relevance).

A global scoring rule costs minutes (a fine-tune, a relevance pass), and a sweep over
sparsities or a search asks it again and again for the same model and calibration. Its score
map is therefore kept as one safetensors file whose name hashes everything the scores depend
on: the rule's own header (settings, version, ...), the model's architecture and every prunable
weight (two checkpoints of one architecture never share scores), and the calibration token ids.

Files are written whole or not at all (:func:`paretoprune.io.atomic_write_bytes`); an unreadable
or foreign file is ignored with a warning and the scores are computed again. No pickle.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from paretoprune.global_scores import GlobalScoreInputs
from paretoprune.io import atomic_write_bytes
from paretoprune.models import ModelLayout, fingerprint

__all__ = ["read_score_map", "score_map_path", "write_score_map"]

logger = logging.getLogger(__name__)


def score_map_path(inputs: GlobalScoreInputs, prefix: str, header: Mapping[str, Any]) -> Path | None:
    """Where the score map of ``prefix`` (a rule's name) with this ``header`` is cached for the
    model, weights and calibration tokens of ``inputs``; None when ``inputs`` has no cache."""
    if inputs.cache_dir is None:
        return None
    digest = hashlib.sha256()
    key = {**dict(header), "architecture": fingerprint(inputs.model)}
    digest.update(json.dumps(key, sort_keys=True).encode())
    tokens = inputs.tokens.detach().to("cpu", torch.int64).contiguous()
    digest.update(json.dumps(list(tokens.shape)).encode())
    digest.update(tokens.numpy().tobytes())
    for linear in inputs.layout.linears:
        weight = linear.module.weight.detach().to("cpu").contiguous()
        digest.update(linear.name.encode() + str(weight.dtype).encode())
        digest.update(weight.view(torch.uint8).numpy().tobytes())
    return Path(inputs.cache_dir) / f"{prefix}-{digest.hexdigest()[:32]}.safetensors"


def write_score_map(path: Path, scores: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> None:
    """Cache ``scores``; a failed write is a warning, since it only costs the next run the time."""
    tensors = {name: values.contiguous() for name, values in scores.items()}
    try:
        atomic_write_bytes(path, save_safetensors(tensors, metadata=dict(metadata)))
    except OSError as error:
        logger.warning("could not cache the scores in %s: %s", path, error)


def read_score_map(path: Path | None, layout: ModelLayout) -> dict[str, torch.Tensor] | None:
    """The cached scores of ``layout``'s linears, or None when there are none (or they are
    unreadable or hold other layers: then the caller computes them again)."""
    if path is None or not path.is_file():
        return None
    try:
        scores = load_safetensors(path.read_bytes())
    except (OSError, ValueError, RuntimeError, SafetensorError) as error:  # a truncated or foreign file
        logger.warning("ignoring the unreadable score cache %s: %s", path, error)
        return None
    if set(scores) != set(layout.names):
        logger.warning("ignoring the score cache %s: it holds other layers", path)
        return None
    logger.info("scores from the cache %s", path)
    return scores
