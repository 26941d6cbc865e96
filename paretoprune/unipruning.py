"""UniPruning on a live model: the calibration run that follows the saliency, and its cache.

The math (the stochastic RIA saliency, the soft threshold, one mirror-descent step) lives in
:mod:`paretoprune.metrics.unipruning`. This module runs it over a whole model:

1. Every calibration step feeds a batch of calibration windows through the model. Forward
   pre-hooks on the prunable linears record each input channel's second moment ``E[x^2]`` on
   that batch.
2. Each linear's saliency is computed from its current weight and those moments, and its dual
   variable ``z`` and sparse image ``Gamma`` take one mirror-descent step.
3. With ``train`` (the rule ``unipruning``), the prunable linears then take one AdamW step on the
   next-token loss of the same batch, so that the saliency is followed while the weights move.
   Without it (``unipruning-static``), the weights stay put and only the random subsets of the
   saliency and the batches change from step to step.

The weights are never kept: the prunable linears are copied before the run and written back
after it (also on an error or Ctrl-C), so the masks cut from ``|Gamma|`` fall on the original
checkpoint. ``|Gamma|`` is cached on disk under a key of the model, its weights, the
calibration tokens and the settings, so a sweep over sparsities pays the calibration once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from paretoprune.errors import InputError
from paretoprune.global_scores import GlobalScoreInputs
from paretoprune.metrics.unipruning import mirror_descent_step, stochastic_ria
from paretoprune.models import ModelLayout, PrunableLinear
from paretoprune.score_cache import read_score_map, score_map_path, write_score_map

__all__ = ["UniPruningSettings", "cache_path", "calibrate", "unipruning_scores"]

logger = logging.getLogger(__name__)

# Part of every cache key: bump it when the math or the run changes what Gamma comes out as.
_CACHE_VERSION = 1


@dataclass(frozen=True)
class UniPruningSettings:
    """How UniPruning calibrates. The defaults are the authors' (``train_24_final.sh``), except
    the run's length: the authors take 128 steps of 4096 tokens on a GPU; 64 steps of 256
    tokens (one pass over 32 windows of 512 tokens) keep a 135M model's run to minutes on a CPU."""

    train: bool = True  # move the weights (AdamW on the next-token loss); False: saliency only
    steps: int = 64  # calibration steps (the authors: 128)
    seqlen: int = 256  # tokens per step and window: longer calibration windows are split into pieces
    batch_size: int = 1  # windows per step (the authors: 1)
    lr: float = 1e-4  # AdamW learning rate, no weight decay (the authors' script)
    kappa: float = 0.01  # step of the dual variable: z += kappa * (S - Gamma)
    lam: float = 1e-3  # quantile of |z| that Gamma's soft threshold removes
    fraction: float = 0.2  # random subsets of the saliency: this fraction of the shorter side
    power: float = 0.35  # exponent of the input's second moment in the saliency

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.seqlen < 2:
            raise InputError(f"UniPruning needs steps >= 1, batch_size >= 1 and seqlen >= 2, got "
                             f"{self.steps}, {self.batch_size} and {self.seqlen}")  # fmt: skip
        if self.lr < 0 or self.kappa <= 0 or not 0.0 <= self.lam < 1.0:
            raise InputError(f"UniPruning needs lr >= 0, kappa > 0 and 0 <= lam < 1, got "
                             f"{self.lr}, {self.kappa} and {self.lam}")  # fmt: skip
        if not 0.0 < self.fraction <= 1.0 or self.power < 0:
            raise InputError(f"UniPruning needs 0 < fraction <= 1 and power >= 0, got {self.fraction} and {self.power}")


# ------------------------------------------------------------------------------------------------
# The score map, through the cache.


def unipruning_scores(inputs: GlobalScoreInputs, settings: UniPruningSettings) -> dict[str, torch.Tensor]:
    """``|Gamma|`` of every prunable linear (fp32, on the CPU), from the cache when it has them."""
    path = cache_path(inputs, settings)
    cached = read_score_map(path, inputs.layout)
    if cached is not None:
        return cached
    started = time.perf_counter()
    gamma = calibrate(inputs.model, inputs.layout, inputs.tokens, settings, seed=inputs.seed, progress=inputs.progress)
    seconds = time.perf_counter() - started
    logger.info("UniPruning calibration (%s, %d steps) took %.1f s", _variant(settings), settings.steps, seconds)
    scores = {name: values.abs().cpu() for name, values in gamma.items()}
    if path is not None:
        metadata = {"settings": json.dumps(asdict(settings), sort_keys=True), "seconds": f"{seconds:.3f}"}
        write_score_map(path, scores, metadata)
    return scores


def _variant(settings: UniPruningSettings) -> str:
    return "unipruning" if settings.train else "unipruning-static"


def cache_path(inputs: GlobalScoreInputs, settings: UniPruningSettings) -> Path | None:
    """Where the scores of this model, calibration and settings are cached (None: no cache).

    Besides what every score cache hashes (architecture, weights, calibration tokens), the key
    holds the model's name, the seed and the settings.
    """
    header = {"version": _CACHE_VERSION, "model": inputs.model_id, "seed": inputs.seed, "settings": asdict(settings)}
    return score_map_path(inputs, _variant(settings), header)


# ------------------------------------------------------------------------------------------------
# The calibration run.


def calibrate(
    model: nn.Module,
    layout: ModelLayout,
    tokens: torch.Tensor,
    settings: UniPruningSettings,
    *,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Run UniPruning's calibration and return ``Gamma`` of every prunable linear ([out, in], fp32).

    The model's weights are the same, bit for bit, before and after (see the module docstring).
    """
    windows = _checked_windows(tokens, settings)
    generator = torch.Generator().manual_seed(seed)
    order = _window_order(len(windows), settings, generator)
    state = {linear.name: _zeros(linear) for linear in layout.linears}
    gamma = {linear.name: _zeros(linear) for linear in layout.linears}
    base_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    device = _input_device(model)
    with _original_weights_kept(model, layout, settings.train) as parameters, _SecondMoments(layout) as moments:
        optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=0.0) if settings.train else None
        bar = tqdm(range(settings.steps), desc=_variant(settings), disable=not progress)
        for step in bar:
            batch = windows[order[step]].to(device)
            moments.reset()
            loss = _forward(model, batch, settings.train)
            generators: dict[torch.device, torch.Generator] = {}
            for linear in layout.linears:
                rng = _generator_for(generators, linear.module.weight.device, base_seed + step)
                saliency = stochastic_ria(linear.weight_matrix(), moments.mean(linear.name),
                                          fraction=settings.fraction, power=settings.power, generator=rng)  # fmt: skip
                state[linear.name], gamma[linear.name] = mirror_descent_step(
                    state[linear.name], gamma[linear.name], saliency, kappa=settings.kappa, lam=settings.lam
                )
            if optimizer is not None:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                bar.set_postfix(loss=f"{loss:.3f}")
    return gamma


def _checked_windows(tokens: torch.Tensor, settings: UniPruningSettings) -> torch.Tensor:
    """The calibration windows as pieces of at most ``seqlen`` tokens: a window several times
    longer is split (no token left unread), a window shorter is used whole."""
    if tokens.dim() != 2 or tokens.shape[0] < 1 or tokens.shape[1] < 2:
        raise InputError(f"UniPruning needs calibration windows [windows, tokens >= 2], got shape {tuple(tokens.shape)}")
    pieces = tokens.shape[1] // settings.seqlen
    if pieces <= 1:
        return tokens[:, : settings.seqlen]
    return tokens[:, : pieces * settings.seqlen].reshape(-1, settings.seqlen)


def _window_order(count: int, settings: UniPruningSettings, generator: torch.Generator) -> torch.Tensor:
    """Which windows each step reads, [steps, batch_size]: shuffled passes over all windows, so
    every window is seen equally often whatever the number of steps."""
    needed = settings.steps * settings.batch_size
    passes = -(-needed // count)
    flat = torch.cat([torch.randperm(count, generator=generator) for _ in range(passes)])
    return flat[:needed].reshape(settings.steps, settings.batch_size)


def _zeros(linear: PrunableLinear) -> torch.Tensor:
    return torch.zeros(linear.out_features, linear.in_features, dtype=torch.float32, device=linear.module.weight.device)


def _generator_for(generators: dict[torch.device, torch.Generator], device: torch.device, seed: int) -> torch.Generator:
    """The step's generator on ``device``, made on first use: a CPU generator cannot draw on a
    GPU, and seeding per step and device keeps a step's subsets the same on every rerun."""
    if device not in generators:
        generators[device] = torch.Generator(device=device).manual_seed(seed)
    return generators[device]


def _input_device(model: nn.Module) -> torch.device:
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    parameter = next(embeddings.parameters(), None) if embeddings is not None else next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _forward(model: nn.Module, batch: torch.Tensor, train: bool) -> float:
    """One forward pass over ``batch`` (the hooks record the moments); with ``train``, the
    next-token loss's gradients too. Dropout stays off: the saliency must see the model as it
    will run."""
    if not train:
        with torch.no_grad():
            model(input_ids=batch, use_cache=False)
        return float("nan")
    output = model(input_ids=batch, labels=batch, use_cache=False)
    loss = output.loss
    if not torch.isfinite(loss):
        raise InputError("the UniPruning calibration loss is not finite: lower the learning rate or use fp32")
    loss.backward()
    return float(loss.detach())


@contextmanager
def _original_weights_kept(model: nn.Module, layout: ModelLayout, train: bool) -> Iterator[list[nn.Parameter]]:
    """Yield the prunable weights as the only trainable parameters; afterwards write the
    original values back and restore every ``requires_grad`` flag and the train/eval mode."""
    parameters = [linear.module.weight for linear in layout.linears]
    flags = {name: parameter.requires_grad for name, parameter in model.named_parameters()}
    originals = [parameter.detach().clone() for parameter in parameters] if train else []
    was_training = model.training
    try:
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        for parameter in parameters:
            parameter.requires_grad_(train)
        model.eval()
        yield parameters
    finally:
        with torch.no_grad():
            for parameter, original in zip(parameters, originals):
                parameter.copy_(original)
                parameter.grad = None
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(flags[name])
        model.train(was_training)


class _SecondMoments:
    """Forward pre-hooks that sum each prunable linear's squared inputs per channel (fp32)."""

    def __init__(self, layout: ModelLayout) -> None:
        self._linears = layout.linears
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> "_SecondMoments":
        for linear in self._linears:
            self._handles.append(linear.module.register_forward_pre_hook(self._hook(linear)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, linear: PrunableLinear):  # type: ignore[no-untyped-def]
        def record(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            inputs = args[0].detach().reshape(-1, linear.in_features).float()
            squares = inputs.square().sum(dim=0)
            if linear.name in self._sums:
                self._sums[linear.name] += squares
                self._counts[linear.name] += inputs.shape[0]
            else:
                self._sums[linear.name], self._counts[linear.name] = squares, inputs.shape[0]

        return record

    def reset(self) -> None:
        self._sums.clear()
        self._counts.clear()

    def mean(self, name: str) -> torch.Tensor:
        """``E[x^2]`` per input channel of the layer ``name`` over the last batch."""
        if name not in self._sums:
            raise InputError(f"UniPruning saw no input reach {name}: is it used in the forward pass?")
        return self._sums[name] / self._counts[name]
