"""Calibrate the hardware constants of `oracle.derive` on the ML.ENERGY measurements, end to end.

Each ML.ENERGY row is vLLM serving one task (LM Arena chat, GPQA, Sourcegraph FIM) at one batch
cap on a replica of 1-8 GPUs. `python -m sim.validation.calibrate` replays every row of the wide
table through the simulator's `vllm` engine (KV paged in blocks, chunked prefill, preemption) with
its task's prompt-length distribution, on the row's replica layout, and records the step features
summed over the benchmark's steady-state window per output token, the expected shares of routed
experts those steps read, and the same for the step at the replay's median ITL
(`data/mlenergy_v3_llm_replay_features.csv`). With every request sent at t = 0 the engine's step
sequence does not depend on the hardware constants, so given those features the measured time per
output token (1 / throughput, s), median inter-token latency (s) and energy per output token (J)
are linear in the constants: a bounded least-squares fit on relative error, one set per GPU
generation.

Time (`oracle.derive.time_basis`): compute and memory efficiencies, per-step, per-sequence and
per-layer overheads, the all-reduces' scale (one for tensor-parallel replicas, one for expert
parallel ones), and the extra time of block-quantized fp8 routed experts. Energy: every GPU's
static power over the step time, dynamic energy per FLOP and (optionally) per byte, and (optionally)
a separate power while all-reducing. Which energy terms are kept (`ENERGY_BASES`) is chosen per GPU
by leave-one-model-out cross-validation: the constants exist to derive oracles for models nobody
measured, so the basis kept is the one that predicts a left-out model best.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from importlib import resources

import numpy as np
import pandas as pd

from oracle import features as F
from oracle.arch import GpuSpec, find_model
from oracle.derive import (
    FeatureWork,
    HardwareConstants,
    Layout,
    constant_vector,
    energy_coef,
    expert_reads,
    feature_work,
    time_basis,
    time_coef,
)
from oracle.kernels import KernelRows, kernel_rows
from oracle.regress import relative_bounded_lsq

MLENERGY_FILE = "data/mlenergy_v3_llm.csv"
REPLAY_FILE = "data/mlenergy_v3_llm_replay_features.csv"
KEY = ["config_id"]
X_COLUMNS = [f"x_{name}" for name in F.FEATURES]  # summed step features per output token
M_COLUMNS = [f"m_{name}" for name in F.FEATURES]  # features of the step at the median inter-token latency
X_EXPERTS, M_EXPERTS = "x_experts", "m_experts"  # shares of routed experts read: per output token, median step
TIME_TERMS = ("inv_c", "inv_m", "t_step", "t_seq", "comm", "ep_comm", "t_layer", "fp8_experts", "inv_attn")
"""The fitted time constants, in the order of `_bases`' columns."""
NEUTRAL = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
"""Each time constant's value when no row exercises it."""
LOWER = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])
"""No engine beats the datasheet: achieved fractions of peak FLOP/s and bandwidth are ≤ 1."""
KERNEL_WEIGHTS = (0.5, 1.0, 2.0)
"""Weights of a measured prefill kernel row (`oracle.kernels`) against one ML.ENERGY target that
the calibration report tries (`prefill_sensitivity`). The shipped constants are fitted on the
ML.ENERGY runs alone (weight 0): at every weight tried the kernel rows' prefill errors shrink but
the held-out ML.ENERGY time errors grow (the report's table), because the additive step time
(compute + memory) cannot hold both: the kernels' time grows faster than linearly in the step's
tokens (the roofline's knee, which an additive form misses, and attention at a small fraction of
peak), and the only convex term, prefill attention, then overcharges the long-prompt serving runs."""


# Energy terms beside every GPU's static power × time, by name: which ones a fit may use.
ENERGY_BASES: dict[str, tuple[str, ...]] = {
    "flop": ("flop",),
    "flop+byte": ("flop", "byte"),
    "flop+comm": ("flop", "comm"),
    "flop+byte+comm": ("flop", "byte", "comm"),
}
SOURCE = "ML.ENERGY Benchmark v3, vLLM, every run of mlenergy_v3_llm.csv (oracle/data/PROVENANCE.md)"


@dataclass(frozen=True)
class Calibration:
    """Constants fitted for one GPU, the LM Arena prompt-length distribution (lognormal mean,
    tokens, and log-space σ) the replay used, and per-row errors."""

    constants: HardwareConstants
    prompt_tokens: float
    rows: pd.DataFrame
    prompt_sigma: float = 0.0
    held_out: pd.DataFrame | None = None  # per model, errors when it is left out of the fit (%)
    energy_basis: str = "flop+byte"  # the ENERGY_BASES entry kept (the best held-out energy error)
    held_out_energy_by_basis: pd.DataFrame | None = None  # per model × basis, held-out J/token error (%)
    held_out_rows: pd.DataFrame | None = None  # per row, measured / held-out predicted time and energy per token

    def per_model(self) -> pd.DataFrame:
        """Mean absolute percentage errors per model across its runs."""
        cols = ["energy_per_token_err_pct", "time_per_token_err_pct", "itl_err_pct"]
        return self.rows.assign(**{c: self.rows[c].abs() for c in cols}).groupby("model")[cols].mean()


def load_mlenergy() -> pd.DataFrame:
    """The shipped wide ML.ENERGY table with derived targets: time per output token and median ITL (s)."""
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


@dataclass(frozen=True)
class _Bases:
    """Per row: time of each `TIME_TERMS` constant at 1 (s), FLOPs, bytes and GPUs."""

    time: np.ndarray
    flops: np.ndarray
    bytes: np.ndarray
    gpus: np.ndarray


def _replicas(
    df: pd.DataFrame, gpu: GpuSpec, columns: list[str], experts: str
) -> Iterator[tuple[np.ndarray, FeatureWork, np.ndarray, np.ndarray]]:
    """Per (model, GPUs, expert parallel) of the rows: their positions, the work of their replica,
    their feature vectors `columns` (X_COLUMNS or M_COLUMNS) and expert shares `experts`."""
    layout_of = df[["model_id", "num_gpus", "expert_parallel"]].astype({"num_gpus": int, "expert_parallel": int})
    for (model_id, g, ep), idx in layout_of.groupby(["model_id", "num_gpus", "expert_parallel"]).groups.items():
        spec = find_model(str(model_id))
        if spec is None:
            raise KeyError(f"no architecture in oracle data for {model_id!r}")
        work = feature_work(spec, Layout(int(g), ep > 1 and bool(spec.experts)), gpu)
        yield df.index.get_indexer(idx), work, df.loc[idx, columns].to_numpy(), df.loc[idx, experts].to_numpy()


def _terms(base: np.ndarray, expert_parallel: bool) -> np.ndarray:
    """`oracle.derive.time_basis` columns (rows of summed features) as `TIME_TERMS` columns."""
    tb = np.zeros((len(base), len(TIME_TERMS)))
    tb[:, [0, 1, 2, 3, 6, 8]] = base[:, [0, 1, 2, 3, 5, 6]]
    tb[:, 5 if expert_parallel else 4] = base[:, 4]
    return tb


def _bases(df: pd.DataFrame, gpu: GpuSpec, columns: list[str], experts: str) -> _Bases:
    """The bases of the feature vectors `columns` and expert shares `experts` of each row on its
    replica (`num_gpus`, `expert_parallel`)."""
    n = len(df)
    tb, fl, by = np.zeros((n, len(TIME_TERMS))), np.zeros(n), np.zeros(n)
    for rows, work, x, share in _replicas(df, gpu, columns, experts):
        reads = share * work.expert_bytes / (work.gpus * gpu.memory_bandwidth)
        tb[rows] = _terms(x @ time_basis(work, gpu), work.expert_parallel)
        tb[rows, 1] += reads
        if work.fp8_experts:
            tb[rows, 7] = reads
        fl[rows], by[rows] = x @ work.flops, x @ work.bytes + share * work.expert_bytes
    return _Bases(tb, fl, by, df["num_gpus"].to_numpy(float))


def _comm_time(b: _Bases, t: np.ndarray) -> np.ndarray:
    """All-reduce time (s) of each row at the fitted scales."""
    return b.time[:, 4] * t[4] + b.time[:, 5] * t[5]


def fit_time(
    rows: np.ndarray, target: np.ndarray, kernels: KernelRows | None = None, held: Mapping[str, float] | None = None
) -> np.ndarray:
    """The `TIME_TERMS` constants (bounded below by `LOWER`) whose bases `rows` reproduce
    `target` (s), relative error, with `kernels`' rows beside them (each of its weight); a term
    no row exercises (no multi-GPU rows, no fp8 experts) stays at its `NEUTRAL` value, one in
    `held` at that value. Without kernel rows prefill attention is not told apart from the other
    FLOPs: it is fitted with them (its constant returned equal to inv_c)."""
    held = dict(held or {})
    weights = np.ones(len(rows))
    rows = rows.copy()
    separate = (kernels is not None and len(kernels.frame) > 0) or "inv_attn" in held
    if not separate:
        rows[:, 0] += rows[:, 8]
        rows[:, 8] = 0.0
    if kernels is not None and len(kernels.frame):
        rows = np.vstack([rows, _terms(kernels.basis, expert_parallel=False)])
        target = np.concatenate([target, kernels.kernel_s])
        weights = np.concatenate([weights, np.full(len(kernels.frame), kernels.weight)])
    t = NEUTRAL.copy()
    for name, value in held.items():
        t[TIME_TERMS.index(name)] = value
    free = np.any(rows != 0.0, axis=0) & ~np.isin(TIME_TERMS, list(held))
    fixed = rows[:, ~free] @ t[~free]
    t[free] = relative_bounded_lsq(
        np.ascontiguousarray(rows[:, free]), target - fixed, lower=LOWER[free], weights=weights
    )
    if not separate:
        t[8] = t[0]
    return t


def fit_constants(
    df: pd.DataFrame,
    gpu: GpuSpec,
    energy_basis: str = "flop+byte",
    kernels: KernelRows | None = None,
    held: Mapping[str, float] | None = None,
) -> tuple[HardwareConstants, np.ndarray, np.ndarray, np.ndarray]:
    """Constants whose replayed features (`X_COLUMNS`, `M_COLUMNS`, expert shares) reproduce the
    rows' measured time per output token (s), median ITL (s) and energy per output token (J);
    returns them with the three predictions. `energy_basis` (an `ENERGY_BASES` key) names the
    energy terms fitted; a term left out is zero (or, for `comm`, the static power). `kernels`:
    measured prefill kernel times fitted beside them (`fit_time`); `held`: time constants
    (`TIME_TERMS` names) held at a value instead of fitted."""
    if energy_basis not in ENERGY_BASES:
        raise ValueError(f"energy_basis must be one of {sorted(ENERGY_BASES)}, got {energy_basis!r}")
    b, bm = _bases(df, gpu, X_COLUMNS, X_EXPERTS), _bases(df, gpu, M_COLUMNS, M_EXPERTS)
    t = fit_time(
        np.vstack([b.time, bm.time]),
        np.concatenate([df["time_per_token_s"].to_numpy(), df["itl_median_s"].to_numpy()]),
        kernels,
        held,
    )
    t_pred, itl_pred = b.time @ t, bm.time @ t
    # Static power is at least idle power (fit the excess over idle), and the serving these rows
    # measured draws at most the power limit per GPU.
    kept = ENERGY_BASES[energy_basis]
    g, comm = b.gpus, _comm_time(b, t)
    columns = {"static": g * (t_pred - comm) if "comm" in kept else g * t_pred, "comm": g * comm}
    columns |= {"flop": b.flops, "byte": b.bytes}
    names = ["static", *kept]
    basis = np.column_stack([columns[n] for n in names])
    head = gpu.power_limit_w - gpu.idle_power_w
    e = df["energy_per_token_joules"].to_numpy()
    fitted = relative_bounded_lsq(
        basis,
        e - g * gpu.idle_power_w * t_pred,
        lower=np.zeros(basis.shape[1]),
        constraints=(basis / (g * t_pred)[:, None], np.full(len(t_pred), head)),
    )
    excess = dict(zip(names, fitted.tolist(), strict=True))
    k = HardwareConstants(
        inv_eff_compute=float(t[0]),
        inv_eff_attention=float(t[8]) if kernels is not None or "inv_attn" in (held or {}) else None,
        inv_eff_memory=float(t[1]),
        step_overhead_s=float(t[2]),
        seq_overhead_s=float(t[3]),
        static_power_w=float(gpu.idle_power_w + excess["static"]),
        energy_per_flop_j=float(excess.get("flop", 0.0)),
        energy_per_byte_j=float(excess.get("byte", 0.0)),
        source=f"{SOURCE}; {gpu.full_name}",
        comm_scale=float(t[4]),
        ep_comm_scale=float(t[5]),
        layer_overhead_s=float(t[6]),
        fp8_expert_read_scale=float(t[7]),
        comm_power_w=float(excess["comm"]) if "comm" in kept else None,
    )
    return k, t_pred, itl_pred, predicted_energy_j(df, gpu, k)


def predicted_energy_j(df: pd.DataFrame, gpu: GpuSpec, k: HardwareConstants) -> np.ndarray:
    """Energy per output token (J) the constants give the rows' replayed features: the derived
    oracle's coefficients and expert reads applied to them."""
    return _predict(df, gpu, k)[1]


def predicted_time_s(df: pd.DataFrame, gpu: GpuSpec, k: HardwareConstants, columns: list[str]) -> np.ndarray:
    """Time (s) the constants give the feature vectors in `columns` (X_COLUMNS: per output token;
    M_COLUMNS: the median-ITL step)."""
    return _predict(df, gpu, k, columns)[0]


def _predict(
    df: pd.DataFrame, gpu: GpuSpec, k: HardwareConstants, columns: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(time s, energy J) of each row's features through the derived oracle's own coefficients."""
    columns = columns or X_COLUMNS
    experts = X_EXPERTS if columns == X_COLUMNS else M_EXPERTS
    t, e = np.zeros(len(df)), np.zeros(len(df))
    for rows, work, x, share in _replicas(df, gpu, columns, experts):
        reads = expert_reads(work, gpu, k)
        t[rows] = x @ time_coef(work, gpu, k) + (0.0 if reads is None else share * reads.time_s)
        e[rows] = x @ energy_coef(work, gpu, k) + (0.0 if reads is None else share * reads.energy_j)
    return t, e


def calibrate(
    gpu: GpuSpec, gpu_label: str, data: pd.DataFrame | None = None, replay: pd.DataFrame | None = None
) -> Calibration:
    """Fit hardware constants for the rows of `gpu_label` (the table's gpu_model, e.g. 'H100') on
    their replayed window features (default: the shipped ones)."""
    merged = _merged(gpu_label, data, replay)
    rows_by_basis = {basis: held_out_rows(merged, gpu, basis) for basis in ENERGY_BASES}
    by_basis = {basis: held_out_errors(r) for basis, r in rows_by_basis.items()}
    basis = min(by_basis, key=lambda b: float(by_basis[b]["energy_per_token_err_pct"].mean()))
    k, t_pred, itl_pred, e_pred = fit_constants(merged, gpu, basis)
    rows = pd.DataFrame(
        {
            "model": merged["model"],
            "task": merged["task"],
            "gpus": merged["num_gpus"],
            "batch_cap": merged["max_num_seqs"],
            "energy_per_token_j": merged["energy_per_token_joules"],
            "pred_energy_per_token_j": e_pred,
            "throughput_tok_s": merged["output_throughput_tokens_per_sec"],
            "pred_throughput_tok_s": 1.0 / t_pred,
            "itl_ms": merged["itl_median_s"] * 1e3,
            "pred_itl_ms": itl_pred * 1e3,
        }
    )
    rows["energy_per_token_err_pct"] = _err(rows["pred_energy_per_token_j"], rows["energy_per_token_j"])
    rows["time_per_token_err_pct"] = _err(1.0 / rows["pred_throughput_tok_s"], 1.0 / rows["throughput_tok_s"])
    rows["itl_err_pct"] = _err(rows["pred_itl_ms"], rows["itl_ms"])
    arena = merged[merged["task"] == "lm-arena-chat"]
    prompt = float(arena["prompt_mean_tokens"].iloc[0])
    sigma = float(arena["prompt_sigma"].iloc[0])
    k = replace(
        k,
        source=f"{k.source}; replayed with each task's prompts (LM Arena: lognormal of mean {prompt:.0f} tokens, "
        f"σ {sigma:.2f}); energy terms {basis} (chosen by leave-one-model-out error)",
    )
    energy_by_basis = pd.DataFrame({b: t["energy_per_token_err_pct"] for b, t in by_basis.items()})
    return Calibration(k, prompt, rows, sigma, by_basis[basis], basis, energy_by_basis, rows_by_basis[basis])


def _merged(gpu_label: str, data: pd.DataFrame | None, replay: pd.DataFrame | None) -> pd.DataFrame:
    """The measured rows of one GPU with their replay features (ValueError naming rows without)."""
    df = load_mlenergy() if data is None else data
    df = df[df["gpu_model"] == gpu_label].reset_index(drop=True)
    if df.empty:
        raise ValueError(f"no ML.ENERGY rows for gpu_model {gpu_label!r}")
    feats = load_replay_features() if replay is None else replay
    feats = feats[[*KEY, "prompt_mean_tokens", "prompt_sigma", *X_COLUMNS, *M_COLUMNS, X_EXPERTS, M_EXPERTS]]
    merged = df.merge(feats, on=KEY, how="inner", validate="one_to_one")
    if merged.empty:
        raise ValueError(f"no replay features for the {gpu_label} rows: rerun python -m sim.validation.calibrate")
    return merged


def _err(pred: pd.Series, true: pd.Series) -> pd.Series:
    return (pred - true) / true * 100.0


def _architecture(model_id: str) -> str:
    """The shipped architecture's name of a model id (the same model in either set)."""
    spec = find_model(model_id)
    return model_id if spec is None else spec.name


def _lomo(
    calibration_rows: pd.DataFrame,
    gpu: GpuSpec,
    energy_basis: str,
    kernels: KernelRows | None,
    held: Mapping[str, float] | None,
) -> Iterator[tuple[np.ndarray, np.ndarray | None, HardwareConstants]]:
    """Per measured model (`model_id`), then per architecture only the kernel rows have: the
    masks of its measured rows and of the kernel rows of its architecture, and the constants
    fitted without both."""
    ids = calibration_rows["model_id"].to_numpy()
    kernel_arch = None if kernels is None else np.array([_architecture(m) for m in kernels.models()])
    folds = [(ids == m, _architecture(str(m))) for m in dict.fromkeys(ids)]
    if kernel_arch is not None:
        measured = {name for _, name in folds}
        folds += [(np.zeros(len(ids), bool), str(a)) for a in dict.fromkeys(kernel_arch) if a not in measured]
    for test, name in folds:
        ktest = None if kernel_arch is None else kernel_arch == name
        kept = None if kernels is None or ktest is None else kernels.subset(~ktest)
        train = calibration_rows[~test].reset_index(drop=True)
        yield test, ktest, fit_constants(train, gpu, energy_basis, kept, held)[0]


def held_out_rows(
    calibration_rows: pd.DataFrame,
    gpu: GpuSpec,
    energy_basis: str = "flop+byte",
    kernels: KernelRows | None = None,
    held: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Leave one model out, per row: its measured time and energy per output token over what
    constants fitted (with `energy_basis`) on the other models' rows predict (`time_ratio`,
    `energy_ratio`, measured / predicted): how the constants carry to a model nobody measured,
    row by row (`oracle.errors` draws the simulator's bands from them). `calibration_rows`:
    measured rows merged with their replay features; a model's `kernels` rows leave with it."""
    return _held_out(calibration_rows, gpu, energy_basis, kernels, held)[0]


def _held_out(
    calibration_rows: pd.DataFrame,
    gpu: GpuSpec,
    energy_basis: str,
    kernels: KernelRows | None,
    held: Mapping[str, float] | None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """`held_out_rows`, and each kernel row's time (s) with its architecture left out (each
    measured model of that architecture left out in turn: the last such fold's)."""
    parts = []
    kernel_s = np.zeros(0 if kernels is None else len(kernels.frame))
    for test, ktest, k in _lomo(calibration_rows, gpu, energy_basis, kernels, held):
        if kernels is not None and ktest is not None and ktest.any():
            kernel_s[ktest] = kernel_time_s(kernels.subset(ktest), k)
        if not test.any():
            continue
        rows = calibration_rows[test].reset_index(drop=True)
        t, e = _predict(rows, gpu, k)
        parts.append(
            pd.DataFrame(
                {
                    "model": rows["model_id"].str.split("/").str[-1],
                    "config_id": rows["config_id"],
                    "task": rows["task"],
                    "time_ratio": rows["time_per_token_s"] / t,
                    "energy_ratio": rows["energy_per_token_joules"] / e,
                }
            )
        )
    return pd.concat(parts, ignore_index=True), kernel_s


def prefill_sensitivity(
    gpu: GpuSpec, gpu_label: str, weights: tuple[float, ...] = (0.0, *KERNEL_WEIGHTS), energy_basis: str = "flop+byte"
) -> pd.DataFrame:
    """What fitting the constants beside the measured prefill kernels (`oracle.kernels`) would do,
    per kernel-row weight (0: the ML.ENERGY runs alone, as shipped): the fitted compute and
    prefill-attention constants, mean absolute errors (%) of the kernel rows of 128-2,048 tokens
    fitted and with their model left out, and of the ML.ENERGY time and energy per output token
    with each model left out (all tasks, and the long-prompt Sourcegraph FIM runs alone)."""
    merged = _merged(gpu_label, None, None)
    out = []
    for w in weights:
        kernels = kernel_rows(gpu, weight=w)
        fitted_with = kernels if w > 0 else None
        k = fit_constants(merged, gpu, energy_basis, fitted_with)[0]
        rows, held_s = _held_out(merged, gpu, energy_basis, fitted_with, None)
        if fitted_with is None:  # the kernels' model left out of a fit that never saw them
            held_s = kernel_time_s(kernels, k)
        big = (kernels.frame["tokens"] >= 128).to_numpy()
        err = pd.DataFrame(
            {
                "held": (held_s / kernels.kernel_s - 1) * 100,
                "fitted": (kernel_time_s(kernels, k) / kernels.kernel_s - 1) * 100,
            }
        )
        time_err = (1.0 / rows["time_ratio"] - 1.0).abs() * 100
        energy_err = (1.0 / rows["energy_ratio"] - 1.0).abs() * 100
        fim = (rows["task"] == "sourcegraph-fim").to_numpy()
        out.append(
            {
                "kernel_weight": w,
                "inv_eff_compute": k.inv_eff_compute,
                "inv_eff_attention": k.attention,
                "kernels_fitted_mae_pct": err.loc[big, "fitted"].abs().mean(),
                "kernels_held_out_mae_pct": err.loc[big, "held"].abs().mean(),
                "mlenergy_held_out_time_mae_pct": time_err.mean(),
                "mlenergy_held_out_energy_mae_pct": energy_err.mean(),
                "fim_held_out_time_mae_pct": time_err[fim].mean(),
            }
        )
    return pd.DataFrame(out)


def kernel_errors(gpu: GpuSpec, k: HardwareConstants, kernels: KernelRows) -> pd.DataFrame:
    """Per kernel row: its measured kernel time (ms) and what constants `k` give it (ms, error %)."""
    fitted = 1e3 * kernel_time_s(kernels, k)
    return kernels.frame[["model", "tp", "tokens", "kernel_ms"]].assign(
        fitted_ms=fitted, error_pct=100 * (fitted / kernels.frame["kernel_ms"].to_numpy() - 1)
    )


def kernel_time_s(kernels: KernelRows, k: HardwareConstants) -> np.ndarray:
    """The kernel time (s) constants `k` give each kernel row (dense, tensor parallel)."""
    return kernels.basis @ constant_vector(k, k.comm_scale)


def held_out_errors(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model of `held_out_rows`' output, the mean absolute errors (%) of the held-out
    predictions of energy and time per output token."""
    err = pd.DataFrame(
        {
            "model": rows["model"],
            "energy_per_token_err_pct": (1.0 / rows["energy_ratio"] - 1.0).abs() * 100.0,
            "time_per_token_err_pct": (1.0 / rows["time_ratio"] - 1.0).abs() * 100.0,
        }
    )
    return err.groupby("model", sort=False).mean().rename_axis(None)
