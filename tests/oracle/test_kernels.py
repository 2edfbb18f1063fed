"""oracle.kernels: the carry-over of LLMServingSim's measured kernels to a fused engine, the rows a
fit reads, and the prefill fit recovering known constants from them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from oracle import arch, hwcal, kernels
from oracle.derive import HardwareConstants


@pytest.fixture(scope="module")
def shipped() -> pd.DataFrame:
    return pd.read_csv(kernels.table())


def test_one_row_counted_by_hand(shipped):
    """Llama-3.1-8B TP 1 at 512 tokens: 32 layers of GEMMs and attention as measured, the LM head
    at 1 token, the embedding at 512, the fused elementwise kernels at 3.35 TB/s."""
    part = shipped[(shipped["model"] == "meta-llama/Llama-3.1-8B") & (shipped["tp"] == 1)]
    row = part[part["tokens"] == 512].iloc[0]
    gemms = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "attn"]
    measured_ns = 32 * sum(row[f"{c}_ns"] for c in gemms) + row["embedding_ns"]
    measured_ns += part.loc[part["tokens"] == 1, "lm_head_ns"].iloc[0]
    n, h, inter, bw = 512, 4096, 14336, 3.35e12
    norm = 2 * n * h * 2
    act = 2 * n * inter * 2 + n * inter * 2
    rope = 2 * n * (32 + 8) * 128 * 2
    elementwise_s = (32 * (2 * norm + act + rope) + norm) / bw
    got = kernels.carried(part).set_index("tokens").loc[512]
    assert got["measured_ms"] == pytest.approx(measured_ns / 1e6, rel=1e-12)
    assert got["elementwise_ms"] == pytest.approx(1e3 * elementwise_s, rel=1e-12)
    assert got["kernel_ms"] == pytest.approx(measured_ns / 1e6 + 1e3 * elementwise_s, rel=1e-12)


def test_the_lm_head_is_counted_at_one_token(shipped):
    part = shipped[(shipped["model"] == "meta-llama/Llama-3.1-70B") & (shipped["tp"] == 4)].copy()
    before = kernels.carried(part)["measured_ms"].to_numpy()
    bigger = part.assign(lm_head_ns=np.where(part["tokens"] == 1, part["lm_head_ns"], 10**12))
    assert np.array_equal(kernels.carried(bigger)["measured_ms"].to_numpy(), before)
    one = part.assign(lm_head_ns=np.where(part["tokens"] == 1, part["lm_head_ns"] + 10**6, part["lm_head_ns"]))
    assert np.allclose(kernels.carried(one)["measured_ms"].to_numpy(), before + 1.0)


def test_a_norm_is_its_bytes_at_the_datasheet_bandwidth():
    spec, gpu = arch.load_model("llama-3.1-70b"), arch.load_gpu("h100")
    assert gpu.memory_bandwidth == 3.35e12
    for layer in ("input_layernorm", "post_layernorm", "final_layernorm"):
        assert kernels.fused_bytes(layer, spec, 4, 1000) == 2 * 1000 * 8192 * 2  # read and write N·h bf16
        assert kernels.fused_ns(layer, spec, 4, 1000, gpu) == pytest.approx(1e9 * 4 * 1000 * 8192 / 3.35e12)
    # act_fn: gate and up read, the product written, I/tp wide; rope: q and k heads read and written
    assert kernels.fused_bytes("act_fn", spec, 4, 10) == 3 * 10 * (28672 / 4) * 2
    assert kernels.fused_bytes("rope", spec, 4, 10) == 2 * 10 * (64 / 4 + 8 / 4) * 128 * 2
    with pytest.raises(ValueError, match="no memory-bound estimate"):
        kernels.fused_bytes("q_proj", spec, 1, 10)


@pytest.fixture(scope="module")
def rows() -> kernels.KernelRows:
    return kernels.kernel_rows(arch.load_gpu("h100"))


def test_kernel_rows_are_the_replicas_that_fit(rows):
    """Every shipped (model, tp) but Llama-3.1-70B on one H100 (it does not fit), 23 steps each;
    a kernel row's model has no per-step or per-sequence overhead and no all-reduce."""
    assert [(m, tp) for m, tp, _ in rows.skipped] == [("meta-llama/Llama-3.1-70B", 1)]
    assert "does not fit" in rows.skipped[0][2]
    assert len(rows.frame) == len(rows.features) == len(rows.basis) == len(rows.roofline) == 4 * 23
    assert (rows.basis[:, list(kernels.KERNEL_ONLY)] == 0).all()
    assert (rows.roofline[:, 2:] == 0).all()  # dense models: no routed experts
    assert np.array_equal(rows.features[:, 4], rows.frame["tokens"].to_numpy(float))


def constants(**changes: float | bool) -> HardwareConstants:
    base = HardwareConstants(1.0, 1.15, 0.0, 0.0, 500.0, 0.0, 0.0, layer_overhead_s=40e-6)
    return replace(base, **changes)


def test_a_prefill_step_hides_the_shorter_of_its_weights_read_and_its_gemms(rows):
    """The kernel time of a step is its linear time less min(weights' read, tokens × a token's
    GEMMs): weights-bound below the knee, GEMM-bound above it."""
    k = constants(inv_eff_prefill=1.3, prefill_overlap=True)
    linear = hwcal.kernel_time_s(rows, replace(k, prefill_overlap=False))
    weights_s, token_s = 1.15 * rows.roofline[:, 0], 1.3 * rows.roofline[:, 1]
    n = rows.features[:, 4]
    np.testing.assert_allclose(hwcal.kernel_time_s(rows, k), linear - np.minimum(weights_s, token_s * n), rtol=1e-12)
    knee = weights_s / token_s
    assert (knee > 100).all() and (knee < 1000).all()  # a dense bf16 model on H100s: some hundreds of tokens


def test_a_prefill_fit_recovers_known_constants_from_synthetic_kernels(rows):
    """Kernel times made from known constants (overlap, prompt GEMMs and attention apart) give
    those constants back, the knees found by refitting."""
    truth = constants(layer_overhead_s=40e-6, inv_eff_attention=3.0, inv_eff_prefill=1.35, prefill_overlap=True)
    synthetic = replace(rows, frame=rows.frame.assign(kernel_ms=1e3 * hwcal.kernel_time_s(rows, truth)))
    t = dict(
        zip(hwcal.TIME_TERMS, hwcal.fit_time(hwcal.TimeRows.of_kernels(synthetic), held={"inv_c": 1.0}), strict=True)
    )
    assert t["inv_m"] == pytest.approx(1.15, rel=1e-6)
    assert t["t_layer"] == pytest.approx(40e-6, rel=1e-6)
    assert t["inv_attn"] == pytest.approx(3.0, rel=1e-6)
    assert t["inv_p"] == pytest.approx(1.35, rel=1e-6)


def test_a_kernel_row_s_weight_pulls_the_fit_toward_it(rows):
    """Kernels made with a slower prompt GEMM than the ML.ENERGY-like rows beside them: the more a
    kernel row weighs, the nearer the fitted fraction is to the kernels'."""
    slow = constants(inv_eff_prefill=1.6, prefill_overlap=True)
    fast = constants(inv_eff_prefill=1.1, prefill_overlap=True)
    made = replace(rows, frame=rows.frame.assign(kernel_ms=1e3 * hwcal.kernel_time_s(rows, slow)))
    other = replace(rows, frame=rows.frame.assign(kernel_ms=1e3 * hwcal.kernel_time_s(rows, fast)), weight=1.0)
    fitted = []
    for w in (0.25, 1.0, 4.0):
        both = hwcal.TimeRows.concat(
            hwcal.TimeRows.of_kernels(other), hwcal.TimeRows.of_kernels(replace(made, weight=w))
        )
        fitted.append(hwcal.fit_time(both, held={"inv_c": 1.0, "inv_m": 1.15, "t_layer": 40e-6, "inv_attn": 1.0})[9])
    assert 1.1 < fitted[0] < fitted[1] < fitted[2] < 1.6


def test_the_weight_kept_has_the_least_held_out_time_error():
    table = pd.DataFrame(
        {
            "kernel_weight": [0.0, 0.5, 1.0],
            "kernels_held_out_mae_pct": [25.0, 5.0, 4.0],
            "mlenergy_held_out_time_mae_pct": [10.0, 11.0, 12.5],
        }
    )
    assert hwcal.kernel_weight(table) == 0.5


@pytest.mark.slow  # the H100 calibration with every weight tried and each model held out (~15 s)
def test_the_h100_calibration_fits_the_kernels_and_reports_them():
    """The shipped H100 constants: prompt GEMMs below the datasheet peak, the overlap on, and the
    calibration's kernel rows within the issue's 10 % at 128-2,048 tokens for Llama-3.1-8B on one
    GPU with it left out of the fit."""
    from oracle.build import shipped_constants

    k, _ = shipped_constants(arch.load_gpu("h100"))
    assert k.prefill_overlap and k.prefill > 1.0
    gpu = arch.load_gpu("h100")
    cal = hwcal.calibrate(gpu, "H100", kernels=kernels.kernel_rows(gpu))
    assert cal.constants.prefill == pytest.approx(k.prefill, rel=1e-9)
    assert cal.kernel_weight > 0 and cal.kernels is not None and cal.prefill_sensitivity is not None
    part = cal.kernels[(cal.kernels["model"] == "meta-llama/Llama-3.1-8B") & (cal.kernels["tp"] == 1)]
    part = part[part["tokens"] >= 128]
    assert (100 * (part["held_out_ms"] / part["kernel_ms"] - 1)).abs().mean() <= 10.0
