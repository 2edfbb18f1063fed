"""Datacenter planning figures from a simulated run: annual energy, facility power, CO2, cost.

A run's GPU (IT) energy over its makespan is annualised as if the workload repeated all year,
then scaled by the facility's PUE (cooling, power conversion) to get what the site draws from the
grid. Constants come from `PlanningConfig`; every default cites its source below.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from sim.schema import ConfigError

KWH_PER_MWH = 1000.0
G_PER_T = 1e6


class PlanningConfigError(ConfigError):
    """A planning constant that cannot work; the message names the key."""


@dataclass(frozen=True)
class PlanningConfig:
    """Facility and grid constants (units in the field names; `price_per_kwh` in `currency`).

    Defaults, with sources:
    - pue 1.56: Uptime Institute Global Data Center Survey 2024, average annual PUE of the
      respondents' largest sites (1.56). Hyperscale sites report ~1.1; choose yours.
    - carbon_g_per_kwh 366: US grid average 2023, EIA FAQ "How much carbon dioxide is produced per
      kilowatthour of U.S. electricity generation?" (1.53 bn t CO2 / 4.18 trillion kWh of
      utility-scale net generation = 0.81 lb/kWh). APPROXIMATION: CO2 at the stack only, not
      lifecycle CO2e, no transmission losses; use your grid's (or your PPA's) factor.
    - price_per_kwh 0.0806 USD: US average retail price to industrial customers 2023, EIA
      (8.06 ¢/kWh). APPROXIMATION: large sites buy at industrial rates; demand charges, taxes
      and contracts vary widely by state (EIA Electric Power Annual 2023: ~5.8 to 35 ¢/kWh).
    - hours_per_year 8760: 365 days of 24 h (the run's average power, all year round).
    """

    pue: float = 1.56
    carbon_g_per_kwh: float = 366.0
    price_per_kwh: float = 0.0806
    currency: str = "USD"
    hours_per_year: float = 8760.0

    def __post_init__(self) -> None:
        _check(
            math.isfinite(self.pue) and self.pue >= 1.0,
            "planning.pue",
            f"must be ≥ 1 (facility/IT energy), got {self.pue}",
        )
        for key in ("carbon_g_per_kwh", "price_per_kwh"):
            value = getattr(self, key)
            _check(
                math.isfinite(value) and value >= 0.0, f"planning.{key}", f"must be a finite number ≥ 0, got {value}"
            )
        _check(
            math.isfinite(self.hours_per_year) and self.hours_per_year > 0.0,
            "planning.hours_per_year",
            f"must be > 0, got {self.hours_per_year}",
        )
        _check(bool(self.currency.strip()), "planning.currency", "must be a non-empty name such as 'USD'")


@dataclass(frozen=True)
class PlanningFigures:
    """Facility figures of a workload run all year (the `summary.json` planning keys)."""

    gpus: int
    annual_energy_mwh: float
    facility_power_avg_kw: float
    facility_power_peak_kw: float
    annual_co2e_t: float
    annual_cost: float
    currency: str
    gpu_utilization: float

    def to_dict(self) -> dict[str, float | int | str]:
        """The figures as a flat dict (for summary.json)."""
        return asdict(self)


def planning_figures(
    energy_j: float,
    makespan_s: float,
    peak_power_w: float,
    gpus: int,
    busy_s: float,
    cfg: PlanningConfig,
) -> PlanningFigures:
    """Planning figures of a run.

    energy_j: GPU (IT) energy of the run, idle included (J); makespan_s: its duration (s);
    peak_power_w: highest total GPU power over the run (W); gpus: GPUs serving; busy_s: GPU-seconds
    spent running steps, summed over the GPUs (utilisation = busy_s / (gpus · makespan_s)).
    Facility energy and power are IT × PUE; the year is `hours_per_year` of the run's average.
    """
    _check_inputs(energy_j, makespan_s, peak_power_w, gpus, busy_s)
    avg_it_w = energy_j / makespan_s
    annual_mwh = avg_it_w * cfg.pue * cfg.hours_per_year / 1000.0 / KWH_PER_MWH
    return PlanningFigures(
        gpus=gpus,
        annual_energy_mwh=annual_mwh,
        facility_power_avg_kw=avg_it_w * cfg.pue / 1000.0,
        facility_power_peak_kw=peak_power_w * cfg.pue / 1000.0,
        annual_co2e_t=annual_mwh * KWH_PER_MWH * cfg.carbon_g_per_kwh / G_PER_T,
        annual_cost=annual_mwh * KWH_PER_MWH * cfg.price_per_kwh,
        currency=cfg.currency,
        gpu_utilization=busy_s / (gpus * makespan_s),
    )


def _check_inputs(energy_j: float, makespan_s: float, peak_power_w: float, gpus: int, busy_s: float) -> None:
    if not (math.isfinite(makespan_s) and makespan_s > 0):
        raise ValueError(f"makespan_s must be > 0 (s), got {makespan_s}")
    if gpus < 1:
        raise ValueError(f"gpus must be ≥ 1, got {gpus}")
    for name, value in (("energy_j", energy_j), ("peak_power_w", peak_power_w), ("busy_s", busy_s)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be finite and ≥ 0, got {value}")
    if busy_s > gpus * makespan_s * (1 + 1e-9):
        raise ValueError(f"busy_s ({busy_s}) exceeds gpus × makespan_s ({gpus * makespan_s})")


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise PlanningConfigError(f"{key} {message}")
