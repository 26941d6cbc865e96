"""LRP relevance on tiny real models: conservation per layer and end to end, the score map, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from paretoprune.cli import main
from paretoprune.errors import InputError
from paretoprune.global_scores import GLOBAL_SCORES, GlobalScoreInputs
from paretoprune.lrp import LrpSettings, attnlrp, lrp_scores, relevance_scores
from paretoprune.metrics.lrp import epsilon_weight_relevance, global_ranking_sparsities, stabilised
from paretoprune.models import LRP_FAMILIES, find_layout, final_hidden_states, target_logits
from paretoprune.pruning import layer_sparsities
from paretoprune.testing import save_tiny_model, tiny_model

# fp64 and a tiny epsilon: the epsilon rule's own leak, eps / |z| of each output's relevance, is
# then ~1e-9 of it, so whatever else fails to conserve shows far above the tolerances below.
EPS = 1e-12


def _tokens(windows: int = 2, length: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (windows, length), generator=torch.Generator().manual_seed(seed))


class _Recorder:
    """Aliases of each linear's input and output (and the embeddings' output) that keep their
    gradients, so a test reads relevance anywhere as ``tensor * tensor.grad``."""

    def __init__(self, model: torch.nn.Module, layout) -> None:
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self.handles = []
        for linear in layout.linears:
            # Registered after the rules' hooks, the input alias sits next to the linear (after any
            # rule on its input, such as the gated product's halving); prepended, the output alias
            # sits before every rule on the output: both gradients are the linear's own.
            self.handles.append(linear.module.register_forward_pre_hook(self._keep(self.inputs, linear.name, pre=True)))
            self.handles.append(linear.module.register_forward_hook(self._keep(self.outputs, linear.name), prepend=True))
        self.handles.append(model.get_input_embeddings().register_forward_hook(self._keep(self.outputs, "embeddings")))

    @staticmethod
    def _keep(store: dict[str, torch.Tensor], name: str, pre: bool = False):
        def hook(_module, inputs, output=None):
            tensor = (inputs[0] if pre else output).view_as(inputs[0] if pre else output)
            if not tensor.requires_grad:
                tensor.requires_grad_(True)
            tensor.retain_grad()
            store[name] = tensor
            return (tensor,) if pre else tensor

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _explain(model, layout, window: torch.Tensor) -> tuple[_Recorder, torch.Tensor]:
    """One window through the LRP backward pass; the recorder and the explained logits' sum."""
    with attnlrp(model, layout, EPS):
        recorder = _Recorder(model, layout)  # after the rules' hooks: see _Recorder
        try:
            ids = window[None]
            explained = target_logits(model, final_hidden_states(model, ids)[:, :-1], ids[:, 1:]).sum()
            explained.backward()
        finally:
            recorder.remove()
    return recorder, explained.detach()


@pytest.fixture(scope="module")
def llama64():
    return tiny_model("llama", seed=3).double()


def test_each_linear_conserves_relevance_and_its_weights_hold_it_all(llama64) -> None:
    layout = find_layout(llama64)
    recorder, _ = _explain(llama64, layout, _tokens(1)[0])
    for linear in layout.linears:
        x, z = recorder.inputs[linear.name].detach()[0], recorder.outputs[linear.name].detach()[0]
        g = recorder.outputs[linear.name].grad[0]  # the gradient the linear itself receives
        relevance_out = g * stabilised(z, EPS)  # what arrived at z: z * (the rule's gradient)
        relevance_in = (recorder.inputs[linear.name] * recorder.inputs[linear.name].grad)[0].sum()
        weights = epsilon_weight_relevance(x, linear.weight_matrix(), relevance_out, eps=EPS)
        # The weights' relevances sum to the input relevance: the epsilon rule splits z_i into
        # its W_ij x_j terms, and x_j's relevance is the sum of its terms (exact in fp64).
        torch.testing.assert_close(weights.sum(), relevance_in, rtol=1e-9, atol=1e-12)
        # No bias: in equals out up to the epsilon's share (bounded by eps / |z|, here ~1e-9).
        torch.testing.assert_close(relevance_in, relevance_out.sum(), rtol=1e-6, atol=1e-9)


def test_relevance_is_conserved_end_to_end_except_what_attention_absorbs() -> None:
    """With q and k projections at zero, the attention weights are constant: the half of each
    attention's relevance that the uniform rule hands to them is absorbed, and nothing else is
    lost. So the explained logits = the embeddings' relevance + half of each attention output's."""
    model = tiny_model("llama", seed=4).double()
    layout = find_layout(model)
    for linear in layout.linears:
        if linear.kind in ("self_attn.q_proj", "self_attn.k_proj"):
            linear.weight_matrix().zero_()
    recorder, explained = _explain(model, layout, _tokens(1, 32, seed=5)[0])
    embeddings = recorder.outputs["embeddings"]
    relevance_in = (embeddings * embeddings.grad).sum()
    absorbed = sum((recorder.inputs[linear.name] * recorder.inputs[linear.name].grad).sum() / 2
                   for linear in layout.linears if linear.kind == "self_attn.o_proj")  # fmt: skip
    # Every rule on the way is exact but the epsilon's (~1e-9 relative here): 1e-6 leaves room
    # for fp64 round-off over a few thousand terms and fails on any rule that leaks more.
    torch.testing.assert_close(relevance_in + absorbed, explained, rtol=1e-6, atol=1e-9)
    assert abs(relevance_in.item()) > 0.1 * abs(explained.item())  # not a trivial 0 + everything


def test_the_score_map_is_the_mean_absolute_weight_relevance(llama64) -> None:
    layout = find_layout(llama64)
    tokens = _tokens(2)
    expected: dict[str, torch.Tensor] = {}
    for window in tokens:
        recorder, _ = _explain(llama64, layout, window)
        for linear in layout.linears:
            x = recorder.inputs[linear.name].detach()[0]
            z = recorder.outputs[linear.name].detach()[0]
            relevance = recorder.outputs[linear.name].grad[0] * stabilised(z, EPS)
            r = epsilon_weight_relevance(x, linear.weight_matrix(), relevance, eps=EPS).abs().float()
            expected[linear.name] = expected.get(linear.name, 0) + r / len(tokens)
    llama64.zero_grad(set_to_none=True)
    before = {name: p.requires_grad for name, p in llama64.named_parameters()}
    with torch.no_grad():
        logits = llama64(tokens).logits
    scores = relevance_scores(llama64, layout, tokens, LrpSettings(eps=EPS), progress=False)
    for linear in layout.linears:
        assert scores[linear.name].dtype == torch.float32 and (scores[linear.name] >= 0).all()
        torch.testing.assert_close(scores[linear.name], expected[linear.name], rtol=1e-4, atol=1e-9)
    # The model is as it was: same outputs, no hooks left, the same parameters want gradients.
    with torch.no_grad():
        assert torch.equal(llama64(tokens).logits, logits)
    assert before == {name: p.requires_grad for name, p in llama64.named_parameters()}
    assert all(p.grad is None for p in llama64.parameters())


def test_the_rule_is_registered_and_cached(tmp_path: Path) -> None:
    model = tiny_model("qwen2")  # q, k and v carry biases: the epsilon rule absorbs their share
    inputs = GlobalScoreInputs(model, find_layout(model), _tokens(2), model_id="tiny", cache_dir=tmp_path,
                               progress=False)  # fmt: skip
    first = GLOBAL_SCORES["lrp"].compute(inputs)
    assert len(list(tmp_path.glob("lrp-*.safetensors"))) == 1
    again = lrp_scores(inputs)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert all(torch.isfinite(values).all() and values.sum() > 0 for values in first.values())


@pytest.mark.parametrize("family", ["opt", "gpt2"])
def test_an_unsupported_family_is_refused_in_one_line(family: str) -> None:
    model = tiny_model(family)
    inputs = GlobalScoreInputs(model, find_layout(model), _tokens(1), progress=False)
    with pytest.raises(InputError, match=f"supports the {', '.join(LRP_FAMILIES)} families, not {family}"):
        lrp_scores(inputs)


def test_prune_with_lrp_from_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    monkeypatch.setenv("PARETOPRUNE_CACHE", str(tmp_path / "cache"))
    llama, gpt2 = tmp_path / "llama", tmp_path / "gpt2"
    for folder, family in ((llama, "llama"), (gpt2, "gpt2")):
        save_tiny_model(folder, tiny_model(family))
    common = ["--method", "lrp", "--sparsity", "0.5", "--nsamples", "2", "--seqlen", "32", "--json", "--quiet"]
    with pytest.raises(SystemExit) as exited:
        main(["prune", "--model", str(llama), *common, "--eval", "builtin", "--max-windows", "2"])
    assert exited.value.code in (0, None)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert summary["perplexity"] > 1
    assert len(list((tmp_path / "cache").rglob("lrp-*.safetensors"))) == 1
    # The global ranking as the layer allocation of another rule reads the same cached scores.
    with pytest.raises(SystemExit) as exited:
        main(["prune", "--model", str(llama), *common, "--method", "wanda", "--allocation", "lrp"])
    assert exited.value.code in (0, None)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert len(list((tmp_path / "cache").rglob("lrp-*.safetensors"))) == 1
    with pytest.raises(SystemExit) as refused:
        main(["prune", "--model", str(gpt2), *common])
    assert refused.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]  # the line after the weights' progress bar
    assert message.startswith("error: LRP relevance supports the llama, mistral, qwen2 families, not gpt2")


def test_the_lrp_allocation_is_the_global_ranking_at_the_exact_mean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARETOPRUNE_CACHE", str(tmp_path))
    model = tiny_model("llama", seed=6)
    layout = find_layout(model)
    tokens = _tokens(2)
    sparsities = layer_sparsities(layout, 0.5, "lrp", model=model, tokens=tokens)
    numels = {linear.name: linear.numel for linear in layout.linears}
    mean = sum(sparsities[name] * numels[name] for name in numels) / sum(numels.values())
    assert mean == pytest.approx(0.5, abs=1e-9)
    scores = lrp_scores(GlobalScoreInputs(model, layout, tokens, cache_dir=tmp_path / "scores", progress=False))
    assert len(list(tmp_path.rglob("lrp-*.safetensors"))) == 1  # the allocation's scores, read back
    expected = global_ranking_sparsities([scores[name] for name in layout.names], 0.5)
    assert [sparsities[name] for name in layout.names] == pytest.approx(list(expected), abs=1e-6)
    assert max(sparsities.values()) - min(sparsities.values()) > 0.05  # not uniform in disguise
