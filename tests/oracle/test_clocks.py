"""A locked SM clock as a transform of an oracle's coefficients: monotonicity, identity at the maximum
clock, the published DVFS targets (decode saves energy for little time, prefill slows with the clock),
the clock tables, and the `gpu.clock_mhz` setting end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oracle import features as F
from oracle.arch import gpu_names
from oracle.clock_specs import CLOCK_SPECS
from oracle.clocks import ClockError, ClockSpec, at_clock, clock_spec, coefficients_at, ladder
from oracle.model import Oracle, shipped_oracles, with_reads
from tests import subprocess_env

ROOT = Path(__file__).resolve().parents[2]
H100 = Oracle.load("llama-3.1-8b_h100")
SPEC = clock_spec(H100.gpu)
DECODE_64 = F.step_features(decode_seqs=64, decode_ctx=64 * 1280)  # 64 sequences at 1,024 + 256 tokens
PREFILL = F.step_features(prefill_seqs=8, prefill_tokens=8 * 1024, prefill_attn=8 * F.attn_pairs(1024))

coef = st.lists(st.floats(0.0, 1.0), min_size=F.N_FEATURES, max_size=F.N_FEATURES).map(np.array)
steps = st.lists(st.floats(0.0, 1e5), min_size=F.N_FEATURES, max_size=F.N_FEATURES).map(np.array)


def clock_pair(spec: ClockSpec) -> st.SearchStrategy[tuple[int, int]]:
    """Two supported clocks, lower first."""
    clocks = st.sampled_from(spec.supported_mhz.tolist())
    return st.tuples(clocks, clocks).map(sorted).map(tuple)  # type: ignore[arg-type]


def time_and_energy(t: np.ndarray, e: np.ndarray, idle: float, f: int, x: np.ndarray) -> tuple[float, float]:
    ct, ce = coefficients_at(t, e, idle, SPEC, f)
    return float(x @ ct), float(x @ ce)


@settings(max_examples=300, deadline=None)
@given(t=coef, extra=coef, x=steps, idle=st.floats(0.0, 200.0, allow_subnormal=False), pair=clock_pair(SPEC))
def test_step_time_never_rises_and_power_never_falls_with_the_clock(t, extra, x, idle, pair):
    """For coefficients drawing at least idle power (below it, see `oracle.clocks`)."""
    t = t + 1e-6  # an oracle's step takes time
    e = t * idle + extra
    lo, hi = pair
    (t_lo, e_lo), (t_hi, e_hi) = (time_and_energy(t, e, idle, f, x) for f in (lo, hi))
    assert t_lo >= t_hi * (1 - 1e-12)
    if t_hi > 0:
        assert e_lo / t_lo <= e_hi / t_hi * (1 + 1e-9)


@pytest.mark.parametrize("name", shipped_oracles())
def test_every_shipped_oracle_slows_and_draws_less_power_as_its_clock_falls(name):
    oracle = Oracle.load(name)
    spec = clock_spec(oracle.gpu)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (200, F.N_FEATURES)) * [1, 256, 256 * 8192, 64, 8192, 8192**2 / 2]
    x[:, F.CONST] = 1
    times, powers = [], []
    for f in spec.supported_mhz[::4]:
        clocked = at_clock(oracle, int(f))
        times.append(clocked.step_time(x))
        powers.append(clocked.step_energy(x) / times[-1])
    assert np.all(np.diff(times, axis=0) <= 0) and np.all(np.diff(powers, axis=0) >= -1e-9)


@pytest.mark.parametrize("name", shipped_oracles())
def test_at_the_maximum_clock_every_shipped_oracle_is_unchanged(name):
    oracle = Oracle.load(name)
    spec = clock_spec(oracle.gpu)
    assert at_clock(oracle, spec.max_mhz) is oracle and at_clock(oracle, None) is oracle
    t, e = coefficients_at(oracle.time_coef_s, oracle.energy_coef_j, oracle.idle_power_w, spec, spec.max_mhz)
    assert np.array_equal(t, oracle.time_coef_s) and np.array_equal(e, oracle.energy_coef_j)


def test_below_the_maximum_the_oracle_records_its_clock_and_keeps_the_rest():
    slow = at_clock(H100, 990)
    assert slow.settings["clock_mhz"] == 990 and slow.idle_power_w == H100.idle_power_w
    assert slow.step_time(DECODE_64) > H100.step_time(DECODE_64)


def energy_per_token(f: int) -> float:
    return float(at_clock(H100, f).step_energy(DECODE_64)) / 64


def test_energy_per_decode_token_is_u_shaped_with_its_minimum_inside_the_clock_range():
    clocks = SPEC.supported_mhz
    energies = np.array([energy_per_token(int(f)) for f in clocks])
    best = int(np.argmin(energies))
    assert 0 < best < len(clocks) - 1, f"minimum at {clocks[best]} MHz"
    assert energies[0] > energies[best] and energies[-1] > energies[best]


def test_half_clock_decode_saves_energy_for_a_small_slowdown():
    """The model's figures at 990 of 1980 MHz (batch-64 decode, context 1,280): about −42 % energy per
    token for +14 % step time with the constants calibrated on every ML.ENERGY run (+10 % with the
    former three-model ones: the per-sequence overhead, half compute-bound, now carries more of a
    decode step); Maliakel et al. (arXiv 2501.08219) report −42 % for +1-6 %. So the saving is at
    the published figure and the slowdown above it."""
    slow, fast = at_clock(H100, 990), H100
    saving = 1 - slow.step_energy(DECODE_64) / fast.step_energy(DECODE_64)
    slowdown = slow.step_time(DECODE_64) / fast.step_time(DECODE_64) - 1
    assert 0.15 <= saving <= 0.45
    assert 0 < slowdown < 0.15


@pytest.mark.xfail(
    strict=True,
    reason="the model's ASSUMED clock parameters give a slowdown above 10 % at 990 MHz (README block half_clock); "
    "measured grid=dvfs runs fitted by calibrate.fit would settle it",
)
def test_issue_target_half_clock_decode_saves_15_to_40_pct_for_under_10_pct_time():
    saving = 1 - at_clock(H100, 990).step_energy(DECODE_64) / H100.step_energy(DECODE_64)
    slowdown = at_clock(H100, 990).step_time(DECODE_64) / H100.step_time(DECODE_64) - 1
    assert 0.15 <= saving <= 0.40 and slowdown < 0.10


@pytest.mark.parametrize("f", [495, 990, 1485])
def test_a_prefill_step_slows_nearly_in_proportion_to_the_clock(f):
    ratio = at_clock(H100, f).step_time(PREFILL) / H100.step_time(PREFILL)
    assert 0.95 * SPEC.max_mhz / f <= ratio <= SPEC.max_mhz / f


def test_every_gpu_has_a_clock_table_and_every_shipped_oracle_finds_its_own():
    assert set(CLOCK_SPECS) == set(gpu_names())
    for name in shipped_oracles():
        gpu = name.split("_")[1].removesuffix("80gb")
        assert clock_spec(Oracle.load(name).gpu).gpu == gpu


@pytest.mark.parametrize("clock", [2000, 344, 1000, 990.5])
def test_an_unsupported_clock_names_the_range_and_step(clock):
    with pytest.raises(ClockError, match=r"not a supported SM clock of h100 \(345-1980 MHz in steps of 15 MHz\)"):
        at_clock(H100, clock)


def test_a_gpu_without_clock_parameters_is_refused_by_name():
    with pytest.raises(ClockError, match="no clock parameters for GPU 'Tesla K80'"):
        clock_spec("Tesla K80")


def test_bad_clock_parameters_fail_naming_the_gpu_and_the_field():
    with pytest.raises(ValueError, match="'x': step_mhz 7 must be positive and divide"):
        ClockSpec("x", 100, 200, 7, 150, 0.7, 0.7, 0.01)


def sim(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = subprocess_env()
    base = ("trace=synthetic", "trace.num_requests=40", "tracking.enabled=false", "plots=false", "progress=false")
    return subprocess.run([sys.executable, "-m", "sim", *base, *args], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def summary(tmp: Path, *args: str) -> dict:
    out = tmp / "out"
    done = sim(tmp, f"output_dir={out}", *args)
    assert done.returncode == 0, done.stderr
    data = json.loads((out / "summary.json").read_text())
    return data


@pytest.mark.slow  # several seconds: CI runs it, the quick set does not
def test_python_m_sim_at_the_maximum_clock_matches_the_default_and_a_lower_clock_saves_energy(tmp_path):
    runs = {}
    for name, clock in (("default", None), ("max", 1980), ("half", 990)):
        (tmp_path / name).mkdir()
        runs[name] = summary(tmp_path / name, *(() if clock is None else (f"gpu.clock_mhz={clock}",)))
    assert runs["max"] == runs["default"]
    assert runs["half"]["energy_j"] < runs["default"]["energy_j"]


def test_python_m_sim_refuses_an_unsupported_clock_in_one_line(tmp_path):
    done = sim(tmp_path, f"output_dir={tmp_path / 'out'}", "gpu.clock_mhz=1000")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "gpu.clock_mhz (oracle 'llama-3.1-8b_h100'): 1000 MHz is not a supported SM clock of h100" in done.stderr


# --- the clock ladder a power cap throttles to (oracle.clocks.ladder) ---------------------------


@pytest.mark.parametrize("name", shipped_oracles())
def test_the_ladder_starts_at_the_oracle_and_inverts_a_locked_clock(name):
    """Level 0 is the oracle's own coefficients; from a locked clock the ladder is the maximum
    clock's ladder from that clock down (`coefficients_at_max` inverts `coefficients_at`)."""
    o = Oracle.load(name)
    clocks, t, e = ladder(o)
    own_t, own_e = with_reads(o.time_coef_s, o.energy_coef_j, o.experts, o.overlap)
    assert np.array_equal(t[0], own_t) and np.array_equal(e[0], own_e)
    assert (np.diff(clocks) < 0).all() and clocks[-1] == clock_spec(o.gpu).min_mhz
    f = clocks[len(clocks) // 2]
    low_clocks, low_t, low_e = ladder(at_clock(o, f))
    k = len(clocks) // 2
    assert np.array_equal(low_clocks, clocks[k:])
    assert np.allclose(low_t, t[k:], rtol=1e-12) and np.allclose(low_e, e[k:], rtol=1e-12)
