"""Calibrate the hardware constants of `oracle.derive` on the ML.ENERGY measurements, end to end.

Each ML.ENERGY row is vLLM serving LM Arena chat prompts at one batch cap. `python -m
sim.validation.calibrate` replays every row through the simulator's `vllm` engine (KV paged in
blocks, chunked prefill, preemption) with a fitted prompt-length distribution, and records the
step features summed over the benchmark's steady-state window per output token
(`data/mlenergy_v3_replay_features.csv`). With every request sent at t = 0 the engine's step
sequence does not depend on the hardware constants, so given those features the measured time per
output token (1 / throughput, s), median inter-token latency (s, the time of the replay's
median-ITL step) and energy per output token (J) are linear in the constants: a bounded
least-squares fit on relative error.

Which dynamic-energy terms the fit keeps (`ENERGY_BASES`: energy per FLOP, and per byte of memory
traffic or not) is chosen per GPU by leave-one-model-out cross-validation: the constants exist to
derive oracles for models nobody measured, so the basis is the one that predicts a left-out model
best. On the H100 rows a fit on all three models puts no energy on bytes, while a fit on Qwen3-14B
and Gemma-3-27B alone puts 152 pJ/byte there and misses Llama-3.1-8B by 12 %: there the byte term
is not identified.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from importlib import resources

import numpy as np
import pandas as pd

from oracle import features as F
from oracle.arch import GpuSpec, find_model
from oracle.derive import HardwareConstants, energy_coef, feature_work, time_basis, time_coef
from oracle.regress import relative_bounded_lsq

MLENERGY_FILE = "data/mlenergy_v3_lm_arena_chat.csv"
REPLAY_FILE = "data/mlenergy_v3_replay_features.csv"
KEY = ["model_id", "gpu_model", "max_num_seqs"]
X_COLUMNS = [f"x_{name}" for name in F.FEATURES]  # summed step features per output token
M_COLUMNS = [f"m_{name}" for name in F.FEATURES]  # features of the step at the median inter-token latency
# Dynamic-energy terms beside static power × time, by name: which ones a fit may use.
ENERGY_BASES: dict[str, tuple[str, ...]] = {"flop": ("flop",), "flop+byte": ("flop", "byte")}
SOURCE = "ML.ENERGY Benchmark v3, LM Arena chat, vLLM bf16 (oracle/data/PROVENANCE.md)"


@dataclass(frozen=True)
class Calibration:
    """Constants fitted for one GPU, the prompt-length distribution (lognormal mean, tokens, and
    log-space σ) the replay was fitted with, and per-row errors."""

    constants: HardwareConstants
    prompt_tokens: float
    rows: pd.DataFrame
    prompt_sigma: float = 0.0
    held_out: pd.DataFrame | None = None  # per model, errors when it is left out of the fit (%)
    energy_basis: str = "flop+byte"  # the ENERGY_BASES entry kept (the best held-out energy error)
    held_out_energy_by_basis: pd.DataFrame | None = None  # per model × basis, held-out J/token error (%)

    def per_model(self) -> pd.DataFrame:
        """Mean absolute percentage errors per model across batch caps."""
        cols = ["energy_per_token_err_pct", "time_per_token_err_pct"]
        return self.rows.assign(**{c: self.rows[c].abs() for c in cols}).groupby("model")[cols].mean()


def load_mlenergy() -> pd.DataFrame:
    """The shipped ML.ENERGY rows with derived targets: time per output token and median ITL (s)."""
    with resources.files("oracle").joinpath(MLENERGY_FILE).open() as f:
        df = pd.read_csv(f)
    return df.assign(
        model=df["model_id"].str.split("/").str[-1],
        time_per_token_s=1.0 / df["output_throughput_tokens_per_sec"],
        itl_median_s=df["median_itl_ms"] / 1e3,
    )


def load_replay_features() -> pd.DataFrame:
    """The shipped window features of the replayed rows (see module docstring)."""
    with resources.files("oracle").joinpath(REPLAY_FILE).open() as f:
        return pd.read_csv(f)


def _bases(model_ids: pd.Series, gpu: GpuSpec, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row time basis (rows, 5: `oracle.derive.time_basis`'s columns), FLOPs and bytes of
    feature vectors x (rows, 6); one-GPU replicas (the rows calibrated on)."""
    tb, fl, by = np.zeros((len(x), 5)), np.zeros(len(x)), np.zeros(len(x))
    for model_id in model_ids.unique():
        spec = find_model(str(model_id))
        if spec is None:
            raise KeyError(f"no architecture in oracle data for {model_id!r}")
        work = feature_work(spec, gpu=gpu)
        m = (model_ids == model_id).to_numpy()
        tb[m], fl[m], by[m] = x[m] @ time_basis(work, gpu), x[m] @ work.flops, x[m] @ work.bytes
    return tb, fl, by


def fit_constants(
    df: pd.DataFrame, gpu: GpuSpec, x: np.ndarray, energy_basis: str = "flop+byte"
) -> tuple[HardwareConstants, np.ndarray, np.ndarray]:
    """Constants whose features-per-output-token `x` (rows, 6) reproduce the rows' measured time
    (s, 1 / throughput) and energy (J) per output token; returns them with both predictions.
    `energy_basis` (an `ENERGY_BASES` key) names the dynamic-energy terms fitted; a term left out
    is zero. With
    `M_COLUMNS` in `df` (the features of the replayed run's median-ITL step), the time fit also
    matches the measured median ITL (s): throughput pins the sum of prefill and decode time, the
    ITL of a decode step splits it."""
    tb, flops, byts = _bases(df["model_id"], gpu, x)
    rows, target = tb, df["time_per_token_s"].to_numpy()
    if set(M_COLUMNS) <= set(df.columns):
        tb_itl = _bases(df["model_id"], gpu, df[M_COLUMNS].to_numpy())[0]
        rows, target = np.vstack([tb, tb_itl]), np.concatenate([target, df["itl_median_s"].to_numpy()])
    # No engine beats the datasheet: achieved fractions of peak FLOP/s and bandwidth are ≤ 1. The
    # all-reduce time stays at the GPU's measured collective figures (comm_scale 1): one-GPU rows
    # have none to fit it on.
    own = np.ascontiguousarray(rows[:, :4])
    t = relative_bounded_lsq(own, target - rows[:, 4], lower=[1.0, 1.0, 0.0, 0.0])
    t_pred = np.ascontiguousarray(tb[:, :4]) @ t + tb[:, 4]
    e = df["energy_per_token_joules"].to_numpy()
    # Static power is at least idle power (fit the excess over idle), and the serving these rows
    # measured draws at most the power limit: for every row, (energy − idle·time) / time ≤ limit − idle.
    if energy_basis not in ENERGY_BASES:
        raise ValueError(f"energy_basis must be one of {sorted(ENERGY_BASES)}, got {energy_basis!r}")
    terms = {"flop": flops, "byte": byts}
    kept = ENERGY_BASES[energy_basis]
    head = gpu.power_limit_w - gpu.idle_power_w
    basis = np.column_stack([t_pred, *(terms[name] for name in kept)])
    fitted = relative_bounded_lsq(
        basis,
        e - gpu.idle_power_w * t_pred,
        lower=np.zeros(basis.shape[1]),
        constraints=(basis / t_pred[:, None], np.full(len(t_pred), head)),
    )
    excess = dict(zip(("static", *kept), fitted.tolist(), strict=True))
    k = HardwareConstants(
        inv_eff_compute=float(t[0]),
        inv_eff_memory=float(t[1]),
        step_overhead_s=float(t[2]),
        seq_overhead_s=float(t[3]),
        static_power_w=float(gpu.idle_power_w + excess["static"]),
        energy_per_flop_j=float(excess.get("flop", 0.0)),
        energy_per_byte_j=float(excess.get("byte", 0.0)),
        source=f"{SOURCE}; {gpu.full_name}",
    )
    e_pred = k.static_power_w * t_pred + k.energy_per_flop_j * flops + k.energy_per_byte_j * byts
    return k, t_pred, e_pred


def calibrate(
    gpu: GpuSpec, gpu_label: str, data: pd.DataFrame | None = None, replay: pd.DataFrame | None = None
) -> Calibration:
    """Fit hardware constants for the rows of `gpu_label` (the file's gpu_model, e.g. 'H100') on
    their replayed window features (default: the shipped ones)."""
    df = load_mlenergy() if data is None else data
    df = df[df["gpu_model"] == gpu_label].reset_index(drop=True)
    if df.empty:
        raise ValueError(f"no ML.ENERGY rows for gpu_model {gpu_label!r}")
    feats = load_replay_features() if replay is None else replay
    merged = df.merge(feats, on=KEY, how="left", validate="one_to_one")
    missing = merged[merged[X_COLUMNS[0]].isna()]
    if not missing.empty:
        raise ValueError(
            f"no replay features for {missing[KEY].to_dict('records')}: rerun python -m sim.validation.calibrate"
        )
    by_basis = {basis: held_out_errors(merged, gpu, basis) for basis in ENERGY_BASES}
    basis = min(by_basis, key=lambda b: float(by_basis[b]["energy_per_token_err_pct"].mean()))
    k, t_pred, e_pred = fit_constants(merged, gpu, merged[X_COLUMNS].to_numpy(), basis)
    rows = pd.DataFrame(
        {
            "model": merged["model"],
            "batch_cap": merged["max_num_seqs"],
            "energy_per_token_j": merged["energy_per_token_joules"],
            "pred_energy_per_token_j": e_pred,
            "throughput_tok_s": merged["output_throughput_tokens_per_sec"],
            "pred_throughput_tok_s": 1.0 / t_pred,
        }
    )
    rows["energy_per_token_err_pct"] = _err(rows["pred_energy_per_token_j"], rows["energy_per_token_j"])
    rows["time_per_token_err_pct"] = _err(1.0 / rows["pred_throughput_tok_s"], 1.0 / rows["throughput_tok_s"])
    prompt = float(merged["prompt_mean_tokens"].iloc[0])
    sigma = float(merged["prompt_sigma"].iloc[0])
    k = replace(
        k,
        source=f"{k.source}; replayed with lognormal prompts of mean {prompt:.0f} tokens, σ {sigma:.2f}; "
        f"dynamic energy per {basis} (chosen by leave-one-model-out error)",
    )
    energy_by_basis = pd.DataFrame({b: t["energy_per_token_err_pct"] for b, t in by_basis.items()})
    return Calibration(k, prompt, rows, sigma, by_basis[basis], basis, energy_by_basis)


def _err(pred: pd.Series, true: pd.Series) -> pd.Series:
    return (pred - true) / true * 100.0


def predicted_time_s(df: pd.DataFrame, gpu: GpuSpec, k: HardwareConstants, columns: list[str]) -> np.ndarray:
    """Time (s) the constants give the feature vectors in `columns` (X_COLUMNS: per output token;
    M_COLUMNS: the median-ITL step)."""
    tb = _bases(df["model_id"], gpu, df[columns].to_numpy())[0]
    return tb @ np.array([k.inv_eff_compute, k.inv_eff_memory, k.step_overhead_s, k.seq_overhead_s, k.comm_scale])


def held_out_errors(calibration_rows: pd.DataFrame, gpu: GpuSpec, energy_basis: str = "flop+byte") -> pd.DataFrame:
    """Leave one model out: per model, mean absolute errors (%) of time and energy per output token
    predicted by constants fitted (with `energy_basis`) on the other models' rows: how the
    constants carry to models nobody measured. `calibration_rows`: measured rows merged with their
    replay features."""
    out = {}
    for model_id in calibration_rows["model_id"].unique():
        test = (calibration_rows["model_id"] == model_id).to_numpy()
        train = calibration_rows[~test].reset_index(drop=True)
        k, _, _ = fit_constants(train, gpu, train[X_COLUMNS].to_numpy(), energy_basis)
        spec = find_model(str(model_id))
        assert spec is not None
        work = feature_work(spec, gpu=gpu)
        x = calibration_rows.loc[test, X_COLUMNS].to_numpy()
        t = x @ time_coef(work, gpu, k)
        e = x @ energy_coef(work, gpu, k)
        rows = calibration_rows[test]
        out[str(model_id).split("/")[-1]] = {
            "energy_per_token_err_pct": float(np.mean(np.abs(e / rows["energy_per_token_joules"] - 1.0)) * 100.0),
            "time_per_token_err_pct": float(np.mean(np.abs(t / rows["time_per_token_s"] - 1.0)) * 100.0),
        }
    return pd.DataFrame(out).T
