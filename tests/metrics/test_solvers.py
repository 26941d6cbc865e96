"""The layer solvers registered by name."""

from __future__ import annotations

import torch

from paretoprune.metrics.masks import keep_mask
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


def random_layer(
    seed: int, rows: int = 16, width: int = 64, tokens: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """A weight and calibration inputs with uneven scales and a shared component."""
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, width, generator=generator)
    inputs = torch.randn(width, tokens, generator=generator) * (3 * torch.rand(width, 1, generator=generator))
    return weight, inputs + 2 * torch.randn(1, tokens, generator=generator)


def output_error(weight: torch.Tensor, solved: torch.Tensor, inputs: torch.Tensor) -> float:
    return float(((weight - solved) @ inputs).square().sum())


def test_fw_solver_refines_the_mask_and_masks_the_weight() -> None:
    weight, inputs = random_layer(1)
    hessian = inputs @ inputs.T
    solver = SOLVERS.lookup("fw")
    assert solver.needs_hessian
    for structure in (None, (2, 4)):
        keep = keep_mask(weight.abs() * hessian.diagonal().sqrt(), 0.6, structure)
        solved, mask = solver.solve(weight, keep, hessian)
        assert mask.dtype == torch.bool and not torch.equal(mask, keep)
        assert torch.equal(solved, weight * mask)
        assert torch.equal(mask.sum(dim=1), keep.sum(dim=1))
        if structure is not None:
            assert bool((mask.reshape(16, -1, 4).sum(dim=-1) == 2).all())
        assert output_error(weight, solved, inputs) < output_error(weight, weight * keep, inputs)


def test_fw_then_update_beats_update_alone_on_these_layers() -> None:
    """Not a theorem: FW lowers the error of the mask as it stands, and the update then
    reconstructs on a different mask. With the default settings it held on every layer tried
    here and on the measured SmolLM2-135M layers; at alpha = 0 with 2:4 one random layer
    (seed 5 of this generator) came out 5% worse than the update alone.

    ``update`` is given the dense weight with FW's mask: the weight FW returns has its dropped
    entries zeroed, which leaves the update nothing to reconstruct (checked below).
    """
    fw, update = SOLVERS.lookup("fw"), SOLVERS.lookup("update")
    for seed in range(4):
        weight, inputs = random_layer(seed)
        hessian = inputs @ inputs.T
        for structure in (None, (2, 4)):
            keep = keep_mask(weight.abs() * hessian.diagonal().sqrt(), 0.6, structure)
            refined, mask = fw.solve(weight, keep, hessian)
            chained, chained_mask = update.solve(weight, mask, hessian)
            alone, _ = update.solve(weight, keep, hessian)
            assert torch.equal(chained_mask, mask)
            assert output_error(weight, chained, inputs) < output_error(weight, alone, inputs)
            # The pruned weight passed on as it is: the update has nothing to move.
            torch.testing.assert_close(update.solve(refined, mask, hessian)[0], refined)


def test_chains_are_parsed_checked_and_run_in_order() -> None:
    import pytest

    from paretoprune.errors import InputError
    from paretoprune.metrics.solvers import parse_chain, run_chain

    assert parse_chain(None) == () and parse_chain(" fw , update ") == ("fw", "update")
    with pytest.raises(InputError, match="put the solvers that change the mask \\(fw\\) before"):
        parse_chain("update,fw")
    with pytest.raises(InputError, match="twice"):
        parse_chain("fw,fw")
    with pytest.raises(InputError, match="unknown solver 'obs' for --solver: choose one of update, fw"):
        parse_chain("obs")
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(8, 32, generator=generator)
    inputs = torch.randn(32, 128, generator=generator)
    hessian = inputs @ inputs.T
    keep = torch.rand(8, 32, generator=generator).argsort(dim=1) >= 16  # half of every row
    pruned, mask = run_chain((), weight, keep, hessian)
    assert torch.equal(mask, keep) and torch.equal(pruned, weight * keep)
    fw_pruned, fw_mask = run_chain(("fw",), weight, keep, hessian)
    both, both_mask = run_chain(("fw", "update"), weight, keep, hessian)
    assert torch.equal(both_mask, fw_mask)
    # update gets the dense weight with fw's mask (not fw's zeroed output, which it could not move).
    assert torch.equal(both, sparsegpt_update(weight, hessian, fw_mask))
    error = lambda w: float(((w - weight) @ inputs).pow(2).sum())  # noqa: E731
    assert error(both) <= error(fw_pruned) <= error(weight * keep)


def test_the_block_solver_goes_last_and_does_nothing_per_layer() -> None:
    import pytest

    from paretoprune.errors import InputError
    from paretoprune.metrics.solvers import block_chain, layer_chain, parse_chain, run_chain

    assert parse_chain("update,regional") == ("update", "regional")
    assert layer_chain(("fw", "update", "regional")) == ("fw", "update")
    assert block_chain(("fw", "update", "regional")) == ("regional",)
    with pytest.raises(InputError, match="regional works on whole blocks .*put it last"):
        parse_chain("regional,update")
    with pytest.raises(InputError, match="before those that update the weights"):
        parse_chain("regional,fw")
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(4, 8, generator=generator)
    keep = torch.rand(4, 8, generator=generator) > 0.5
    pruned, mask = run_chain(("regional",), weight, keep, torch.eye(8))
    assert torch.equal(mask, keep) and torch.equal(pruned, weight * keep)
    assert not SOLVERS.lookup("regional").needs_hessian
