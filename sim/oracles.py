"""The run's oracles as configured: loaded by shipped name or path, then set to the configured SM
clock, power cap and clock policy (`gpu`); every failure names the config key.

Used by `sim.app.prepare` for the top-level oracle and each fleet pool's own.
"""

from __future__ import annotations

from dataclasses import replace

from oracle.clocks import ClockError, at_clock, clock_spec_of
from oracle.model import Oracle, OracleFormatError
from sim.config import GpuConfig
from sim.schema import ConfigError


def load_oracle(name_or_path: str, key: str = "oracle") -> Oracle:
    """An oracle by shipped name or path; errors name the config key."""
    try:
        return Oracle.load(name_or_path)
    except (FileNotFoundError, OracleFormatError) as e:
        raise ConfigError(f"{key}: {e}") from e


def clocked_oracle(name_or_path: str, gpu: GpuConfig, key: str = "oracle", tpot_s: float = 0.1) -> Oracle:
    """`load_oracle`, then the SM clock `gpu.clock_mhz` (`oracle.clocks`), the power cap
    `gpu.power_limit_w` and, with `gpu.clock_policy=slo`, the controller's step budget
    (`gpu.slo_headroom` × `tpot_s`, s) applied; a clock the oracle's GPU does not support, a cap
    below its idle power or above its board limit, or a controller on a GPU without clock
    parameters, fails naming the key."""
    oracle = load_oracle(name_or_path, key)
    try:
        oracle = at_clock(oracle, gpu.clock_mhz)
    except ClockError as e:
        raise ConfigError(f"gpu.clock_mhz ({key} {oracle.name!r}): {e}") from e
    if gpu.clock_policy == "slo":
        try:
            spec = clock_spec_of(oracle)
        except ClockError as e:
            raise ConfigError(f"gpu.clock_policy=slo ({key} {oracle.name!r}): {e}") from e
        budget = gpu.slo_headroom * tpot_s
        switch = spec.switch_latency_s if gpu.clock_switch_s is None else gpu.clock_switch_s
        oracle = replace(oracle, settings={**oracle.settings, "step_budget_s": budget, "clock_switch_s": switch})
    cap = gpu.power_limit_w
    if cap is None:
        return oracle
    g = oracle.gpus  # the cap is per GPU; the oracle's idle power and limit are its replica's
    board = None if oracle.power_limit_w is None else oracle.power_limit_w / g
    idle = oracle.idle_power_w / g
    if cap < idle or (board is not None and cap > board):
        bounds = f"{idle:g} W (its idle power)" + ("" if board is None else f" to {board:g} W (its board limit)")
        raise ConfigError(f"gpu.power_limit_w ({key} {oracle.name!r}): {cap:g} W per GPU is outside {bounds}")
    return replace(oracle, power_limit_w=float(cap) * g)
