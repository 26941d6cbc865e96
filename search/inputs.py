"""Everything a search needs before its first generation, prepared once from its config.

:func:`prepare` loads the model on the driver (on the CPU), draws the fitness windows,
collects the activation statistics, computes the score map of a global base rule (``lrp``, on
the statistics' windows, through the score cache), describes the model and the data for the
recipes, computes OWL's allocation when the search starts from it, and builds the search space. What it returns
is plain data: the driver's loop uses it, and the evaluator actors are built from its
``evaluator`` part.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from paretoprune.data import calibration_windows, text_provenance
from paretoprune.evaluators.capability_fitness import CapabilityInputs, capability_inputs
from paretoprune.evaluators.fitness import FitnessTokens, split_objective
from paretoprune.evaluators.memory import MemoryEstimate, driver_memory, evaluator_memory, tensors_of
from paretoprune.evaluators.placement import check_ram_fits, loading_bytes, resolve_device
from paretoprune.evaluators.remote import EvaluatorInputs
from paretoprune.evaluators.stats import ChannelStats, collect_stats
from paretoprune.evaluators.sources import SourceDraw, fitness_sources
from paretoprune.evaluators.zeroshot_tasks import task_names
from paretoprune.global_scores import cached_score_map
from paretoprune.models import (
    ModelLayout, check_context, find_layout, fingerprint, load_model, model_dtype, resolve_dtype,
)  # fmt: skip
from paretoprune.pruning import layer_sparsities, owl_sparsities
from paretoprune.recipe import CalibrationInfo, ModelInfo, Provenance
from paretoprune.search.config import SearchConfig
from paretoprune.search.space import SearchSpace, global_rule_of, resolve_metric

__all__ = ["SearchInputs", "objective_sources", "prepare", "source_draw"]

logger = logging.getLogger(__name__)
# Calibration windows per forward pass of the statistics (collect_stats' batches).
STATS_BATCH = 8


@dataclass(frozen=True)
class SearchInputs:
    """What one search works with, from its first generation to its recipes."""

    model: ModelInfo  # the model the recipes are made for
    # Where the recipes come from: the statistics' calibration and every fitness token source.
    # Each recipe adds the run and its evaluation.
    provenance: Provenance
    layout: ModelLayout  # the driver's copy of the model, as blocks and prunable linears
    space: SearchSpace  # genomes <-> candidates
    evaluator: EvaluatorInputs  # what each evaluator actor is built from
    memory: MemoryEstimate  # what each evaluator actor will need, estimated before any starts
    driver_memory: MemoryEstimate  # what this process needs (its model copy, statistics, loading)


def prepare(config: SearchConfig) -> SearchInputs:
    """Load the model once on the driver and gather everything the search will need.

    The driver's copy runs on the CPU, so ``--dtype auto`` is fp32 there, whatever the
    evaluators on GPUs choose; the statistics are summed in fp64 and fp32 either way.
    """
    dtype = resolve_dtype(config.dtype, "cpu")  # the driver keeps a CPU copy for statistics
    check_ram_fits([config.model], dtype, "the search's driver")
    loaded = load_model(config.model, dtype=dtype)
    check_context(loaded.model.config, {"--seqlen": config.seqlen, "--stats-seqlen": config.stats_seqlen})
    layout = find_layout(loaded.model)
    tokens = calibration_windows(loaded.tokenizer, config.calib, config.nsamples, config.seqlen, config.seed)
    stats_nsamples, stats_seqlen = config.stats_nsamples or config.nsamples, config.stats_seqlen or config.seqlen
    same_windows = (stats_nsamples, stats_seqlen) == (config.nsamples, config.seqlen)
    stats_tokens = tokens if same_windows else calibration_windows(
        loaded.tokenizer, config.calib, stats_nsamples, stats_seqlen, config.seed)  # fmt: skip
    # What only some candidates read is gathered only when the space can propose them: the
    # last-token inputs are small, the regional gradients as large as the model.
    stats = collect_stats(loaded.model, layout, stats_tokens, batch_size=STATS_BATCH, last_tokens=config.search_rows,
                          gradients=_needs_gradients(config), compute_device=_statistics_device(config))  # fmt: skip
    sources = _fitness_sources(config, loaded.tokenizer)
    capabilities = capability_inputs(
        loaded.model, loaded.tokenizer, config.objective_names, config.truth_dir, config.seed, config.probe_split
    )
    owl = owl_sparsities(layout, stats, config.sparsity) if config.sparsity is not None else None
    space = SearchSpace(layout, config.space_config(), owl_sparsities=owl,
                        allocations=_truth_allocations(config, loaded, layout, stats))  # fmt: skip
    score_maps = {}
    if space.global_rule is not None:  # on the windows a recipe is applied with, as `apply` scores them
        logger.info("scoring the dense model with %s on %d windows (once; cached)", space.global_rule, len(stats_tokens))
        score_maps[space.global_rule] = cached_score_map(space.global_rule, loaded.model, layout, stats_tokens,
                                                         model_id=config.model, seed=config.seed, progress=False)  # fmt: skip
    model = ModelInfo(
        name=config.model, fingerprint=fingerprint(loaded.model), family=layout.family,
        shapes={linear.name: (linear.out_features, linear.in_features) for linear in layout.linears},
    )  # fmt: skip
    calibration = CalibrationInfo(
        source=config.calib, sha256=text_provenance(config.calib, "calibration")["sha256"],
        nsamples=stats_nsamples, seqlen=stats_seqlen, seed=config.seed,
    )  # fmt: skip
    # The plain objectives' tokens, named apart from the statistics' windows (which may differ).
    plain = {"kind": "text", "sequences": config.nsamples, "seqlen": config.seqlen, "seed": config.seed}
    described = {"text": plain, **_describe_sources(config, sources), **_describe_capabilities(config, capabilities)}
    provenance = Provenance(calibration=calibration, fitness=described)
    evaluator = EvaluatorInputs(
        model_spec=config.model, tokens=tokens, stats=stats, objectives=config.objective_names,
        rank_metric=None if space.searches_metric else (space.global_rule or space.base_metric), sources=sources,
        dtype=config.dtype, capabilities=capabilities, score_maps=score_maps,
    )  # fmt: skip
    memory = _evaluator_memory(config, loaded.model, layout, evaluator)
    logger.info("each evaluator needs %s", memory.describe())
    driver = driver_memory(loaded.model, layout, dtype=dtype, stats_tokens=stats_tokens.numel(),
                           batch_tokens=min(STATS_BATCH, len(stats_tokens)) * stats_tokens.shape[1], shared=_shared(evaluator),
                           loading=loading_bytes(config.model, dtype))  # fmt: skip
    logger.info("the driver needs %s", driver.describe())
    return SearchInputs(model=model, provenance=provenance, layout=layout, space=space, evaluator=evaluator,
                        memory=memory, driver_memory=driver)  # fmt: skip


def _statistics_device(config: SearchConfig) -> torch.device | None:
    """Where the statistics pass runs its blocks: None keeps them on the driver's CPU copy."""
    device = resolve_device(config.driver_device, "--driver-device")
    if device.type == "cpu":
        return None
    logger.info("the statistics pass runs each block on %s", device)
    return device


def _shared(evaluator: EvaluatorInputs) -> list[Any]:
    """The tensors the driver gathers and every actor receives: statistics, score maps, tokens."""
    return tensors_of([evaluator.stats, evaluator.score_maps, evaluator.tokens])


def _evaluator_memory(config: SearchConfig, model: Any, layout: ModelLayout,
                      evaluator: EvaluatorInputs) -> MemoryEstimate:  # fmt: skip
    """What one actor will need, in the dtype it will run in: on a GPU when the search asks for
    GPUs (``auto`` is then the checkpoint's dtype), else on the CPU."""
    device = "cuda" if (config.gpus_per_worker or 0) > 0 else "cpu"
    tokens = evaluator.tokens.numel() + sum(source.input_ids.numel() for source in evaluator.sources.values())
    dtype = model_dtype(config.model, config.dtype, device)
    return evaluator_memory(model, layout, dtype=dtype, fitness_tokens=tokens, objectives=config.objective_names,
                            ranked=evaluator.rank_metric is not None, shared=_shared(evaluator),
                            loading=loading_bytes(config.model, dtype))  # fmt: skip


def _truth_allocations(config: SearchConfig, loaded: Any, layout: ModelLayout,
                       stats: Mapping[str, ChannelStats]) -> dict[str, dict[str, float]]:  # fmt: skip
    """TPLO's allocation at the target, a first-population baseline, when the search was given
    true/false statements (--truth-dir) and its layer genes can express it."""
    layerwise = config.mode in ("layerwise", "joint") and config.structure == "unstructured"
    if config.truth_dir is None or config.sparsity is None or not layerwise:
        return {}
    logger.info("TPLO's allocation at %g from the statements in %s (a first-population baseline)",
                config.sparsity, config.truth_dir)  # fmt: skip
    return {"tplo": layer_sparsities(layout, config.sparsity, "tplo", stats, model=loaded.model,
                                     tokenizer=loaded.tokenizer, truth_dir=config.truth_dir)}  # fmt: skip


def _needs_gradients(config: SearchConfig) -> bool:
    """Whether some candidate may read regional gradients: layerwise mode's fixed rule has the
    term (e.g. wanda++; never a global rule, whose map holds its scores), or the searched metric
    has the gradient gene."""
    if config.mode == "layerwise":
        return global_rule_of(config.base_metric) is None and resolve_metric(config.base_metric).uses_gradients
    return config.search_gradient


def _fitness_sources(config: SearchConfig, tokenizer: Any) -> dict[str, FitnessTokens]:
    """The tokens of every ``objective@source``: a zero-shot task's calibration part, or text."""
    return fitness_sources(tokenizer, objective_sources(config), source_draw(config))


def objective_sources(config: SearchConfig) -> tuple[str, ...]:
    """The sources the objectives name (``kl@arc_easy``: arc_easy), each once."""
    named = (split_objective(name)[1] for name in config.objective_names)
    return tuple(dict.fromkeys(source for source in named if source is not None))


def source_draw(config: SearchConfig) -> SourceDraw:
    """How the search draws its ``objective@source`` tokens."""
    return SourceDraw(config.nsamples, config.seqlen, config.seed, config.task_dir, config.task_calib_fraction)


def _describe_capabilities(config: SearchConfig, inputs: CapabilityInputs | None) -> dict[str, dict[str, Any]]:
    """What the probe and passkey objectives read, for the recipes."""
    described: dict[str, dict[str, Any]] = {}
    if inputs is not None and inputs.probe is not None:
        counts = {topic: len(encoded) for topic, encoded in inputs.probe.topics.items()}
        described["probe"] = {"kind": "truth", "truth_dir": config.truth_dir, "statements": counts,
                              "split": inputs.probe.split, "seed": config.seed}  # fmt: skip
    if inputs is not None and inputs.passkey is not None:
        described["passkey"] = {"kind": "passkey", **inputs.passkey.description}
    return described


def _describe_sources(config: SearchConfig, sources: dict[str, FitnessTokens]) -> dict[str, dict[str, Any]]:
    """What each token source was, for the recipes: enough for evaluation to leave it out."""
    described: dict[str, dict[str, Any]] = {}
    for source, tokens in sources.items():
        entry: dict[str, Any] = {"sequences": int(tokens.input_ids.shape[0])}
        if source in task_names():
            entry |= {"kind": "task", "task_dir": config.task_dir, "calib_fraction": config.task_calib_fraction,
                      "split_seed": config.seed}  # fmt: skip
        else:
            entry |= {"kind": "text", "seqlen": config.seqlen, "seed": config.seed}
        described[source] = entry
    return described
