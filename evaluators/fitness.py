"""The candidate evaluator: how far a pruned model strays from the dense one, fast.

The search calls :meth:`CandidateEvaluator.evaluate` thousands of times, so everything that
does not depend on the candidate is done once, at construction: the activation statistics, the
fitness tokens, the dense model's targets (next-token distributions, logits, final hidden
states or the few summaries of them a diagnostic needs, in fp32) and, for the metric a layerwise
search keeps fixed, a per-row rank cache.

Masks never overwrite the model's weights. Each prunable linear gets a parametrization
(``torch.nn.utils.parametrize``) that, while a candidate is being scored, hands the forward
pass ``W * keep`` (keep: 0 or 1) computed just in time from the untouched dense ``W``. The
dense weights therefore exist once, no restore step can go wrong, and only one layer's masked
copy is alive at any moment. With the rank cache, a candidate that only changes sparsities
costs one comparison and one product per weight on top of the forward pass; a new scoring
rule costs its scores and a selection of each row's threshold (no sort).

A candidate that names a global scoring rule (``Candidate.global_rule``: LRP, UniPruning) ranks
that rule's score map of the dense model, given once (``score_maps``) since no candidate can
change it: the rank cache is built from the map when the fixed rule is that global rule, and
the other paths read the map where they would compute a metric's scores.

A candidate whose rows are not uniform (TRIM) first gets each layer's per-row counts from its
row allocation, once per candidate, from the dense weights and the statistics' last-token
inputs; its masks then drop each row's own count, through the rank cache when the rule is the
cached one. TRIM's rounds cost far more than the masks: the search makes this gene opt-in.

The output head is applied a chunk of tokens at a time, so the [tokens x vocabulary] logits
of the pruned model never exist all at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.nn.utils import parametrize

from paretoprune.candidate import Candidate
from paretoprune.errors import InputError
from paretoprune.evaluators.capability_fitness import CAPABILITY_OBJECTIVES, CapabilityInputs, CapabilityScorer
from paretoprune.evaluators.stats import ChannelStats
from paretoprune.global_scores import ScoreMap, check_score_map
from paretoprune.registry import Registry
from paretoprune.metrics.diagnostics import effective_rank, energy, kendall_tau
from paretoprune.metrics.masks import keep_mask, layer_ranks, parse_structure, pruned_count, row_ranks
from paretoprune.metrics.row_allocation import allocated_row_counts, keep_mask_with_row_counts
from paretoprune.metrics.scores import MetricSpec, compute_scores
from paretoprune.models import ModelLayout, PrunableLinear, final_hidden_states, logits_from_hidden
from paretoprune.pruning import check_candidate

__all__ = [
    "OBJECTIVES",
    "CandidateEvaluator",
    "FitnessTokens",
    "Objective",
    "TOPK_CACHED",
    "TOPK_OBJECTIVE",
    "WeightRule",
    "achieved_sparsities",
    "check_objectives",
    "fitness_hidden_states",
    "objective_direction",
    "split_objective",
]


@dataclass(frozen=True)
class Objective:
    name: str
    direction: str  # "minimize" or "maximize"
    target: str | None  # the dense target it compares against, if any
    description: str


# What a search can trade off; ``--objectives``, the run table's columns and the front's
# directions read this registry. An objective with a ``target`` compares the pruned model's
# outputs with the dense model's and can be measured on its own tokens (``kl@SOURCE``).
OBJECTIVES: Registry[Objective] = Registry("objective", option="--objectives")
for _objective in (
    Objective("kl", "minimize", "probs", "mean next-token KL(dense || pruned) per token"),
    Objective("logits_mse", "minimize", "logits", "squared Frobenius error of logits per token"),
    Objective("hidden_mse", "minimize", "hidden", "squared error of final hidden states per token"),
    # ACBench's model-intrinsic diagnostics (see paretoprune.metrics.diagnostics).
    Objective("erank", "minimize", "erank", "|ERank(pruned) - ERank(dense)| of final hidden states"),
    Objective("topk_tau", "maximize", "topk", "mean Kendall tau-b on the dense top-10 logits per token"),
    Objective("energy_shift", "minimize", "energy", "|mean shift| of the energy -logsumexp(logits)"),
    # Capabilities (see paretoprune.evaluators.capability_fitness): accuracies on their own inputs.
    Objective("probe", "maximize", None, "held-out truth-probe accuracy at the dense pivot block (--truth-dir)"),
    Objective("passkey", "maximize", None, "passkey retrieval exact match on a small seeded grid"),
    Objective("sparsity", "maximize", None, "fraction of prunable weights removed"),
    Objective("params", "minimize", None, "prunable weights that remain"),
):
    OBJECTIVES.register(_objective.name, _objective, summary=f"{_objective.description} ({_objective.direction})")

# ``topk_tau`` keeps the dense model's top TOPK_CACHED tokens per position, the largest k the
# diagnostics report, and the objective ranks the first TOPK_OBJECTIVE of them.
TOPK_CACHED = 20
TOPK_OBJECTIVE = 10


def split_objective(name: str) -> tuple[str, str | None]:
    """``"kl@c4"`` -> ("kl", "c4"): an objective measured on its own token source."""
    base, _, source = name.partition("@")
    return base, (source or None)


def check_objectives(names: Sequence[str]) -> list[str]:
    """The objectives as given, once each; ``name@source`` only for output-comparing objectives."""
    names = list(names)
    for name in names or ["(none)"]:
        base, source = split_objective(name)
        if base not in OBJECTIVES:
            raise InputError(
                f"unknown objective {name}: choose from {', '.join(OBJECTIVES)}, "
                "optionally on its own tokens as kl@SOURCE; e.g. --objectives kl,sparsity"
            )
        if source is not None and OBJECTIVES[base].target is None:
            raise InputError(f"objective {name}: {base} does not depend on tokens; drop @{source}")
    if len(set(names)) != len(names):
        raise InputError(f"objective listed twice in {','.join(names)}: list each once")
    return names


def objective_direction(name: str) -> str:
    return OBJECTIVES[split_objective(name)[0]].direction


@dataclass(frozen=True)
class FitnessTokens:
    """A batch of fitness sequences; padding (attention_mask 0) is left out of every objective."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None = None

    def counted(self) -> torch.Tensor:
        """Which positions count, flattened to [batch * seq]: all but the padding."""
        mask = self.attention_mask
        return (torch.ones_like(self.input_ids, dtype=torch.bool) if mask is None else mask.bool()).flatten()


def fitness_hidden_states(model: nn.Module, tokens: FitnessTokens) -> torch.Tensor:
    """The final hidden states of the positions that count, [positions, hidden], as the model runs."""
    hidden = final_hidden_states(model, tokens.input_ids, tokens.attention_mask)
    return hidden.reshape(-1, hidden.shape[-1])[tokens.counted()]


def achieved_sparsities(layout: ModelLayout, candidate: Candidate) -> dict[str, float]:
    """The fraction each linear really loses, after rounding to whole weights per group."""
    nm = parse_structure(candidate.structure)
    out: dict[str, float] = {}
    for linear in layout.linears:
        if nm is not None:
            out[linear.name] = 1.0 - nm[0] / nm[1]
            continue
        target = float(candidate.sparsities.get(linear.name, 0.0))
        size = linear.in_features if candidate.group == "row" else linear.numel
        out[linear.name] = round(target * size) / size
    return out


# (linear, its dense weight in the module's layout) -> the weight to run with, same layout.
WeightRule = Callable[[PrunableLinear, torch.Tensor], torch.Tensor]


class _Masker(nn.Module):
    """Parametrization of one linear's weight: the dense weight, or the current candidate's."""

    def __init__(self) -> None:
        super().__init__()
        self.rule: Callable[[torch.Tensor], torch.Tensor] | None = None

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight if self.rule is None else self.rule(weight)


# Zeroing pruned weights. Both helpers give exactly the dense weight where it is kept and a zero
# where it is pruned (-0.0 for a negative weight; a matmul adds either zero to its sums alike, so
# the outputs are those of ``torch.where(keep, weight, 0)``). They avoid ``torch.where``, which on
# the CPU takes several times longer than a product, and they run once per layer per candidate.


def _masked_by_ranks(weight: torch.Tensor, ranks: torch.Tensor, pruned: int | torch.Tensor) -> torch.Tensor:
    """The weight where ``ranks >= pruned``, zero elsewhere: two passes over one new tensor.
    ``pruned`` is one count, or a tensor of counts that broadcasts against the ranks (per row).

    The comparison writes its 0/1 answer straight in the weight's dtype, and the product with
    the weight then happens in place. A bool mask would cost a third pass, since a product
    converts it to the weight's dtype first.
    """
    keep = torch.ge(ranks, pruned, out=torch.empty_like(weight))
    return keep.mul_(weight)


def _masked_by_keep(weight: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The weight where ``keep`` (0 and 1 in the weight's dtype) is 1, zero elsewhere."""
    return torch.mul(weight, keep)


def _target_dtype(model: nn.Module) -> torch.dtype:
    """Half precision for the cached probabilities of a half-precision model, fp32 otherwise."""
    dtype = next(model.parameters()).dtype
    return dtype if dtype in (torch.bfloat16, torch.float16) else torch.float32


class CandidateEvaluator:
    """Scores candidates against the dense model on fixed fitness tokens."""

    def __init__(
        self,
        model: nn.Module,
        layout: ModelLayout,
        stats: Mapping[str, ChannelStats],
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        objectives: Sequence[str] = ("kl", "sparsity"),
        rank_metric: MetricSpec | str | None = None,
        rank_group: str = "row",
        token_chunk: int = 512,
        sources: Mapping[str, FitnessTokens] | None = None,
        # What the capability objectives (probe, passkey) read: statements and prompts.
        capabilities: CapabilityInputs | None = None,
        target_dtype: torch.dtype | None = None,
        score_maps: Mapping[str, ScoreMap] | None = None,
    ) -> None:
        """``input_ids`` are the fitness tokens of plain objectives; ``sources`` name the tokens
        of objectives written ``name@source`` (e.g. a task's calibration prompts).
        ``score_maps``: the dense model's score map by global rule, what the masks of candidates
        naming that rule rank; ``rank_metric`` may name one of them (a string) to cache its ranks.
        ``target_dtype`` stores the dense next-token probabilities (the largest cache, tokens x
        vocabulary); by default the model's dtype when it runs in half precision, else fp32."""
        self.model, self.layout = model, layout
        self.objectives = check_objectives(objectives)
        token_sets = {None: FitnessTokens(input_ids, attention_mask), **dict(sources or {})}
        wanted: dict[str | None, set[str]] = {}
        for name in self.objectives:
            base, source = split_objective(name)
            if source not in token_sets:
                raise InputError(f"objective {name} names token source {source}, but no tokens were given for it")
            if OBJECTIVES[base].target is not None:
                wanted.setdefault(source, set()).add(base)
        self._act_norms = {name: s.act_norm for name, s in stats.items()}
        # Regional gradients (Wanda++'s RGS term), only where the statistics carry them: the
        # search leaves the gradient gene off by default, so its statistics need no backward pass
        # and its actors no per-weight copy of the model's size.
        self._grads = {name: s.regional_grad for name, s in stats.items() if s.has_gradients}
        # Each calibration sequence's last-token inputs, only where the statistics kept them: the
        # row allocations that judge rows on them (TRIM) need nothing else.
        self._last_inputs = {name: s.last_token_inputs() for name, s in stats.items() if s.last_inputs}
        # Built on the dense model, before any mask: the probe's pivot block is the dense one's.
        capability_names = {name for name in self.objectives if name in CAPABILITY_OBJECTIVES}
        self._capabilities = CapabilityScorer(model, capabilities, capability_names) if capability_names else None
        self._maskers = self._install_maskers()
        self._references = {
            source: _Reference(model, token_sets[source], bases, token_chunk, target_dtype or _target_dtype(model))
            for source, bases in wanted.items()
        }
        # Left where they are given (the driver's CPU copy): masks read them only when they are
        # not served by the rank cache.
        self._score_maps = dict(score_maps or {})
        for scores in self._score_maps.values():
            check_score_map(scores, layout)
        self._rank_key = (rank_metric, rank_group)
        self._ranks = self._build_ranks(rank_metric, rank_group) if rank_metric is not None else {}

    # ------------------------------------------------------------------------------------
    # Public

    def evaluate(self, candidate: Candidate, solve: WeightRule | None = None) -> dict[str, float]:
        """The objectives of one candidate; the model is left exactly as it was.

        ``solve(linear, dense weight)`` gives each linear's pruned weight in place of the
        candidate's masks: the finalist stage scores the masks after a solver moved the kept
        weights, as the recipe will be applied. Called just in time, one linear at a time.
        """
        check_candidate(self.layout, candidate)
        achieved = achieved_sparsities(self.layout, candidate)
        values: dict[str, float] = {}
        if self._references or self._capabilities is not None:
            with self._masked(candidate) if solve is None else self._solved(solve), torch.inference_mode():
                for source, reference in self._references.items():
                    suffix = "" if source is None else f"@{source}"
                    values |= {f"{base}{suffix}": v for base, v in reference.compare().items()}
                if self._capabilities is not None:
                    values |= self._capabilities.compare()
        removed = sum(achieved[linear.name] * linear.numel for linear in self.layout.linears)
        total = self.layout.total_numel
        values |= {"sparsity": removed / total, "params": float(total - removed)}
        return {name: float(values[name]) for name in self.objectives}

    @contextmanager
    def applied(self, candidate: Candidate) -> Iterator[None]:
        """Run the model as the candidate would prune it, inside the block; dense again after."""
        check_candidate(self.layout, candidate)
        with self._masked(candidate):
            yield

    def close(self) -> None:
        """Remove the parametrizations: the model is a plain model again."""
        for linear in self.layout.linears:
            if parametrize.is_parametrized(linear.module, "weight"):
                parametrize.remove_parametrizations(linear.module, "weight", leave_parametrized=False)

    def resident_bytes(self) -> int:
        """Bytes this evaluator keeps beside the model (targets, rank cache, statistics)."""
        tensors = [*self._ranks.values(), *self._act_norms.values(), *self._grads.values(), *self._last_inputs.values()]
        tensors += [t for scores in self._score_maps.values() for t in scores.values()]
        tensors += [t for reference in self._references.values() for t in reference.targets.values()]
        return sum(t.numel() * t.element_size() for t in tensors)

    # ------------------------------------------------------------------------------------
    # Masks

    def _install_maskers(self) -> dict[str, _Masker]:
        maskers = {}
        for linear in self.layout.linears:
            masker = _Masker()
            parametrize.register_parametrization(linear.module, "weight", masker, unsafe=True)
            maskers[linear.name] = masker
        return maskers

    def _build_ranks(self, rule: MetricSpec | str, group: str) -> dict[str, torch.Tensor]:
        """Each linear's ranks under a family rule, or under a global rule's map (named by a string)."""
        ranks = {}
        for linear in self.layout.linears:
            if isinstance(rule, str):
                scores = self._map_scores(linear, rule)
            else:
                scores = compute_scores(self._dense_matrix(linear), self._act_norm(linear, rule), rule, self._grad(linear, rule))
            ranked = row_ranks(scores) if group == "row" else layer_ranks(scores)
            # Kept in the module's own weight layout so that masking needs no transpose.
            ranks[linear.name] = ranked.t().contiguous() if linear.transposed else ranked
        return ranks

    @contextmanager
    def _solved(self, solve: WeightRule) -> Iterator[None]:
        try:
            for linear in self.layout.linears:
                self._maskers[linear.name].rule = partial(solve, linear)
            yield
        finally:
            for masker in self._maskers.values():
                masker.rule = None

    @contextmanager
    def _masked(self, candidate: Candidate) -> Iterator[None]:
        # The rank cache serves any row allocation: the ranks depend on the rule and the group
        # only, and a row allocation changes only how many of them each row drops.
        use_ranks = (
            (candidate.global_rule or candidate.metric, candidate.group) == self._rank_key
            and parse_structure(candidate.structure) is None
        )
        try:
            for linear in self.layout.linears:
                rule = (
                    self._rank_rule(linear, candidate)
                    if use_ranks
                    else self._scoring_rule(linear, candidate)
                )
                self._maskers[linear.name].rule = rule
            yield
        finally:
            for masker in self._maskers.values():
                masker.rule = None

    def _rank_rule(self, linear: PrunableLinear, candidate: Candidate):
        sparsity = float(candidate.sparsities.get(linear.name, 0.0))
        if sparsity == 0.0:
            return None
        size = linear.in_features if candidate.group == "row" else linear.numel
        pruned = pruned_count(size, sparsity)
        ranks = self._ranks[linear.name]
        counts = self._row_counts(linear, candidate, sparsity)
        if counts is not None:  # each row its own count; ranks in the module's layout
            per_row = counts.to(ranks.device).view((1, -1) if linear.transposed else (-1, 1))
            return partial(_masked_by_ranks, ranks=ranks, pruned=per_row)
        if pruned >= size:  # the whole group goes (and a compact rank dtype could not say so)
            return lambda weight: torch.zeros_like(weight)

        def rule(weight: torch.Tensor) -> torch.Tensor:
            return _masked_by_ranks(weight, ranks, pruned)

        return rule

    def _scoring_rule(self, linear: PrunableLinear, candidate: Candidate):
        sparsity = float(candidate.sparsities.get(linear.name, 0.0))
        structure = parse_structure(candidate.structure)
        if sparsity == 0.0 and structure is None:
            return None
        score = self._scorer(linear, candidate)
        counts = self._row_counts(linear, candidate, sparsity)

        def rule(weight: torch.Tensor) -> torch.Tensor:
            # The steps of pruning.keep_mask, with the mask made in the weight's dtype.
            matrix = weight.t() if linear.transposed else weight
            scores = score(matrix)
            if counts is not None:
                keep = keep_mask_with_row_counts(scores, counts).to(weight.dtype)
            else:
                keep = keep_mask(scores, sparsity, structure, candidate.group, linear.name, dtype=weight.dtype)
            return _masked_by_keep(weight, keep.t() if linear.transposed else keep)

        return rule

    def _row_counts(self, linear: PrunableLinear, candidate: Candidate, sparsity: float) -> torch.Tensor | None:
        """Weights each row of the linear loses under the candidate's row allocation, from the
        dense weights (as prune_model computes them); None for uniform rows. Computed once per
        candidate, when its masks are set up, since forward passes may call the rule often."""
        if candidate.rows == "uniform":
            return None
        if linear.name not in self._last_inputs:
            raise InputError(f"rows {candidate.rows} judge rows on last-token inputs, which the statistics lack for "
                             f"{linear.name}: gather them (last_tokens=True; search --search-rows)")  # fmt: skip
        score = self._scorer(linear, candidate)
        with torch.inference_mode():  # the dense weight is a parameter: no graph for TRIM's rounds
            matrix = self._dense_matrix(linear)
            scores = score(matrix)
            return allocated_row_counts(candidate.rows, matrix, scores, self._last_inputs[linear.name], sparsity)

    def _scorer(self, linear: PrunableLinear, candidate: Candidate) -> Callable[[torch.Tensor], torch.Tensor]:
        """The candidate's scores of one linear's [out, in] matrix: its global rule's map, fixed
        whatever the matrix, or its metric's scores of the matrix."""
        if candidate.global_rule is not None:
            fixed = self._map_scores(linear, candidate.global_rule)
            return lambda matrix: fixed
        act_norm, grad = self._act_norm(linear, candidate.metric), self._grad(linear, candidate.metric)
        return lambda matrix: compute_scores(matrix.float(), act_norm, candidate.metric, grad)

    def _map_scores(self, linear: PrunableLinear, rule: str) -> torch.Tensor:
        """The linear's scores in ``rule``'s map, [out, in] fp32 on the weight's device."""
        if rule not in self._score_maps:
            raise InputError(f"the candidate's masks rank the {rule} score map, which this evaluator was not given: "
                             f"pass score_maps={{'{rule}': map}} (a search with base metric {rule} computes it)")  # fmt: skip
        device = linear.module.parametrizations.weight.original.device
        return self._score_maps[rule][linear.name].to(device, torch.float32)

    def _dense_matrix(self, linear: PrunableLinear) -> torch.Tensor:
        weight = linear.module.parametrizations.weight.original
        return (weight.t() if linear.transposed else weight).float()

    def _act_norm(self, linear: PrunableLinear, metric: MetricSpec) -> torch.Tensor | None:
        if not metric.uses_activations:
            return None
        if linear.name not in self._act_norms:
            raise InputError(f"no activation statistics for {linear.name}: recollect the statistics")
        return self._act_norms[linear.name]

    def _grad(self, linear: PrunableLinear, metric: MetricSpec) -> torch.Tensor | None:
        if not metric.uses_gradients:
            return None
        if linear.name not in self._grads:
            raise InputError(f"metric {metric.name} has a gradient term, but the statistics hold no regional gradients "
                             f"for {linear.name}: gather them (gradients=True) or use a rule without one")  # fmt: skip
        return self._grads[linear.name]


# The target kinds whose comparison needs the pruned model's logits.
_HEAD_TARGETS = frozenset({"probs", "logits", "topk", "energy"})


class _Reference:
    """The dense model's outputs on one set of fitness tokens, and a pruned run's distance to them.

    The targets are computed once, in fp32, and only those asked for: next-token distributions
    (for ``kl``), logits (``logits_mse``), final hidden states (``hidden_mse``), the ERank of the
    final hidden states (``erank``; ERank here is always that of the final hidden states, which
    are cheap, never of the logits), the top TOPK_CACHED token ids and their logits per position
    (``topk_tau``; the whole logits are not kept) and the energy per position (``energy_shift``).
    The head is applied ``token_chunk`` tokens at a time. The probabilities, the largest target
    (tokens x vocabulary), are stored in ``probs_dtype``: half precision halves them on a GPU, and
    the constant half of KL is then computed from the stored values, so that the dense model's
    KL to itself stays exactly 0.
    """

    def __init__(
        self,
        model: nn.Module,
        tokens: FitnessTokens,
        wanted: set[str],
        token_chunk: int,
        probs_dtype: torch.dtype = torch.float32,
    ) -> None:
        self.model, self.tokens, self.token_chunk = model, tokens, token_chunk
        self.probs_dtype = probs_dtype
        self.wanted = {OBJECTIVES[name].target for name in wanted}
        with torch.inference_mode():
            self.targets = self._dense_targets(self._hidden().float())

    def compare(self) -> dict[str, float]:
        """Run the model (as currently masked) and measure each wanted objective, per token."""
        hidden = self._hidden().float()
        count = hidden.shape[0]
        values = self._compare_logits(hidden) if self.wanted & _HEAD_TARGETS else {}
        if "hidden" in self.wanted:
            values["hidden_mse"] = float((hidden - self.targets["hidden"]).square().sum()) / count
        if "erank" in self.wanted:
            values["erank"] = abs(float(effective_rank(hidden)) - float(self.targets["erank"]))
        return values

    def _compare_logits(self, hidden: torch.Tensor) -> dict[str, float]:
        """The objectives that need the pruned logits, which exist one chunk of tokens at a time."""
        count = hidden.shape[0]
        totals = {"kl": 0.0, "logits_mse": 0.0, "topk_tau": 0.0}
        energies = []
        scratch: torch.Tensor | None = None
        for start in range(0, count, self.token_chunk):
            stop = min(start + self.token_chunk, count)
            logits = self._logits(hidden[start:stop])
            # One [chunk, vocabulary] buffer for the intermediate results of every chunk: a fresh
            # tensor per step would have the operating system map and zero hundreds of megabytes
            # of pages per candidate, which takes longer than the arithmetic done in them.
            scratch = torch.empty_like(logits) if scratch is None else scratch
            work = scratch[: stop - start]
            if "probs" in self.wanted:
                totals["kl"] += self._kl_sum(logits, start, stop, work)
            if "logits" in self.wanted:
                diff = torch.sub(logits, self.targets["logits"][start:stop], out=work)
                totals["logits_mse"] += float(diff.square_().sum())
            if "topk" in self.wanted:
                totals["topk_tau"] += float(self._topk_taus(logits, start, stop).sum())
            if "energy" in self.wanted:
                energies.append(energy(logits))
        values = {name: total / count for name, total in totals.items()}
        if "energy" in self.wanted:
            # Both means over the same positions in the same order: a dense run gives exactly 0.
            shift = torch.cat(energies).double().mean() - self.targets["energy"].double().mean()
            values["energy_shift"] = abs(float(shift))
        return values

    def _kl_sum(self, logits: torch.Tensor, start: int, stop: int, work: torch.Tensor) -> float:
        """The sum over positions start..stop of KL(dense || pruned), with ``work`` as scratch.

        Per position KL = sum_v p log p - sum_v p log q: the first half is a cached target, the
        second is formed in ``work`` (the same numbers as ``(p * log_softmax(logits)).sum(-1)``).
        """
        log_q = torch.log_softmax(logits, dim=-1, out=work)
        cross = log_q.mul_(self.targets["probs"][start:stop]).sum(-1)
        return float((self.targets["neg_entropy"][start:stop] - cross).sum())

    def _topk_taus(self, logits: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Per position, tau between dense and pruned logits on the dense top TOPK_OBJECTIVE tokens."""
        ids = self.targets["topk_ids"][start:stop, :TOPK_OBJECTIVE]
        dense = self.targets["topk_logits"][start:stop, :TOPK_OBJECTIVE]
        return kendall_tau(dense, logits.gather(-1, ids))

    def _hidden(self) -> torch.Tensor:
        return fitness_hidden_states(self.model, self.tokens)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return logits_from_hidden(self.model, hidden).float()

    def _dense_targets(self, hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        targets: dict[str, torch.Tensor] = {}
        if "hidden" in self.wanted:
            targets["hidden"] = hidden.clone()
        if "erank" in self.wanted:
            targets["erank"] = effective_rank(hidden)
        if self.wanted & {"probs", "logits"}:
            logits = torch.cat([self._logits(chunk) for chunk in hidden.split(self.token_chunk)])
            if "logits" in self.wanted:
                targets["logits"] = logits
            if "probs" in self.wanted:
                logprobs = torch.log_softmax(logits, dim=-1)
                targets["probs"] = logprobs.exp().to(self.probs_dtype)
                # sum_v p log p per token, the constant half of KL(p || q), from the stored p
                targets["neg_entropy"] = (targets["probs"].float() * logprobs).sum(-1)
        if self.wanted & {"topk", "energy"}:
            targets |= self._dense_summaries(hidden)
        return targets

    def _dense_summaries(self, hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per position, the dense energy and top token ids with their logits, a chunk at a time."""
        pieces: dict[str, list[torch.Tensor]] = {"energy": [], "topk_ids": [], "topk_logits": []}
        for chunk in hidden.split(self.token_chunk):
            logits = self._logits(chunk)
            if "energy" in self.wanted:
                pieces["energy"].append(energy(logits))
            if "topk" in self.wanted:
                top = logits.topk(min(TOPK_CACHED, logits.shape[-1]), dim=-1)  # sorted, largest first
                pieces["topk_ids"].append(top.indices)
                pieces["topk_logits"].append(top.values)
        return {name: torch.cat(parts) for name, parts in pieces.items() if parts}
