"""The layer solvers registered by name."""

from __future__ import annotations

import torch

from paretoprune.metrics.solvers import SOLVERS
from paretoprune.metrics.sparsegpt import sparsegpt_update


def test_update_solver_is_sparsegpts_update_and_keeps_the_mask() -> None:
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 16, generator=generator)
    inputs = torch.randn(16, 64, generator=generator)
    hessian = inputs @ inputs.T
    keep = torch.rand(6, 16, generator=generator) > 0.5
    solved, mask = SOLVERS.lookup("update").solve(weight, keep, hessian)
    assert torch.equal(mask, keep)
    assert torch.equal(solved, sparsegpt_update(weight, hessian, keep))
    assert bool((solved[~keep] == 0).all())
    # The update exists to lower the layer's output error below plain masking.
    masked_error = ((weight * keep - weight) @ inputs).pow(2).sum()
    solved_error = ((solved - weight) @ inputs).pow(2).sum()
    assert solved_error < masked_error
