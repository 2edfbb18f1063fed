"""Model architectures and GPU datasheets: the facts behind oracles for models nobody measured.

Specs are data of the oracle package, one YAML file each with its source
(`oracle/data/models/*.yaml`, `oracle/data/gpus/*.yaml`); this module reads them into frozen
dataclasses and derives FLOPs and bytes per token.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields
from importlib import resources
from typing import Any

import yaml


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

    def __post_init__(self) -> None:
        for f in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "head_dim", "vocab_size", "params"):
            if getattr(self, f) <= 0:
                raise ValueError(f"model {self.name}: {f} must be positive, got {getattr(self, f)}")
        if not 0 <= self.local_layers <= self.num_layers:
            raise ValueError(f"model {self.name}: local_layers must be in [0, num_layers]")

    @property
    def weight_params(self) -> int:
        """Parameters read by every forward step: all but an untied input embedding (a gather)."""
        return self.params - (0 if self.tied_embeddings else self.vocab_size * self.hidden_size)

    @property
    def weight_bytes(self) -> float:
        """Bytes of weights resident on the GPU (all parameters)."""
        return self.params * self.bytes_per_param

    @property
    def kv_bytes_per_token(self) -> float:
        """KV-cache bytes per token: 2·L·h_kv·d_h·b (keys and values, every layer)."""
        return 2.0 * self.num_layers * self.num_kv_heads * self.head_dim * self.bytes_per_param

    @property
    def head_flops_per_seq(self) -> float:
        """LM-head FLOPs for one sequence's logits: 2·V·d."""
        return 2.0 * self.vocab_size * self.hidden_size

    def attn_flops_per_pair(self, layers: int) -> float:
        """FLOPs of one (query, key) pair over `layers` layers: QKᵀ and AV, 4·h·d_h each layer."""
        return 4.0 * layers * self.num_heads * self.head_dim

    def kv_bytes_per_ctx_token(self, layers: int) -> float:
        """Bytes of KV cache read per context token over `layers` layers."""
        return 2.0 * layers * self.num_kv_heads * self.head_dim * self.bytes_per_param


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
    text = resources.files("oracle").joinpath(DATA, GROUPS[group], f"{name}.yaml").read_text()
    return yaml.safe_load(text) or {}


def _build(cls: type, data: dict[str, Any]) -> Any:
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})


def model_names() -> list[str]:
    """Names of the architectures in `oracle/data/models/`."""
    return _names("model")


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
