"""Measured configurations refined on their own runs (`oracle.refine`), on the shipped runs."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oracle import arch, hwcal, refine
from oracle.build import oracle_for, shipped_constants
from oracle.derive import HardwareConstants
from oracle.model import FAMILY_KEY, Oracle, shipped_oracles

H100 = arch.load_gpu("h100")
CONFIG = "llama-3.1-70b_h100_tp4"  # a measured configuration: 12 LM Arena runs on 4 H100s


@pytest.fixture(scope="module")
def family() -> HardwareConstants:
    return shipped_constants(H100)[0]


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    rows = hwcal.measured_rows("H100", None, None)
    config = refine.configurations(rows, H100)
    return rows[config == CONFIG].reset_index(drop=True)


def _with_targets(rows: pd.DataFrame, k: HardwareConstants) -> pd.DataFrame:
    """`rows` whose measured time, median ITL and energy are what constants `k` predict."""
    return rows.assign(
        time_per_token_s=hwcal.predicted_time_s(rows, H100, k, hwcal.X_COLUMNS),
        itl_median_s=hwcal.predicted_time_s(rows, H100, k, hwcal.M_COLUMNS),
        energy_per_token_joules=hwcal.predicted_energy_j(rows, H100, k),
    )


def test_configurations_name_each_run_by_its_oracle(runs):
    assert len(runs) == 12 and CONFIG in shipped_oracles()
    rows = hwcal.measured_rows("H100", None, None)
    names = set(refine.configurations(rows, H100))
    assert "gpt-oss-120b_h100_tp2" in names  # gpt-oss was served tensor parallel, experts split on both GPUs
    assert "qwen3-235b-a22b-fp8_h100_ep4" in names


def test_unit_multipliers_are_the_family(family):
    assert refine.scaled(family, 1.0, 1.0, 1.0, 1.0) == family


@settings(max_examples=25, deadline=None)
@given(
    work=st.floats(1.0, 3.0),
    sequence=st.floats(1 / 3, 3.0),
    step=st.floats(1 / 3, 3.0),
    comm=st.floats(1 / 3, 3.0),
    mamba=st.floats(1 / 3, 3.0),
)
def test_a_multiplier_scales_its_group_of_time_exactly(family, runs, work, sequence, step, comm, mamba):
    """The prefill knee is a ratio of work terms, so scaling them keeps it: a run's time is linear
    in the multipliers, which is what lets `refine` fit them by least squares."""
    groups = refine._group_times(runs, H100, family)
    scaled = refine.scaled(family, work, sequence, step, comm, mamba)
    t = hwcal.predicted_time_s(runs, H100, scaled, hwcal.X_COLUMNS)
    itl = hwcal.predicted_time_s(runs, H100, scaled, hwcal.M_COLUMNS)
    np.testing.assert_allclose(np.concatenate([t, itl]), groups @ [work, sequence, step, comm, mamba], rtol=1e-9)


def test_refine_recovers_the_constants_that_made_its_targets(family, runs):
    truth = dataclasses.replace(
        refine.scaled(family, 1.2, 0.8, 1.4, 1.5),
        static_power_w=430.0,
        comm_power_w=60.0,
        energy_per_flop_j=0.3e-12,
        energy_per_byte_j=5e-12,
    )
    refined, scales = refine.refine(_with_targets(runs, truth), H100, family)
    assert scales == pytest.approx({"work": 1.2, "sequence": 0.8, "step": 1.4, "comm": 1.5, "mamba": 1.0}, rel=1e-4)
    e = hwcal.predicted_energy_j(runs, H100, refined)
    np.testing.assert_allclose(e, hwcal.predicted_energy_j(runs, H100, truth), rtol=1e-4)
    assert "refined on this configuration's 12 runs" in refined.source


def _refit_on(
    configuration: str, truth: HardwareConstants, family: HardwareConstants
) -> tuple[HardwareConstants, dict[str, float]]:
    """One measured H100 configuration's rows, given the targets `truth` makes, refined from
    `family`: (refined constants, multipliers), after checking that the refined constants give the
    rows the energy `truth` does."""
    rows = hwcal.measured_rows("H100", None, None)
    mine = rows[refine.configurations(rows, H100) == configuration].reset_index(drop=True)
    refined, scales = refine.refine(_with_targets(mine, truth), H100, family)
    e = hwcal.predicted_energy_j(mine, H100, refined)
    np.testing.assert_allclose(e, hwcal.predicted_energy_j(mine, H100, truth), rtol=1e-4)
    return refined, scales


def test_refine_recovers_the_power_of_dequantising_fp8_experts(family):
    """A configuration of block-scaled fp8 experts (Qwen3-235B-A22B-FP8 on 8 H100s) refits the
    power its GPUs draw while dequantising them, beside static, all-reduce, FLOP and byte terms."""
    truth = dataclasses.replace(
        refine.scaled(family, 1.1, 0.9, 1.2, 1.3),
        static_power_w=420.0,
        comm_power_w=50.0,
        fp8_expert_power_w=300.0,
        energy_per_flop_j=0.3e-12,
        energy_per_byte_j=5e-12,
    )
    refined, _ = _refit_on("qwen3-235b-a22b-fp8_h100_ep8", truth, family)
    assert refined.fp8_expert_power_w == pytest.approx(300.0, rel=1e-3)


def test_refine_recovers_a_hybrids_mamba_prefill_time_and_power(family):
    """A hybrid Mamba-Transformer (Nemotron-Nano-9B-v2 on one H100) refits its Mamba prefill time
    apart from its per-sequence overhead, and the power its GPU draws while its Mamba layers work."""
    truth = dataclasses.replace(
        refine.scaled(family, 1.1, 0.8, 1.2, 1.0, 1.5),
        static_power_w=380.0,
        mamba_power_w=450.0,
        energy_per_flop_j=0.4e-12,
        energy_per_byte_j=2e-12,
    )
    refined, scales = _refit_on("nemotron-nano-9b-v2_h100", truth, family)
    assert scales["sequence"] == pytest.approx(0.8, rel=1e-3) and scales["mamba"] == pytest.approx(1.5, rel=1e-3)
    assert refined.mamba_prefill_s == pytest.approx(1.5 * family.mamba_prefill_s, rel=1e-3)
    assert refined.seq_overhead_s == pytest.approx(0.8 * family.seq_overhead_s, rel=1e-3)
    assert refined.mamba_power_w == pytest.approx(450.0, rel=1e-3)


def test_multipliers_stay_in_bounds_and_no_fraction_of_peak_above_one(family, runs):
    """Targets 10× slower than any multiplier reaches: the multipliers stop at their bounds; a
    work multiplier below 1 would put the family's full-bandwidth H100 above its datasheet."""
    slow = runs.assign(time_per_token_s=runs.time_per_token_s * 10, itl_median_s=runs.itl_median_s * 10)
    _, scales = refine.refine(slow, H100, family)
    assert all(refine.BOUNDS[0] - 1e-9 <= v <= refine.BOUNDS[1] + 1e-9 for v in scales.values())
    fast = runs.assign(time_per_token_s=runs.time_per_token_s / 10, itl_median_s=runs.itl_median_s / 10)
    k, scales = refine.refine(fast, H100, family)
    assert min(k.inv_eff_compute, k.inv_eff_memory, k.attention, k.prefill) >= 1.0 - 1e-9
    assert scales["sequence"] == pytest.approx(refine.BOUNDS[0], rel=1e-6)


def test_every_energy_term_stays_within_the_power_limit(family, runs):
    """Energy 10× what the runs measured: no term of the fit draws more than the limit."""
    k, _ = refine.refine(runs.assign(energy_per_token_joules=runs.energy_per_token_joules * 10), H100, family)
    head = H100.power_limit_w - H100.idle_power_w
    assert k.static_power_w <= H100.power_limit_w + 1e-6
    assert k.comm_power_w is not None and k.comm_power_w <= head + 1e-6
    assert k.energy_per_flop_j * H100.peak_flops / k.inv_eff_compute <= head * (1 + 1e-6)
    assert k.energy_per_byte_j * H100.memory_bandwidth / k.inv_eff_memory <= head * (1 + 1e-6)


def test_refine_all_refines_configurations_of_enough_runs_and_checks_them(family):
    rows = hwcal.measured_rows("H100", None, None)
    config = refine.configurations(rows, H100)
    counts = config.value_counts()
    assert counts["gpt-oss-120b_h100"] == refine.MIN_RUNS and counts["gemma-3-27b_h100"] == refine.MIN_RUNS - 1
    part = rows[config.isin([CONFIG, "gpt-oss-120b_h100", "gemma-3-27b_h100"])].reset_index(drop=True)
    r = refine.refine_all(part, H100, family)
    assert set(r.constants) == {CONFIG, "gpt-oss-120b_h100"}  # gemma on one GPU: too few runs
    checks = r.checks.set_index("configuration")
    assert checks["held_out_energy_mae_pct"].notna().all()  # each refined one checked with a run left out
    row = checks.loc[CONFIG]
    assert row["refined_energy_mae_pct"] < row["family_energy_mae_pct"]
    assert row["refined_energy_mae_pct"] <= row["held_out_energy_mae_pct"]


def test_shipped_refined_oracles_record_the_family_and_oracle_for_can_skip_them(family):
    """A measured configuration's shipped oracle is refined and says so; every GPU's family
    constants read the same from any of its oracles; `family=True` derives the configuration as
    if nobody had measured it."""
    refined = Oracle.load(CONFIG)
    assert HardwareConstants(**refined.provenance[FAMILY_KEY]) == family
    assert HardwareConstants(**refined.provenance["constants"]) != family
    assert HardwareConstants(**Oracle.load("llama-3.1-70b_h100_tp2").provenance["constants"]) == family
    assert FAMILY_KEY not in Oracle.load("llama-3.1-70b_h200_tp4").provenance  # only the measured GPU's
    derived = oracle_for("meta-llama/Llama-3.1-70B-Instruct", "H100", 4, family=True)
    assert HardwareConstants(**derived.provenance["constants"]) == family
    assert oracle_for("meta-llama/Llama-3.1-70B-Instruct", "H100", 4).provenance == refined.provenance
    for name in shipped_oracles():
        k = HardwareConstants(**Oracle.load(name).provenance["constants"])
        assert min(k.inv_eff_compute, k.inv_eff_memory, k.attention, k.prefill) >= 1.0 - 1e-9, name


def test_layout_transfer_refines_a_model_on_its_other_layouts(family):
    rows = hwcal.measured_rows("H100", None, None)
    config = refine.configurations(rows, H100)
    qwen = rows[config.str.startswith("qwen3-30b-a3b_h100")].reset_index(drop=True)
    table = refine.layout_transfer(qwen, H100, family).set_index("configuration")
    assert table["refined_on"].to_dict() == {
        "qwen3-30b-a3b_h100": "qwen3-30b-a3b_h100_ep2",
        "qwen3-30b-a3b_h100_ep2": "qwen3-30b-a3b_h100",
    }
    assert table.loc["qwen3-30b-a3b_h100", "runs"] == 7
    assert (table[["family_energy_mae_pct", "carried_energy_mae_pct"]] > 0).all().all()
