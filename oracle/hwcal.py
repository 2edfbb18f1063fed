"""Calibrate the hardware constants of `oracle.derive` on the ML.ENERGY steady-state measurements.

Each ML.ENERGY row is vLLM serving LM Arena chat prompts at one batch cap. In steady state the
average step decodes B sequences whose mean context is n_in + n_out/2, and prefills B/n_out
prompts (one request finishes and one starts every n_out/B steps). So the mean step's features are

    x = [1, B, B·(n_in + n_out/2), B/n_out, B·n_in/n_out, B·attn_pairs(n_in)/n_out]

with measured step time B / throughput (s) and step energy B · J per output token. The prompt
length n_in is not published; it is fitted by a one-dimensional search, shared by all rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np
import pandas as pd

from oracle import features as F
from oracle.arch import GpuSpec, find_model
from oracle.derive import HardwareConstants, feature_work, time_basis
from oracle.regress import mape_pct, relative_bounded_lsq

MLENERGY_FILE = "data/mlenergy_v3_lm_arena_chat.csv"
SOURCE = "ML.ENERGY Benchmark v3, LM Arena chat, vLLM bf16 (oracle/data/PROVENANCE.md)"


@dataclass(frozen=True)
class Calibration:
    """Constants fitted for one GPU, the fitted mean prompt length (tokens), and per-row errors."""

    constants: HardwareConstants
    prompt_tokens: float
    rows: pd.DataFrame

    def per_model(self) -> pd.DataFrame:
        """Mean absolute percentage errors per model across batch caps."""
        cols = ["energy_per_token_err_pct", "step_time_err_pct", "median_itl_err_pct"]
        return self.rows.assign(**{c: self.rows[c].abs() for c in cols}).groupby("model")[cols].mean()


def load_mlenergy() -> pd.DataFrame:
    """The shipped ML.ENERGY rows with derived targets: step_time_s, step_energy_j."""
    with resources.files("oracle").joinpath(MLENERGY_FILE).open() as f:
        df = pd.read_csv(f)
    b = df["avg_batch_size"]
    return df.assign(
        model=df["model_id"].str.split("/").str[-1],
        step_time_s=b / df["output_throughput_tokens_per_sec"],
        step_energy_j=b * df["energy_per_token_joules"],
    )


def steady_features(n_in: float, n_out: np.ndarray, batch: np.ndarray) -> np.ndarray:
    """Mean step features of steady-state continuous batching (see module docstring)."""
    per = batch / n_out
    return F.step_features(
        decode_seqs=batch,
        decode_ctx=batch * (n_in + n_out / 2.0),
        prefill_seqs=per,
        prefill_tokens=per * n_in,
        prefill_attn=per * F.attn_pairs(n_in),
    )


def _bases(df: pd.DataFrame, gpu: GpuSpec, n_in: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row time basis (rows, 4), FLOPs and bytes of the mean step."""
    tb, fl, by = [], [], []
    for model_id, rows in df.groupby("model_id", sort=False):
        spec = find_model(str(model_id))
        if spec is None:
            raise KeyError(f"no architecture in conf/model/ for {model_id!r}")
        work = feature_work(spec)
        x = steady_features(n_in, rows["avg_output_len"].to_numpy(), rows["avg_batch_size"].to_numpy())
        tb.append(pd.DataFrame(x @ time_basis(work, gpu), index=rows.index))
        fl.append(pd.Series(x @ work.flops, index=rows.index))
        by.append(pd.Series(x @ work.bytes, index=rows.index))
    order = df.index
    return (
        pd.concat(tb).loc[order].to_numpy(),
        pd.concat(fl).loc[order].to_numpy(),
        pd.concat(by).loc[order].to_numpy(),
    )


def _fit_at(df: pd.DataFrame, gpu: GpuSpec, n_in: float) -> tuple[HardwareConstants, np.ndarray, np.ndarray]:
    """Constants at a given prompt length; returns them with predicted step time and energy."""
    tb, flops, byts = _bases(df, gpu, n_in)
    # No engine beats the datasheet: achieved fractions of peak FLOP/s and bandwidth are ≤ 1.
    t = relative_bounded_lsq(tb, df["step_time_s"].to_numpy(), lower=[1.0, 1.0, 0.0, 0.0])
    t_pred = tb @ t
    e = df["step_energy_j"].to_numpy()
    # Static power is at least idle power (fit the excess over idle), and a step running at the
    # achieved compute or bandwidth rate draws at most the power limit:
    #   P_static + e_flop·peak/inv_c ≤ limit,   P_static + e_byte·BW/inv_m ≤ limit.
    head = gpu.power_limit_w - gpu.idle_power_w
    rows = np.array([[1.0, gpu.peak_flops / t[0], 0.0], [1.0, 0.0, gpu.memory_bandwidth / t[1]]])
    excess = relative_bounded_lsq(
        np.column_stack([t_pred, flops, byts]),
        e - gpu.idle_power_w * t_pred,
        lower=[0.0, 0.0, 0.0],
        constraints=(rows, np.full(2, head)),
    )
    k = HardwareConstants(
        inv_eff_compute=float(t[0]),
        inv_eff_memory=float(t[1]),
        step_overhead_s=float(t[2]),
        seq_overhead_s=float(t[3]),
        static_power_w=float(gpu.idle_power_w + excess[0]),
        energy_per_flop_j=float(excess[1]),
        energy_per_byte_j=float(excess[2]),
        source=f"{SOURCE}; {gpu.full_name}; fitted prompt length {n_in:.0f} tokens",
    )
    e_pred = k.static_power_w * t_pred + k.energy_per_flop_j * flops + k.energy_per_byte_j * byts
    return k, t_pred, e_pred


def calibrate(
    gpu: GpuSpec,
    gpu_label: str,
    data: pd.DataFrame | None = None,
    prompt_grid: np.ndarray | None = None,
) -> Calibration:
    """Fit hardware constants for the rows of `gpu_label` (the file's gpu_model, e.g. 'H100')."""
    df = load_mlenergy() if data is None else data
    df = df[df["gpu_model"] == gpu_label].reset_index(drop=True)
    if df.empty:
        raise ValueError(f"no ML.ENERGY rows for gpu_model {gpu_label!r}")

    def loss(n_in: float) -> float:
        _, tp, ep = _fit_at(df, gpu, n_in)
        return mape_pct(df["step_time_s"], tp) + mape_pct(df["step_energy_j"], ep)

    def argmin(grid: np.ndarray) -> float:
        return float(grid[int(np.argmin([loss(n) for n in grid]))])

    if prompt_grid is None:  # coarse search, then refine around the best point
        coarse = argmin(np.arange(100.0, 3001.0, 100.0))
        best = argmin(np.arange(max(coarse - 100.0, 25.0), coarse + 101.0, 10.0))
    else:
        best = argmin(prompt_grid)
    k, t_pred, e_pred = _fit_at(df, gpu, best)
    b = df["avg_batch_size"]
    rows = pd.DataFrame(
        {
            "model": df["model"],
            "batch_cap": df["max_num_seqs"],
            "energy_per_token_j": df["energy_per_token_joules"],
            "pred_energy_per_token_j": e_pred / b,
            "step_time_ms": df["step_time_s"] * 1e3,
            "pred_step_time_ms": t_pred * 1e3,
            "median_itl_ms": df["median_itl_ms"],
        }
    )
    rows["energy_per_token_err_pct"] = _err(rows["pred_energy_per_token_j"], rows["energy_per_token_j"])
    rows["step_time_err_pct"] = _err(rows["pred_step_time_ms"], rows["step_time_ms"])
    rows["median_itl_err_pct"] = _err(rows["pred_step_time_ms"], rows["median_itl_ms"])
    return Calibration(k, best, rows)


def _err(pred: pd.Series, true: pd.Series) -> pd.Series:
    return (pred - true) / true * 100.0
