"""A power cap as the hardware applies it: a step over the cap runs at the highest SM clock whose
power fits (`StepCosts.step`, `sim.kernel.costs`), requests' charges still add up to the steps'
energy, and `gpu.power_limit_w` sets the cap."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import traces
from oracle.clocks import ladder
from oracle.model import Oracle
from sim.config import GpuConfig, ServerConfig
from sim.engine.costs import StepCosts
from sim.kernel import costs as kernel_costs
from sim.kernel import linear
from sim.oracles import clocked_oracle
from sim.schema import ConfigError
from sim.serving.run import simulate
from sim.serving.run_warnings import ClockBudgetWarning

H100 = "llama-3.1-8b_h100"
ORACLES = ["llama-3.1-8b_h100", "qwen3-14b_b200", "mistral-7b_a100", "qwen3-32b_h200"]

steps = st.tuples(
    st.integers(0, 512),  # decode sequences
    st.integers(0, 2_000_000),  # their contexts in all (tokens)
    st.integers(0, 16),  # prefilling sequences
    st.integers(0, 16_384),  # prompt tokens
    st.integers(0, 2**31),  # attention pairs
)


def value(c: np.ndarray, x: tuple[int, ...]) -> float:
    """A dense step's time (s) or energy (J) from a ladder row: its linear part less what a prefill
    of x[3] prompt tokens hides of the weights' read."""
    hidden = min(c[linear.HIDE_WEIGHTS], c[linear.HIDE_TOKEN] * x[3])
    return float(c[:6] @ np.array([1, *x])) - hidden


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ORACLES), st.floats(0.0, 1.0), steps)
def test_a_capped_step_draws_at_most_the_cap_at_the_highest_clock_that_fits(name, where, x):
    """Unless even the lowest clock draws more, a step's power is at most the cap, and the next
    clock up (if any) would draw more; the compiled step is the reference's, bit for bit."""
    o = Oracle.load(name)
    cap = o.idle_power_w + where * (o.power_limit_w - o.idle_power_w)
    costs = StepCosts.from_oracle(dataclasses.replace(o, power_limit_w=cap))
    dt, de, extra, mhz = costs.step(*x)
    assert kernel_costs.step(costs.ladder_t, costs.ladder_e, cap, 0.0, *x) == (dt, de, extra, mhz)
    lt, le = costs.ladder_t, costs.ladder_e
    power = [value(le[k], x) / value(lt[k], x) for k in range(len(lt))]
    level = next((k for k, p in enumerate(power) if p <= cap), len(lt) - 1)
    assert math.isclose(dt, value(lt[level], x), rel_tol=1e-12)
    assert mhz == ladder(o)[0][level]  # the clock it runs at
    assert level == len(lt) - 1 or de <= cap * dt
    e0 = float(le[0][:6] @ np.array([1, *x]))  # the linear part, which the requests' own terms and c0 charge
    assert math.isclose(extra, (de - e0) / le[0, 0], rel_tol=1e-9, abs_tol=1e-9)


def stepwise(costs: StepCosts, batch: int, ctx_sum: int, n: int) -> tuple[float, float, float, float, float]:
    """The reference: n decode steps one by one (`StepCosts.step`), their time, energy, peak power,
    extra and clock time (MHz·s) summed."""
    dt = de = peak = extra = mhz_s = 0.0
    for i in range(n):
        t, e, x, mhz = costs.step(batch, ctx_sum + i * batch, 0, 0, 0)
        dt, de, extra, peak, mhz_s = dt + t, de + e, extra + x, max(peak, e / t), mhz_s + mhz * t
    return dt, de, peak, extra, mhz_s


@pytest.mark.slow  # several seconds: CI runs it, the quick set does not
@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(ORACLES), st.floats(0.0, 1.0), st.integers(1, 512), st.integers(0, 3_000_000), st.integers(1, 3000)
)
def test_a_capped_decode_span_is_its_steps_summed(name, where, batch, ctx_sum, n):
    """The closed form of a decode span under a cap (runs of one clock found by bisection) against
    its steps one by one; `steps_to_reach` is the first step boundary past a duration."""
    o = Oracle.load(name)
    cap = o.idle_power_w + where * (o.power_limit_w - o.idle_power_w)
    costs = StepCosts.from_oracle(dataclasses.replace(o, power_limit_w=cap))
    want = stepwise(costs, batch, ctx_sum, n)
    got = costs.decode(batch, ctx_sum, n)
    for a, b in zip(got, want, strict=True):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9 * n)
    assert got[4] <= got[0] * o.settings.get("clock_mhz", ladder(o)[0][0]) * (1 + 1e-12)  # never above its clock
    assert costs.span_s(batch, ctx_sum, n) == got[0]
    half = 0.5 * got[0]
    k = costs.steps_to_reach(batch, ctx_sum, half)
    assert costs.span_s(batch, ctx_sum, k) >= half and (k == 1 or costs.span_s(batch, ctx_sum, k - 1) < half)


def test_a_cap_above_every_step_changes_nothing(llama):
    """The ladder is read only for a step over the cap: a cap above every step's power gives the
    records and span logs of no cap at all, bit for bit."""
    azure = traces.load("azure_chat").iloc[:3000]
    free = simulate(azure, dataclasses.replace(llama, power_limit_w=None), ServerConfig())
    high = simulate(azure, dataclasses.replace(llama, power_limit_w=1e6), ServerConfig())
    assert free.requests.equals(high.requests)
    assert np.array_equal(free.servers[0].span_energy_j, high.servers[0].span_energy_j)


@pytest.mark.xfail(
    strict=True,
    reason="the shipped llama-3.1-8b_h100 is refined on its 11 measured runs (oracle.refine), which put more of "
    "its power on memory traffic and arithmetic than the H100 family's constants: a 450 W cap then costs "
    "over +10 % median TPOT (README block power_cap), above the published under-10 %",
)
def test_issue_target_a_450_w_cap_costs_decode_heavy_azure_chat_under_10_pct_median_tpot(llama):
    """700 → 450 W on azure_chat (Llama-3.1-8B / H100): median TPOT up by less than 10 %, energy
    down, and the slowest tokens (p99, behind long prefills, compute-bound) slowed far more."""
    azure = traces.load("azure_chat")
    runs = {}
    for cap in (700.0, 450.0):
        r = simulate(azure, dataclasses.replace(llama, power_limit_w=cap), ServerConfig())
        done = r.requests[r.requests["n_out"] > 1]
        tpot = (done["finish_s"] - done["first_token_s"]) / (done["n_out"] - 1)
        runs[cap] = (float(tpot.median()), float(tpot.quantile(0.99)), r.servers[0].active_energy_j)
    (m0, p0, e0), (m1, p1, e1) = runs[700.0], runs[450.0]
    assert 1.0 < m1 / m0 < 1.10 and e1 < e0 and p1 / p0 > m1 / m0


def test_gpu_power_limit_w_sets_the_cap_within_idle_and_the_board_limit():
    o = clocked_oracle(H100, GpuConfig(power_limit_w=450.0))
    assert o.power_limit_w == 450.0
    for bad in (50.0, 900.0):
        with pytest.raises(ConfigError, match=r"gpu.power_limit_w .*outside 75 W \(its idle power\) to 700 W"):
            clocked_oracle(H100, GpuConfig(power_limit_w=bad))
    with pytest.raises(ConfigError, match="gpu.power_limit_w"):
        GpuConfig(power_limit_w=-1.0)


def test_without_clock_parameters_a_capped_step_lasts_energy_over_the_cap(llama):
    """A GPU with no clock table (one ladder row) keeps the stretch: time = energy / cap."""
    base = StepCosts.from_oracle(dataclasses.replace(llama, power_limit_w=None))
    stretched = StepCosts(base.time_s, base.energy_j, base.idle_power_w, 700.0)
    assert len(stretched.ladder_t) == 1 and len(ladder(llama)[0]) > 1
    dt, de, extra, mhz = stretched.step(0, 0, 8, 8192, 8 * 1024 * 1025 // 2)
    assert dt == de / 700.0 and extra == 0.0 and mhz == 0.0  # (its clock unknown)


# --- the SLO-aware frequency controller (gpu.clock_policy=slo) -----------------------------------


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(ORACLES), st.floats(0.0, 1.0), st.floats(0.001, 0.2), steps)
def test_a_controlled_step_runs_at_the_lowest_clock_within_its_budget(name, where, budget, x):
    """Under a budget (s) a step runs at the lowest clock whose time fits it, never above the cap's
    clock; a step slower than the budget at full clock keeps the cap's clock; compiled and
    reference agree bit for bit."""
    o = Oracle.load(name)
    cap = o.idle_power_w + where * (o.power_limit_w - o.idle_power_w)
    costs = StepCosts.from_oracle(dataclasses.replace(o, power_limit_w=cap, settings={"step_budget_s": budget}))
    dt, de, extra, mhz = costs.step(*x, budget)
    assert kernel_costs.step(costs.ladder_t, costs.ladder_e, cap, budget, *x) == (dt, de, extra, mhz)
    capped_dt, _, _, capped_mhz = costs.step(*x)  # the cap's clock alone
    assert mhz <= capped_mhz
    lt = costs.ladder_t
    times = [value(lt[k], x) for k in range(len(lt))]
    level = int(np.argmin(np.abs(np.array(times) - dt)))
    assert dt >= capped_dt * (1 - 1e-12)
    assert dt <= max(budget, capped_dt) * (1 + 1e-12)
    assert level == len(lt) - 1 or times[level + 1] > budget or dt == capped_dt


@pytest.mark.slow  # several seconds: CI runs it, the quick set does not
@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(ORACLES), st.floats(0.3, 1.0), st.floats(0.005, 0.1), st.integers(1, 256), st.integers(0, 10**6),
    st.integers(1, 2000),
)  # fmt: skip
def test_a_controlled_decode_span_is_its_steps_summed(name, where, budget, batch, ctx_sum, n):
    o = Oracle.load(name)
    cap = o.idle_power_w + where * (o.power_limit_w - o.idle_power_w)
    costs = StepCosts.from_oracle(dataclasses.replace(o, power_limit_w=cap, settings={"step_budget_s": budget}))
    dt = de = extra = mhz_s = 0.0
    for i in range(n):
        t, e, x, mhz = costs.step(batch, ctx_sum + i * batch, 0, 0, 0, budget)
        dt, de, extra, mhz_s = dt + t, de + e, extra + x, mhz_s + mhz * t
    got = costs.decode(batch, ctx_sum, n, budget)
    assert math.isclose(got[0], dt, rel_tol=1e-9) and math.isclose(got[1], de, rel_tol=1e-9)
    assert math.isclose(got[4], mhz_s, rel_tol=1e-9)  # the clock time, segment by segment
    assert math.isclose(got[3], extra, rel_tol=1e-9, abs_tol=1e-9 * n)
    k = costs.steps_to_reach(batch, ctx_sum, 0.5 * got[0], budget)
    assert costs.span_s(batch, ctx_sum, k, budget) >= 0.5 * got[0]


@pytest.mark.slow  # several seconds: CI runs it, the quick set does not
def test_the_controller_runs_in_the_compiled_loops_as_in_the_python_loops(llama):
    """A server fed alone and a routed fleet, with the controller and a 450 W cap: the kernel's
    records and span logs are the Python loops', bit for bit (the controller's state lives in the
    loops' glue as well as in the rules)."""
    from sim.serving.fleet import Fleet
    from sim.serving.run import simulate_fleet
    from tests.sim.kernel.test_loop import assert_same, general_loop

    azure = traces.load("azure_chat").iloc[:3000]
    azure = azure.assign(arrival_s=azure["arrival_s"] / 4)
    missed = []
    for tpot_s, switch_s in ((0.1, None), (0.1, 0.0), (0.02, None), (0.02, 0.0)):  # 10 ms: below many decode steps
        gpu = GpuConfig(clock_policy="slo", power_limit_w=450.0, clock_switch_s=switch_s)  # held 20 ms, or free
        oracle = clocked_oracle(H100, gpu, tpot_s=tpot_s)
        for fleet in (Fleet.single(oracle, ServerConfig()), Fleet.single(oracle, ServerConfig(), 3, "least_tokens")):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ClockBudgetWarning)
                compiled = simulate_fleet(azure, fleet)
                with pytest.MonkeyPatch.context() as mp:
                    general_loop(mp)
                    reference = simulate_fleet(azure, fleet)
            assert_same(compiled, reference)  # the steps over the budget (missed_budget_steps) included
            missed.append(sum(s.missed_budget_steps for s in compiled.servers))
    assert missed[0] < missed[4] and missed[2] < missed[6]  # a tighter budget: more steps no clock meets


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(ORACLES),
    st.floats(0.001, 0.1),
    st.integers(1, 512),
    st.integers(0, 3_000_000),
    st.integers(1, 3000),
)
def test_missed_counts_the_decode_steps_slower_than_the_budget_at_full_clock(name, budget, batch, ctx_sum, n):
    """The closed form against the steps one by one: a step misses when even the full clock
    (ladder row 0) is slower than the budget."""
    costs = StepCosts.from_oracle(dataclasses.replace(Oracle.load(name), settings={"step_budget_s": budget}))
    times = np.array([value(costs.ladder_t[0], (batch, ctx_sum + i * batch, 0, 0, 0)) for i in range(n)])
    near = np.abs(times / budget - 1) < 1e-9  # a step at the budget to rounding: either way is right
    assert abs(costs.missed(batch, ctx_sum, n, budget) - int((times > budget).sum())) <= int(near.sum())
    assert costs.missed(batch, ctx_sum, n, 0.0) == 0  # no controller, no budget to miss


def test_a_run_whose_controller_budget_no_clock_meets_warns_once_and_counts_the_steps(llama):
    from sim.config import SloConfig
    from sim.results.metrics import run_summary

    azure = traces.load("azure_chat").iloc[:2000]
    slo = SloConfig(tpot_s=0.012)  # a 6 ms budget: below a decode step of any batch at full clock
    tight = clocked_oracle(H100, GpuConfig(clock_policy="slo"), tpot_s=slo.tpot_s)
    with pytest.warns(
        ClockBudgetWarning, match=r"decode steps \(.*%.*\) took longer than the clock controller's step budget \(6 ms"
    ):
        summary = run_summary(simulate(azure, tight, ServerConfig()), slo)
    assert 0 < summary.clock_budget_missed_steps <= summary.output_tokens  # a decode step emits ≥ 1 token
    with warnings.catch_warnings():
        warnings.simplefilter("error", ClockBudgetWarning)
        plain = run_summary(simulate(azure, clocked_oracle(H100, GpuConfig()), ServerConfig()), slo)
    assert plain.clock_budget_missed_steps == 0


def test_issue_target_the_controller_saves_energy_at_the_same_slo_attainment(llama):
    """azure_chat at 1.25× its rate (one server meets the SLO for 99.9 % of requests there, for
    about 83 % at 2× and 5 % at 3×): the SLO controller saves energy against the maximum clock, SLO
    attainment within 1 point."""
    from sim.config import SloConfig
    from sim.results.metrics import run_summary

    azure = traces.load("azure_chat")
    azure = azure.assign(arrival_s=azure["arrival_s"] / 1.25)
    slo = SloConfig()
    runs = [
        run_summary(
            simulate(azure, clocked_oracle(H100, GpuConfig(clock_policy=p), tpot_s=slo.tpot_s), ServerConfig()), slo
        )
        for p in ("static", "slo")
    ]
    static, controlled = runs
    assert controlled.energy_j < 0.9 * static.energy_j
    assert abs(controlled.slo_attainment - static.slo_attainment) <= 0.01


def test_a_bad_clock_policy_is_one_config_error():
    with pytest.raises(ConfigError, match="gpu.clock_policy"):
        GpuConfig(clock_policy="turbo")
    with pytest.raises(ConfigError, match="gpu.slo_headroom"):
        GpuConfig(clock_policy="slo", slo_headroom=0.0)


@pytest.mark.parametrize("switch_s", [0.02, 0.25])
def test_a_controller_with_a_switch_latency_changes_the_clock_at_most_once_per_latency(switch_s):
    """Without a cap, a span's clock is the controller's: from one clock change to the next, at
    least `gpu.clock_switch_s` passes (span starts, where it decides); switching freely it
    changes sooner than that."""
    azure = traces.load("azure_chat").iloc[:4000]
    azure = azure.assign(arrival_s=azure["arrival_s"] / 2)

    def changes(switch: float) -> np.ndarray:
        gpu = GpuConfig(clock_policy="slo", clock_switch_s=switch)
        stats = simulate(azure, dataclasses.replace(clocked_oracle(H100, gpu), power_limit_w=None), ServerConfig())
        s = stats.servers[0]
        clock = s.span_mhz_s / np.where(s.span_s > 0, s.span_s, 1.0)
        return s.span_start_s[1:][np.abs(np.diff(clock)) > 1e-6]

    held = changes(switch_s)
    assert held.size > 10 and np.diff(held).min() >= switch_s * (1 - 1e-12)
    assert np.diff(changes(0.0)).min() < switch_s


def test_a_bad_switch_latency_is_one_config_error():
    with pytest.raises(ConfigError, match="gpu.clock_switch_s"):
        GpuConfig(clock_policy="slo", clock_switch_s=-0.01)
