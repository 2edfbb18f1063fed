"""The summary of a run, typed: every key defined once, with its unit.

`summary.json`, the MLflow metrics, the console table, the objective returned to a Hydra sweeper
and the cross-run report all read these classes; `METRICS` lists every numeric key with its unit,
so a renamed field fails loudly where a name is looked up (`unit`) instead of reading NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

_NONE = object()


def _m(unit: str, doc: str, default: Any = _NONE) -> Any:
    meta = {"unit": unit, "doc": doc}
    return field(metadata=meta) if default is _NONE else field(default=default, metadata=meta)


@dataclass(frozen=True)
class Latency:
    """Percentiles (s) over the completed requests."""

    p50: float = _m("s", "median")
    p90: float = _m("s", "90th percentile")
    p99: float = _m("s", "99th percentile")
    mean: float = _m("s", "mean")


@dataclass(frozen=True)
class RunSummary:
    """One simulation of a trace under one policy (energies over the paired horizon)."""

    policy: str = field(metadata={"unit": "", "doc": "policy name"})
    requests: int = _m("requests", "requests in the trace")
    completed: int = _m("requests", "requests served")
    rejected: int = _m("requests", "requests never served")
    rejected_kv_cache: int = _m("requests", "rejected: longer than the KV cache holds")
    rejected_token_budget: int = _m("requests", "rejected: prompt over max_num_tokens without chunked prefill")
    rejected_summary: int = _m("requests", "rejected: their summarization request was rejected")
    preemptions: int = _m("preemptions", "times a running request was preempted (recomputed later)")
    recomputed_tokens: int = _m("tokens", "prompt tokens prefilled again, or thrown away, by preemptions")
    cached_tokens: int = _m("tokens", "prompt tokens the prefills found in the prefix cache (re-prefills included)")
    prefix_hit_rate: float = _m(
        "share",
        "cached_tokens / the prompt tokens the prefills needed, cached or computed: the served prompts of the "
        "completed requests, the prompts of the summarization requests served and recomputed_tokens",
    )
    cache_saved_j: float = _m("J", "prefill energy the prefix cache spared (not in energy_j)")
    input_tokens: int = _m("tokens", "input tokens served (completed requests)")
    output_tokens: int = _m("tokens", "output tokens served (completed requests)")
    energy_j: float = _m("J", "GPU energy, idle included")
    active_energy_j: float = _m("J", "energy of the steps")
    prefill_energy_j: float = _m(
        "J", "the requests' own prefill terms in active_energy_j (the rest: decode terms and steps' shared costs)"
    )
    idle_energy_j: float = _m("J", "idle power outside steps")
    energy_per_request_j: float = _m("J", "energy / completed requests")
    energy_per_output_token_j: float = _m("J", "energy / output tokens")
    output_tokens_per_j: float = _m("tokens/J", "output tokens / energy")
    avg_power_w: float = _m("W", "energy / horizon, all GPUs")
    peak_power_w: float = _m("W", "highest total power of all GPUs")
    mean_clock_mhz: float = _m("MHz", "SM clock averaged over the GPUs' busy time (NaN: the GPU's clocks unknown)")
    clock_budget_missed_steps: int = _m(
        "steps", "decode steps slower than the clock controller's budget even at full clock (no clock met it)"
    )
    makespan_s: float = _m("s", "simulated time to the last finish")
    ttft_s: Latency = _m("s", "time to first token")
    tpot_s: Latency = _m("s", "time per output token")
    e2e_s: Latency = _m("s", "arrival to last token")
    slo_attainment: float = _m("share", "requests meeting both SLO targets")
    input_tokens_dropped: int = _m("tokens", "input tokens a policy removed")
    output_tokens_cut: int = _m("tokens", "output tokens a policy cut")
    requests_shaped: int = _m("requests", "requests a policy changed")
    quality_cost_pct: float = _m("%", "tokens removed / tokens asked (served + removed)")
    summary_energy_j: float = _m("J", "energy of summarization requests")
    sim_wall_s: float = _m("s", "wall time of the simulation")
    sim_requests_per_s: float = _m("requests/s", "simulator speed")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Summary:
    """A run's summary: the policy's figures (top level), planning, fleet, capacity, the baseline
    and the savings (%) against it (None without a baseline), on the requests both runs served
    (`sim.results.metrics.Comparison`; `comparison_note` names those left out)."""

    run: RunSummary
    planning: dict[str, Any]
    fleet: dict[str, Any]
    baseline: RunSummary | None = None
    baseline_source: str = field(default="", metadata={"unit": "", "doc": "simulated | cached (sweep)"})
    capacity: dict[str, Any] | None = None
    energy_savings_pct: float | None = _m("%", "energy saved against the baseline", None)
    energy_per_request_savings_pct: float | None = _m("%", "energy per request saved", None)
    active_energy_savings_pct: float | None = _m("%", "step energy saved", None)
    compared_requests: int | None = _m("requests", "requests both runs served: what the savings compare", None)
    comparison_note: str = field(default="", metadata={"unit": "", "doc": "requests left out of the comparison"})
    arrivals_note: str = field(default="", metadata={"unit": "", "doc": "closed loop: each run has its own arrivals"})
    bands: dict[str, Any] | None = None  # the headline figures' bands over replays (sim.planning.uncertainty)

    def to_dict(self) -> dict[str, Any]:
        """The summary.json layout: run keys at top level, then the rest."""
        out: dict[str, Any] = {**self.run.to_dict(), **self.planning, "fleet": self.fleet}
        if self.capacity is not None:
            out["capacity"] = self.capacity
        if self.baseline is not None:
            out["baseline"] = self.baseline.to_dict()
            out["baseline_source"] = self.baseline_source
            for key in (
                "energy_savings_pct",
                "energy_per_request_savings_pct",
                "active_energy_savings_pct",
                "compared_requests",
                "comparison_note",
            ):
                out[key] = getattr(self, key)
            if self.arrivals_note:
                out["arrivals_note"] = self.arrivals_note
        if self.bands is not None:
            out["bands"] = self.bands
        return out

    def value(self, key: str) -> float:
        """A numeric key of summary.json (dotted, e.g. 'ttft_s.p99', 'baseline.energy_j'); unit() checks it."""
        unit(key)
        return lookup(self.to_dict(), key)


def lookup(data: Mapping[str, Any], key: str) -> float:
    """The number at dotted `key` of a summary.json mapping (NaN where there is none)."""
    node: Any = data
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return math.nan if node is None else float(node)


SAME_RUN = "same run"
"""`Summary.baseline_source` of a policy=none run: its baseline is the run itself."""

WALL_CLOCK = ("sim_wall_s", "sim_requests_per_s")
"""RunSummary keys measured on the wall clock: they differ between runs of one seed, so they go
to run.json (`tracking.folder.RunRecord.timing`), and summary.json stays the same, bit for bit."""


def split_wall_clock(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """(`Summary.to_dict()` output without the WALL_CLOCK keys, their finite values by dotted
    metric name, as MLflow names them)."""
    out = dict(data)
    timing = {key: out.pop(key) for key in WALL_CLOCK if key in out}
    if isinstance(out.get("baseline"), dict):
        base = out["baseline"] = dict(out["baseline"])
        timing |= {f"baseline.{key}": base.pop(key) for key in WALL_CLOCK if key in base}
    return out, {k: float(v) for k, v in timing.items() if math.isfinite(v)}


def _units(cls: type, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for f in fields(cls):
        if f.type in ("Latency", Latency):
            out.update(_units(Latency, f"{prefix}{f.name}."))
        elif "unit" in f.metadata and f.metadata["unit"]:
            out[f"{prefix}{f.name}"] = f.metadata["unit"]
    return out


PLANNING_UNITS = {
    "gpus": "GPUs",
    "annual_energy_mwh": "MWh",
    "facility_power_avg_kw": "kW",
    "facility_power_peak_kw": "kW",
    "annual_co2e_t": "t",
    "annual_cost": "currency",
    "gpu_utilization": "share",
}
CAPACITY_UNITS = {
    "capacity.replicas": "replicas",
    "capacity.baseline_replicas": "replicas",
    "capacity.gpus_saved": "GPUs",
    "capacity.gpus": "GPUs",
}
BANDED: dict[str, str] = {
    "energy_j": "energy_j",
    "energy_per_output_token_j": "energy_per_output_token_j",
    "output_tokens_per_j": "output_tokens_per_j",
    "ttft_p99_s": "ttft_s.p99",
    "tpot_p99_s": "tpot_s.p99",
    "slo_attainment": "slo_attainment",
    "energy_savings_pct": "energy_savings_pct",
    "capacity_replicas": "capacity.replicas",
    "capacity_gpus": "capacity.gpus",
}
"""The figures `sim.planning.uncertainty` bands: name in summary.json's `bands` → the summary key."""
SIGNIFICANT = ("energy_savings_pct",)
"""Bands that say whether they exclude zero."""


def _band_units(units: dict[str, str]) -> dict[str, str]:
    """The `bands` section's numeric keys (`sim.planning.uncertainty.bands`) with the units of the figures
    they band."""
    out = {"bands.level": "share", "bands.spanned": "share", "bands.samples": "replays"}
    for name, key in BANDED.items():
        out |= {f"bands.{name}.{end}": units[key] for end in ("low", "high", "median")}
        if name in SIGNIFICANT:
            out[f"bands.{name}.significant"] = "bool"
    return out


_FIGURES: dict[str, str] = {
    **_units(RunSummary),
    **{f"baseline.{k}": u for k, u in _units(RunSummary).items()},
    **PLANNING_UNITS,
    **CAPACITY_UNITS,
    **_units(Summary),
}
METRICS: dict[str, str] = {**_FIGURES, **_band_units(_FIGURES)}
"""Every numeric summary key (dotted, as MLflow metrics are named) → its unit."""


def unit(key: str) -> str:
    """The unit of a summary key; KeyError naming the known keys when there is no such key."""
    if key not in METRICS:
        raise KeyError(f"{key!r} is not a summary metric; known: {', '.join(sorted(METRICS))}")
    return METRICS[key]
