"""Model architectures and GPU datasheets: the facts behind oracles for models nobody measured.

Specs are data of the oracle package, one YAML file each with its source
(`oracle/data/models/*.yaml`, `oracle/data/gpus/*.yaml`); this module reads them into frozen
dataclasses and derives FLOPs and bytes per token.
"""

from __future__ import annotations

import copy
import difflib
import functools
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any

import yaml

# Sampler working memory per logit (bytes) that an engine holds back from the KV cache for each
# sequence of a full batch. vLLM V1 sizes its KV cache after a start-up profile run that samples
# max_num_seqs dummy requests with top-k and top-p set (gpu_model_runner.profile_run →
# _dummy_sampler_run); its V1 sampler takes FlashInfer's top-k/top-p kernel when FlashInfer is
# installed (VLLM_USE_FLASHINFER_SAMPLER unset), which holds the model's bf16 logits (2), their
# fp32 copy (4), the top-k-masked fp32 logits (4) and fp32 probabilities (4). PyTorch's fallback
# sorts the vocabulary and holds about 23.
SAMPLER_BYTES_PER_LOGIT = 14.0


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only Transformer (sizes in elements; params counted from the config)."""

    name: str
    hf_id: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    gated_ffn: bool
    vocab_size: int
    tied_embeddings: bool
    params: int
    bytes_per_param: float = 2.0
    sliding_window: int | None = None
    local_layers: int = 0
    source: str = ""
    experts: int = 0  # routed experts per MoE layer (0: a dense model)
    experts_per_token: int = 0  # top-k: routed experts each token uses per MoE layer
    shared_experts: int = 0  # always-active experts per MoE layer
    moe_intermediate_size: int = 0  # FFN width of one expert
    dense_layers: int = 0  # layers of an MoE model with a dense FFN (the rest are MoE layers)
    kv_elems_per_token_layer: float | None = None  # KV elements per token and layer (MLA); None: 2·h_kv·d_h
    attn_dim: float | None = None  # per-head width of QKᵀ and AV (absorbed MLA); None: head_dim
    expert_bytes_per_param: float | None = None  # bytes per routed-expert weight (mxfp4); None: bytes_per_param
    embedding_bytes_per_param: float | None = None  # input embedding and LM head; None: bytes_per_param
    kv_bytes_per_elem: float = 2.0  # KV-cache element (bf16)
    fp8_compute: bool = False  # GEMMs on fp8 tensor cores (W8A8 checkpoints)
    fp8_block_scales: bool = False  # fp8 weights with a scale per 128×128 block (dequantising MoE kernels)
    mamba_layers: int = 0  # Mamba layers of a hybrid (each block one mixer or FFN; `num_layers` counts blocks)
    attention_layers: int | None = None  # layers with attention and a KV cache (a hybrid's); None: every layer
    mamba_state_bytes: float = 0.0  # recurrent state one sequence holds over every Mamba layer, as served (bytes)

    def __post_init__(self) -> None:
        for f in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "vocab_size", "params"):
            if getattr(self, f) <= 0:
                raise ValueError(f"model {self.name}: {f} must be positive, got {getattr(self, f)}")
        if not 0 <= self.local_layers <= self.num_layers:
            raise ValueError(f"model {self.name}: local_layers must be in [0, num_layers]")
        if self.experts:
            if not 0 < self.experts_per_token <= self.experts or self.moe_intermediate_size <= 0:
                raise ValueError(
                    f"model {self.name}: an MoE model needs 0 < experts_per_token ≤ experts and a positive "
                    f"moe_intermediate_size, got {self.experts_per_token}, {self.experts}, {self.moe_intermediate_size}"
                )
            if not 0 <= self.dense_layers < self.num_layers:
                raise ValueError(f"model {self.name}: dense_layers must be in [0, num_layers)")
        if self.mamba_layers and not (
            0 < (self.attention_layers or 0) < self.num_layers and self.mamba_state_bytes > 0
        ):
            raise ValueError(
                f"model {self.name}: a hybrid with {self.mamba_layers} Mamba layers needs attention_layers in "
                f"(0, num_layers) and a positive mamba_state_bytes, "
                f"got {self.attention_layers}, {self.mamba_state_bytes}"
            )
        if self.expert_param_count() >= self.params:
            raise ValueError(f"model {self.name}: its routed experts alone exceed params ({self.params:,})")

    @property
    def moe_layers(self) -> int:
        """Layers whose FFN is a mixture of experts."""
        return self.num_layers - self.dense_layers if self.experts else 0

    def expert_param_count(self, experts: int | None = None) -> int:
        """Parameters of `experts` routed experts (default: all) in every MoE layer."""
        n = self.experts if experts is None else experts
        return self.moe_layers * n * (3 if self.gated_ffn else 2) * self.hidden_size * self.moe_intermediate_size

    @property
    def embedding_params(self) -> int:
        """Input embedding and LM head parameters (one matrix when tied)."""
        return self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)

    @property
    def active_params(self) -> int:
        """Parameters one token uses: all but the routed experts it does not pick."""
        return self.params - self.expert_param_count(self.experts - self.experts_per_token)

    @property
    def weight_params(self) -> int:
        """Parameters a token's forward pass reads: its active ones but an untied input embedding
        (a gather)."""
        return self.active_params - (0 if self.tied_embeddings else self.vocab_size * self.hidden_size)

    def _extra_bytes(self, which: float | None) -> float:
        """Bytes per parameter of a tensor kind over the layers' `bytes_per_param` (0 when equal)."""
        return 0.0 if which is None else which - self.bytes_per_param

    @property
    def weight_bytes(self) -> float:
        """Bytes of weights resident on the replica's GPUs (all parameters, each at its precision)."""
        return (
            self.params * self.bytes_per_param
            + self.expert_param_count() * self._extra_bytes(self.expert_bytes_per_param)
            + self.embedding_params * self._extra_bytes(self.embedding_bytes_per_param)
        )

    @property
    def step_weight_bytes(self) -> float:
        """Bytes of weights every step reads whatever its tokens: all but the routed experts and an
        untied input embedding (a gather)."""
        untied = 0 if self.tied_embeddings else self.vocab_size * self.hidden_size
        head = self.vocab_size * self.hidden_size
        read = self.params - self.expert_param_count() - untied
        return read * self.bytes_per_param + head * self._extra_bytes(self.embedding_bytes_per_param)

    @property
    def expert_bytes(self) -> float:
        """Bytes of every routed expert of every MoE layer (0 for a dense model)."""
        b = self.bytes_per_param if self.expert_bytes_per_param is None else self.expert_bytes_per_param
        return self.expert_param_count() * b

    @property
    def attn_layers(self) -> int:
        """Layers with attention (and a KV cache): a hybrid's `attention_layers`, else every layer."""
        return self.num_layers if self.attention_layers is None else self.attention_layers

    @property
    def kv_elems_per_layer(self) -> float:
        """KV-cache elements per token and layer: keys and values of every KV head, or MLA's latent."""
        if self.kv_elems_per_token_layer is not None:
            return float(self.kv_elems_per_token_layer)
        return 2.0 * self.num_kv_heads * self.head_dim

    @property
    def kv_bytes_per_token(self) -> float:
        """KV-cache bytes per token over every layer."""
        return self.attn_layers * self.kv_elems_per_layer * self.kv_bytes_per_elem

    @property
    def sampler_bytes_per_seq(self) -> float:
        """Sampler memory one sequence of a full batch takes on each GPU (every GPU samples the
        whole vocabulary): V · SAMPLER_BYTES_PER_LOGIT bytes."""
        return self.vocab_size * SAMPLER_BYTES_PER_LOGIT

    @property
    def head_flops_per_seq(self) -> float:
        """LM-head FLOPs for one sequence's logits: 2·V·d."""
        return 2.0 * self.vocab_size * self.hidden_size

    def attn_flops_per_pair(self, layers: int) -> float:
        """FLOPs of one (query, key) pair over `layers` layers: QKᵀ and AV, 4·h·d each layer."""
        return 4.0 * layers * self.num_heads * (self.head_dim if self.attn_dim is None else self.attn_dim)

    def kv_bytes_per_ctx_token(self, layers: int) -> float:
        """Bytes of KV cache read per context token over `layers` layers."""
        return layers * self.kv_elems_per_layer * self.kv_bytes_per_elem


@dataclass(frozen=True)
class GpuSpec:
    """Datasheet facts of one GPU: dense bf16 peak (FLOP/s), memory (bytes), bandwidth (B/s), power (W)."""

    name: str
    full_name: str
    peak_flops: float
    memory_bytes: float
    memory_bandwidth: float
    power_limit_w: float
    idle_power_w: float
    source: str = ""
    notes: str = ""
    fp8_peak_flops: float | None = None  # dense fp8 tensor-core peak (FLOP/s); None: no fp8 units
    allreduce_bandwidth: float | None = None  # NCCL all-reduce bus bandwidth between the node's GPUs (B/s)
    allreduce_latency_s: float | None = None  # small-message all-reduce latency (s)
    nvlink_bandwidth: float | None = None  # NVLink bandwidth per GPU, both directions (B/s)

    def __post_init__(self) -> None:
        for f in ("peak_flops", "memory_bytes", "memory_bandwidth", "power_limit_w"):
            if getattr(self, f) <= 0:
                raise ValueError(f"gpu {self.name}: {f} must be positive, got {getattr(self, f)}")


DATA = "data"
GROUPS = {"model": "models", "gpu": "gpus"}
"""Kind of spec → its folder under oracle/data/."""


def _names(group: str) -> list[str]:
    root = resources.files("oracle").joinpath(DATA, GROUPS[group])
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def _read(group: str, name: str) -> dict[str, Any]:
    names = _names(group)
    key = name.lower()
    if key not in names:
        matches = [n for n in names if _read_raw(group, n).get("hf_id", "").lower() == key]
        if not matches:
            close = difflib.get_close_matches(key, names, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"unknown {group} {name!r}.{hint} Known: {', '.join(names)}")
        key = matches[0]
    return _read_raw(group, key)


def _read_raw(group: str, name: str) -> dict[str, Any]:
    """A spec file's mapping (a copy: the parsed files are cached, as a run's oracles look their
    GPU up once per simulation)."""
    return copy.deepcopy(_parsed(group, name))


@functools.cache
def _parsed(group: str, name: str) -> dict[str, Any]:
    text = resources.files("oracle").joinpath(DATA, GROUPS[group], f"{name}.yaml").read_text()
    return yaml.safe_load(text) or {}


def _build(cls: type, data: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})


def model_names() -> list[str]:
    """Names of the architectures in `oracle/data/models/`."""
    return _names("model")


# The measured GPU whose fitted constants each GPU's oracles use (`oracle.build`, `oracle.errors`): H200
# and A100 have no measured rows, so they take the H100's (same or older software stack), with their own
# peaks and bandwidths.
CALIBRATED_ON = {"h100": "H100", "h200": "H100", "a100": "H100", "b200": "B200"}


def gpu_names() -> list[str]:
    """Names of the GPUs in `oracle/data/gpus/`."""
    return _names("gpu")


def load_model(name: str) -> ModelSpec:
    """A model spec by short name ('llama-3.1-8b') or Hugging Face id ('meta-llama/Llama-3.1-8B')."""
    return _build(ModelSpec, _read("model", name))


def load_gpu(name: str) -> GpuSpec:
    """A GPU spec by short name ('h100')."""
    return _build(GpuSpec, _read("gpu", name))


def find_model(name: str) -> ModelSpec | None:
    """The spec matching a measurement table's model name, or None when it names no known one."""
    key = name.lower().split("/")[-1].removesuffix("-instruct").removesuffix("-it")
    for n in model_names():
        raw = _read_raw("model", n)
        aliases = [n, raw.get("hf_id", "").lower().split("/")[-1], *map(str.lower, raw.get("aliases", []))]
        if key in aliases:
            return _build(ModelSpec, raw)
    return None


def find_gpu(name: str) -> GpuSpec | None:
    """The spec matching a GPU name as NVML or a table reports it ('NVIDIA H100 80GB HBM3'), or None."""
    low = name.lower()
    for n in gpu_names():
        raw = _read_raw("gpu", n)
        if low == n or any(a.lower() in low for a in raw.get("aliases", [])):
            return _build(GpuSpec, raw)
    return None
