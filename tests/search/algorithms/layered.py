"""A synthetic problem shaped like a range search, with a front that can be computed exactly.

The genome is layer genes then the target sparsity, as the search space lays out a
``--sparsity-range`` layerwise search. Layer i at sparsity s costs ``scale[i] * exp(rate[i] * s)``,
weighted by its size; its sparsity is the target plus ``spread`` times its gene's deviation from
the size-weighted mean gene, so that the weighted mean sparsity is exactly the target (as the
space's repair makes it). The objectives are the weighted mean cost (an error, minimised) and
the target (maximised: minimised as its negative). Since the rates differ, the best allocation
changes with the target, as the best allocations at 50, 60 and 70 % differ on a real model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from paretoprune.search.algorithms import SearchAlgorithm, make_algorithm

__all__ = ["SMALL", "LayeredProblem", "front_at"]


@dataclass(frozen=True)
class LayeredProblem:
    sizes: np.ndarray  # each layer's weight count (relative)
    scale: np.ndarray  # the cost's scale per layer
    rate: np.ndarray  # how fast a layer's cost grows with its sparsity
    levels: tuple[float, float] = (0.3, 0.7)  # the box of the target gene
    spread: float = 0.3  # how far a layer's sparsity may stray from the target, per unit of gene

    @classmethod
    def random(cls, layers: int, seed: int = 5, levels: tuple[float, float] = (0.4, 0.8)) -> LayeredProblem:
        """Layers of random sizes and rates, each cheapest to prune up to a random depth."""
        rng = np.random.default_rng(seed)
        sizes = rng.uniform(1, 3, layers).round(1)
        rate = rng.uniform(4, 10, layers).round(1)
        scale = np.exp(-rate * rng.uniform(0.2, 0.8, layers)).round(4)
        return cls(sizes, scale, rate, levels)

    @property
    def layers(self) -> int:
        return len(self.sizes)

    def _weighted_mean(self, values: np.ndarray) -> np.ndarray:
        return values @ self.sizes / self.sizes.sum()

    def sparsities(self, genomes: np.ndarray) -> np.ndarray:
        """Each layer's sparsity: the target (last gene) plus ``spread`` times the gene's deviation."""
        layers, target = genomes[:, :-1], genomes[:, -1:]
        return target + self.spread * (layers - self._weighted_mean(layers)[:, None])

    def __call__(self, genomes: np.ndarray) -> np.ndarray:
        """Minimised (error, -target) per genome."""
        costs = self.scale * np.exp(self.rate * self.sparsities(genomes))
        return np.stack([self._weighted_mean(costs), -genomes[:, -1]], axis=1)

    def optimum(self, target: float) -> np.ndarray:
        """The layer sparsities of least error at ``target``, from the optimality condition.

        Every layer's marginal cost ``scale * rate * exp(rate * s)`` equals one multiplier; the
        weighted mean of the sparsities grows with it, so bisection on its logarithm finds it.
        """
        low, high = -50.0, 50.0
        for _ in range(200):
            middle = 0.5 * (low + high)
            if self._weighted_mean(self._at_multiplier(middle)) < target:
                low = middle
            else:
                high = middle
        return self._at_multiplier(0.5 * (low + high))

    def _at_multiplier(self, log_multiplier: float) -> np.ndarray:
        return (log_multiplier - np.log(self.scale * self.rate)) / self.rate

    def front(self, count: int = 201) -> np.ndarray:
        """The true front, sampled at ``count`` targets across the levels (minimised)."""
        targets = np.linspace(*self.levels, count)
        optima = np.stack([self.optimum(t) for t in targets])
        return np.stack([self._weighted_mean(self.scale * np.exp(self.rate * optima)), -targets], axis=1)

    def repair(self, genomes: np.ndarray) -> np.ndarray:
        """Layer genes moved to a zero weighted mean, within the box (as the space's repair)."""
        repaired = np.array(genomes, dtype=float)
        layers = repaired[:, :-1]
        repaired[:, :-1] = np.clip(layers - self._weighted_mean(layers)[:, None], -1.0, 1.0)
        return repaired

    def build(self, name: str, **overrides: object) -> SearchAlgorithm:
        """An algorithm on this problem, starting from uniform allocations at three targets."""
        starts = np.zeros((3, self.layers + 1))
        starts[:, -1] = np.linspace(*self.levels, 3)
        arguments: dict[str, object] = dict(
            n_var=self.layers + 1, xl=[-1.0] * self.layers + [self.levels[0]],
            xu=[1.0] * self.layers + [self.levels[1]], n_obj=2, pop_size=20, seed=0, repair=self.repair,
            initial=starts,
        )  # fmt: skip
        arguments.update(overrides)
        return make_algorithm(name, **arguments)  # type: ignore[arg-type]


def front_at(values: np.ndarray, target: float) -> float:
    """The least error among points at least ``target`` sparse: a front's value at that level."""
    sparse_enough = values[:, 1] <= -target + 1e-9
    return float(values[sparse_enough, 0].min()) if sparse_enough.any() else np.inf


# The tests' problem: six layers, targets 0.3 to 0.7; uniform allocations are 1.4 to 1.6 times
# the optimum's error.
SMALL = LayeredProblem.random(6, seed=5, levels=(0.3, 0.7))
