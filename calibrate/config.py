"""The structured-config schema of `python -m calibrate.measure`, validated when Hydra composes.

Only the entry point (`calibrate.measure`) sees these; it converts them to the typed objects the
library takes (`Grid`, `SweepOptions`, `TrackingConfig`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from calibrate.grid import Grid
from tracking import TrackingConfig


class BackendName(Enum):
    transformers = "transformers"
    tensorrt_llm = "tensorrt_llm"


class MeterKind(Enum):
    nvml = "nvml"
    none = "none"


@dataclass
class GridConf:
    name: str = MISSING
    n_in: list[int] = MISSING
    n_out: list[int] = MISSING
    batch_sizes: list[int] = MISSING
    num_requests: list[int] = MISSING
    clocks_mhz: list[int | None] = field(default_factory=lambda: [None])
    power_limits_w: list[float | None] = field(default_factory=lambda: [None])
    repeats: int = 3
    warmup: int = 1
    max_num_tokens: int | None = None


@dataclass
class EngineConf:
    dtype: str = "auto"
    device: str = "auto"
    tensor_parallel_size: int = 1
    free_gpu_memory_fraction: float = 0.9


@dataclass
class NvmlConf:
    gpus: list[int] = field(default_factory=lambda: [0])
    min_window_s: float = 1.0
    idle_settle_s: float = 5.0
    idle_window_s: float = 2.0


@dataclass
class TrackingConf:
    enabled: bool = True
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "sweetspot-calibrate"
    run_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class MeasureConf:
    backend: BackendName = BackendName.transformers
    model: str = "tiny"
    model_name: str | None = None
    meter: MeterKind = MeterKind.nvml
    out: str = MISSING
    seed: int = 0
    max_window_repeats: int = 1000
    progress: bool = True
    fit: bool = True
    grid: GridConf = MISSING
    engine: EngineConf = field(default_factory=EngineConf)
    nvml: NvmlConf = field(default_factory=NvmlConf)
    tracking: TrackingConf = field(default_factory=TrackingConf)


def register() -> None:
    """Store the schema as `measure_schema` (used by conf/calibrate/measure.yaml's defaults)."""
    ConfigStore.instance().store(name="measure_schema", node=MeasureConf)


def to_grid(conf: GridConf) -> Grid:
    return Grid(
        name=conf.name,
        n_in=tuple(conf.n_in),
        n_out=tuple(conf.n_out),
        batch_sizes=tuple(conf.batch_sizes),
        num_requests=tuple(conf.num_requests),
        clocks_mhz=tuple(conf.clocks_mhz),
        power_limits_w=tuple(conf.power_limits_w),
        repeats=conf.repeats,
        warmup=conf.warmup,
        max_num_tokens=conf.max_num_tokens,
    )


def to_tracking(conf: TrackingConf) -> TrackingConfig:
    return TrackingConfig(
        enabled=conf.enabled, uri=conf.uri, experiment=conf.experiment, run_name=conf.run_name, tags=dict(conf.tags)
    )
