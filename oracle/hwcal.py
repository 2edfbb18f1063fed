"""Calibrate the hardware constants of `oracle.derive` on the ML.ENERGY measurements, end to end.

Each ML.ENERGY row is vLLM serving one task (LM Arena chat, GPQA, Sourcegraph FIM) at one batch
cap on a replica of 1-8 GPUs. `python -m sim.validation.calibrate` replays every row of the wide
table through the simulator's `vllm` engine (KV paged in blocks, chunked prefill, preemption) with
its task's prompt-length distribution, on the row's replica layout, and records the step features
summed over the benchmark's steady-state window per output token, the expected shares of routed
experts those steps read, the same for the step at the replay's median ITL, and the window's prompt
tokens below each knee of `oracle.overlap.KNEES` (`data/mlenergy_v3_llm_replay_features.csv`).
With every request sent at t = 0 the engine's step sequence does not depend on the hardware
constants, so given those features the measured time per output token (1 / throughput, s), median
inter-token latency (s) and energy per output token (J) are linear in the constants once the
prefill knees are known: a bounded least-squares fit on relative error, refitted while the knees
move (`fit_time`), one set per GPU generation.

Time (`oracle.derive.time_basis`): compute and memory efficiencies (the prompt GEMMs' and prefill
attention's apart), per-step, per-sequence and per-layer overheads, the all-reduces' scale (one
for tensor-parallel replicas, one for expert parallel ones), and the extra time of
block-quantized fp8 routed experts; a step that prefills hides the shorter of its weights' read and
its prompt GEMMs (`oracle.model.Overlap`). The H100 fit also reproduces measured prefill kernels
(`oracle.kernels`), which alone see prefill steps on their own; the other GPUs hold its prefill
attention fraction of peak and fit their prompt GEMMs' on their runs. Energy: every GPU's
static power over the step time, dynamic energy per FLOP and (optionally) per byte, and (optionally)
a separate power while all-reducing and another while block-scaled fp8 experts dequantise (the time
their extra read term adds: those fused-MoE kernels draw more than static power; the calibration
report's table of bases gives, per model left out, what each term is worth). Which energy terms
are kept (`ENERGY_BASES`) is chosen per GPU by leave-one-model-out cross-validation: the constants
exist to derive oracles for models nobody measured, so the basis kept is the one that predicts a
left-out model best.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from importlib import resources
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from oracle import features as F
from oracle.arch import GpuSpec, ModelSpec, find_model
from oracle.derive import (
    FeatureWork,
    HardwareConstants,
    Layout,
    energy_coef,
    expert_reads,
    feature_work,
    overlap,
    roofline_parts,
    time_basis,
    time_coef,
)
from oracle.kernels import KernelRows
from oracle.overlap import KNEE_COLUMNS, PromptSteps
from oracle.regress import relative_bounded_lsq
from oracle.screen import screen

if TYPE_CHECKING:  # oracle.refine builds on this module
    from oracle.refine import Refinement

MLENERGY_FILE = "data/mlenergy_v3_llm.csv"
REPLAY_FILE = "data/mlenergy_v3_llm_replay_features.csv"
KEY = ["config_id"]
X_COLUMNS = [f"x_{name}" for name in F.FEATURES]  # summed step features per output token
M_COLUMNS = [f"m_{name}" for name in F.FEATURES]  # features of the step at the median inter-token latency
X_EXPERTS, M_EXPERTS = "x_experts", "m_experts"  # shares of routed experts read: per output token, median step
TIME_TERMS = (
    "inv_c",
    "inv_m",
    "t_step",
    "t_seq",
    "comm",
    "ep_comm",
    "t_layer",
    "fp8_experts",
    "inv_attn",
    "inv_p",
    "t_mamba",
)
"""The fitted time constants, in the order of `_bases`' columns."""
NEUTRAL = np.array([1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
"""Each time constant's value when no row exercises it."""
LOWER = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0])
"""No engine beats the datasheet: achieved fractions of peak FLOP/s and bandwidth are ≤ 1."""
KERNEL_WEIGHTS = (0.25, 0.5, 1.0, 2.0)
"""Weights of a measured prefill kernel row (`oracle.kernels`) against one ML.ENERGY target (time
per output token or median ITL) that a calibration with kernel rows tries beside 0 (the runs
alone); it keeps the one with the least held-out time errors (`kernel_weight`). The kernel rows
are the only ones that see prefill steps on their own, so they pin the prompt GEMMs' fraction of
peak and the knee of the prefill overlap that the decode-dominated ML.ENERGY runs leave loose."""


# Energy terms beside every GPU's static power × time, by name: which ones a fit may use ("comm":
# its own power while all-reducing; "fp8": while block-scaled fp8 experts dequantise; "mamba":
# while a hybrid's Mamba layers work apart from its GEMMs: reading and writing their states, and a
# prefill's scans, the time `t_mamba` charges). The scans count since their refits' runs left out came
# out closer with them: the Nemotrons on H100, energy per output token 5.6 and 8.7 % → 2.9 and 5.1 %;
# every refined H100 configuration 5.9 → 5.3 %, B200's unchanged at 5.4 % (`oracle.build --out`).
ENERGY_BASES: dict[str, tuple[str, ...]] = {
    "flop": ("flop",),
    "flop+byte": ("flop", "byte"),
    "flop+comm": ("flop", "comm"),
    "flop+byte+comm": ("flop", "byte", "comm"),
    "flop+byte+fp8": ("flop", "byte", "fp8"),
    "flop+byte+comm+fp8": ("flop", "byte", "comm", "fp8"),
    "flop+byte+fp8+mamba": ("flop", "byte", "fp8", "mamba"),
    "flop+byte+comm+fp8+mamba": ("flop", "byte", "comm", "fp8", "mamba"),
}
SOURCE = (
    "ML.ENERGY Benchmark v3, vLLM, every run of mlenergy_v3_llm.csv that oracle/screen.py keeps "
    "(oracle/data/PROVENANCE.md)"
)


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
    kernels: pd.DataFrame | None = None  # per measured prefill kernel row: kernel_ms, fitted_ms, held_out_ms
    kernel_weight: float = 0.0  # the weight of a kernel row in the fit (`KERNEL_WEIGHTS`, chosen)
    prefill_sensitivity: pd.DataFrame | None = None  # `prefill_sensitivity`'s table (the choice)
    held: dict[str, float] | None = None  # time constants held at a value, not fitted (from another GPU)
    refinement: Refinement | None = None  # its measured configurations refined on their own runs

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
    """Per row: time of each `TIME_TERMS` constant at 1 (s; no prefill overlap), FLOPs, bytes,
    GPUs, its replica's `roofline_parts` (s) and whether its experts are fp8, and its prompt
    steps (`oracle.overlap`)."""

    time: np.ndarray
    flops: np.ndarray
    bytes: np.ndarray
    state: np.ndarray  # reading and writing Mamba states at the datasheet's bandwidth (s)
    gpus: np.ndarray
    roofline: np.ndarray
    prompts: PromptSteps


@dataclass(frozen=True)
class TimeRows:
    """Rows of a time fit: their `_Bases` time, roofline parts and prompt steps, measured time
    (s) and weight."""

    time: np.ndarray
    roofline: np.ndarray
    prompts: PromptSteps
    target: np.ndarray
    weights: np.ndarray

    @classmethod
    def concat(cls, *parts: TimeRows) -> TimeRows:
        """The rows of `parts`, in order."""
        return cls(
            np.vstack([p.time for p in parts]),
            np.vstack([p.roofline for p in parts]),
            PromptSteps.concat(*(p.prompts for p in parts)),
            np.concatenate([p.target for p in parts]),
            np.concatenate([p.weights for p in parts]),
        )

    def at_knee(self, knee: np.ndarray) -> np.ndarray:
        """`time` with the prompt GEMMs' column charging only the tokens past each row's knee
        (a prefill step hides the shorter of its weights' read and its GEMMs)."""
        out = self.time.copy()
        out[:, 9] -= self.roofline[:, 1] * self.prompts.below(knee)
        return out

    def knee(self, t: np.ndarray) -> np.ndarray:
        """Each row's knee (tokens) at the constants `t`: its weights' read (dense and every routed
        expert, fp8 experts dequantised) over a token's GEMMs."""
        dense, token, experts, fp8 = self.roofline.T
        return (t[1] * dense + (t[1] + t[7] * fp8) * experts) / (t[9] * token)

    def predict(self, t: np.ndarray) -> np.ndarray:
        """Each row's time (s) at the constants `t`, its prefill steps overlapped."""
        return self.at_knee(self.knee(t)) @ t

    @classmethod
    def of_kernels(cls, kernels: KernelRows) -> TimeRows:
        """The rows of measured prefill kernels (their kernel time), each of their weight."""
        return cls(
            _terms(kernels.basis, expert_parallel=False),
            kernels.roofline,
            PromptSteps.of_steps(kernels.features[:, F.PREFILL_TOKENS]),
            kernels.kernel_s,
            np.full(len(kernels.frame), kernels.weight),
        )

    @classmethod
    def of(cls, b: _Bases, target: np.ndarray, weight: float = 1.0) -> TimeRows:
        """The rows of `b` with their measured time (s), each of `weight`."""
        return cls(b.time, b.roofline, b.prompts, np.asarray(target, dtype=float), np.full(len(b.time), weight))


def _replicas(
    df: pd.DataFrame, gpu: GpuSpec, columns: list[str], experts: str
) -> Iterator[tuple[np.ndarray, FeatureWork, np.ndarray, np.ndarray]]:
    """Per (model, GPUs, expert parallel) of the rows: their positions, the work of their replica,
    their feature vectors `columns` (X_COLUMNS or M_COLUMNS) and expert shares `experts`."""
    layout_of = df[["model_id", "num_gpus", "expert_parallel"]].astype({"num_gpus": int, "expert_parallel": int})
    for (model_id, g, ep), idx in layout_of.groupby(["model_id", "num_gpus", "expert_parallel"]).groups.items():
        spec = model_spec(str(model_id))
        work = feature_work(spec, Layout(int(g), ep > 1 and bool(spec.experts)), gpu)
        yield df.index.get_indexer(idx), work, df.loc[idx, columns].to_numpy(), df.loc[idx, experts].to_numpy()


def model_spec(model_id: str) -> ModelSpec:
    """The shipped architecture of a benchmark's model id (KeyError if none ships)."""
    spec = find_model(model_id)
    if spec is None:
        raise KeyError(f"no architecture in oracle data for {model_id!r}")
    return spec


def _terms(base: np.ndarray, expert_parallel: bool) -> np.ndarray:
    """`oracle.derive.time_basis` columns (rows of summed features) as `TIME_TERMS` columns."""
    tb = np.zeros((len(base), len(TIME_TERMS)))
    tb[:, [0, 1, 2, 3, 6, 8, 9, 10]] = base[:, [0, 1, 2, 3, 5, 6, 7, 8]]
    tb[:, 5 if expert_parallel else 4] = base[:, 4]
    return tb


def _bases(df: pd.DataFrame, gpu: GpuSpec, columns: list[str], experts: str) -> _Bases:
    """The bases of the feature vectors `columns` and expert shares `experts` of each row on its
    replica (`num_gpus`, `expert_parallel`)."""
    n = len(df)
    tb, fl, by, st, roof = np.zeros((n, len(TIME_TERMS))), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros((n, 4))
    for rows, work, x, share in _replicas(df, gpu, columns, experts):
        reads = share * work.expert_bytes / (work.gpus * gpu.memory_bandwidth)
        tb[rows] = _terms(x @ time_basis(work, gpu), work.expert_parallel)
        tb[rows, 1] += reads
        if work.fp8_experts:
            tb[rows, 7] = reads
        fl[rows], by[rows] = x @ work.flops, x @ work.bytes + share * work.expert_bytes
        st[rows] = x @ work.state_bytes / (work.gpus * gpu.memory_bandwidth)
        roof[rows] = (*roofline_parts(work, gpu), float(work.fp8_experts))
    return _Bases(tb, fl, by, st, df["num_gpus"].to_numpy(float), roof, _prompt_steps(df, columns))


def _prompt_steps(df: pd.DataFrame, columns: list[str]) -> PromptSteps:
    """The rows' prompt steps: the window's knees (`X_COLUMNS`) or the median-ITL step's tokens."""
    if columns == X_COLUMNS:
        return PromptSteps.of_grid(_with_knees(df)[KNEE_COLUMNS].to_numpy(float))
    return PromptSteps.of_steps(df[M_COLUMNS[F.PREFILL_TOKENS]].to_numpy(float))


def _comm_time(b: _Bases, t: np.ndarray) -> np.ndarray:
    """All-reduce time (s) of each row at the fitted scales."""
    return b.time[:, 4] * t[4] + b.time[:, 5] * t[5]


KNEE_ITERATIONS = 50
"""Most refits of the time constants while the prefill knees move (`fit_time`)."""


def fit_time(rows: TimeRows, held: Mapping[str, float] | None = None, separate: bool = True) -> np.ndarray:
    """The `TIME_TERMS` constants (bounded below by `LOWER`) with which `rows` reproduce their
    measured time (s), relative error, each row of its weight; a term no row exercises (no
    multi-GPU rows, no fp8 experts) stays at its `NEUTRAL` value, one in `held` at that value.
    A prefill step hides the shorter of its weights' read and its prompt GEMMs, whose crossing
    (the knee) moves with the constants: refitted until the knees stop moving. `separate` False
    (no rows see prefill steps on their own): prefill attention and GEMMs are fitted with the
    other FLOPs (their constants returned equal to inv_c)."""
    held = dict(held or {})
    tied = [] if separate else [i for i in (8, 9) if TIME_TERMS[i] not in held]
    t = NEUTRAL.copy()
    for name, value in held.items():
        t[TIME_TERMS.index(name)] = value
    knee = rows.knee(t)
    for _ in range(KNEE_ITERATIONS):
        x = rows.at_knee(knee)
        for i in tied:
            x[:, 0] += x[:, i]
            x[:, i] = 0.0
        free = np.any(x != 0.0, axis=0) & ~np.isin(TIME_TERMS, list(held))
        fixed = x[:, ~free] @ t[~free]
        t[free] = relative_bounded_lsq(
            np.ascontiguousarray(x[:, free]),
            rows.target - fixed,
            lower=LOWER[free],
            weights=rows.weights,
            relative_to=rows.target,
        )
        t[tied] = t[0]
        moved, knee = knee, rows.knee(t)
        if np.allclose(moved, knee, rtol=1e-9, atol=0.0):
            break
    return t


def time_terms(k: HardwareConstants) -> np.ndarray:
    """The `TIME_TERMS` vector of constants `k` (the inverse of how `fit_constants` reads them)."""
    ep_comm = k.comm_scale if k.ep_comm_scale is None else k.ep_comm_scale
    return np.array(
        [
            k.inv_eff_compute,
            k.inv_eff_memory,
            k.step_overhead_s,
            k.seq_overhead_s,
            k.comm_scale,
            ep_comm,
            k.layer_overhead_s,
            k.fp8_expert_read_scale,
            k.attention,
            k.prefill,
            k.mamba_prefill_s,
        ]
    )


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
    windows, medians = TimeRows.of(b, df["time_per_token_s"]), TimeRows.of(bm, df["itl_median_s"])
    rows = TimeRows.concat(windows, medians)
    measured = kernels is not None and len(kernels.frame) > 0
    if measured:
        assert kernels is not None
        rows = TimeRows.concat(rows, TimeRows.of_kernels(kernels))
    # Prefill's fractions apart from the decode GEMMs' where its kernels were measured or one of
    # them is held at another GPU's (the rows then pin the other); otherwise tied to inv_c.
    separate = measured or any(n in (held or {}) for n in ("inv_p", "inv_attn"))
    t = fit_time(rows, held, separate)
    t_pred, itl_pred = windows.predict(t), medians.predict(t)
    k = HardwareConstants(
        inv_eff_compute=float(t[0]),
        inv_eff_attention=float(t[8]) if separate else None,
        inv_eff_prefill=float(t[9]) if separate else None,
        prefill_overlap=True,
        inv_eff_memory=float(t[1]),
        step_overhead_s=float(t[2]),
        seq_overhead_s=float(t[3]),
        static_power_w=gpu.idle_power_w,
        energy_per_flop_j=0.0,
        energy_per_byte_j=0.0,
        source=f"{SOURCE}; {gpu.full_name}",
        comm_scale=float(t[4]),
        ep_comm_scale=float(t[5]),
        layer_overhead_s=float(t[6]),
        fp8_expert_read_scale=float(t[7]),
        mamba_prefill_s=float(t[10]),
    )
    k = fit_energy(df, gpu, k, energy_basis, b, t_pred)
    return k, t_pred, itl_pred, predicted_energy_j(df, gpu, k)


def fit_energy(
    df: pd.DataFrame,
    gpu: GpuSpec,
    k: HardwareConstants,
    energy_basis: str,
    b: _Bases,
    t_pred: np.ndarray,
    weights: np.ndarray | None = None,
) -> HardwareConstants:
    """`k` with its energy terms (`energy_basis`) fitted to the rows' measured energy per output
    token (J), given their bases `b` (`X_COLUMNS`) and the time per output token `k` gives them
    (`t_pred`, s): every GPU's static power over that time (all-reducing apart if the basis says
    so and a row all-reduces), energy per FLOP and per byte; each row of `weights` (default 1)."""
    # Static power is at least idle power (fit the excess over idle), and the serving these rows
    # measured draws at most the power limit per GPU.
    kept = ENERGY_BASES[energy_basis]
    terms = time_terms(k)
    g, comm, dequant = b.gpus, _comm_time(b, terms), b.time[:, 7] * terms[7]
    mamba = b.state * terms[1] + b.time[:, 10] * terms[10]  # a hybrid's Mamba layers: states moved, prefill scans
    # The times with a power of their own (where the basis keeps it and some row spends any), the
    # static power over the rest.
    times = (("comm", comm), ("fp8", dequant), ("mamba", mamba))
    apart = {n: v for n, v in times if n in kept and np.any(v != 0.0)}
    columns = {"static": g * (t_pred - sum(apart.values(), np.zeros(len(t_pred))))}
    columns |= {n: g * v for n, v in apart.items()} | {"flop": b.flops, "byte": b.bytes}
    # A term no row exercises stays out.
    names = ["static", *(n for n in kept if n in columns and np.any(columns[n] != 0.0))]
    basis = np.column_stack([columns[n] for n in names])
    head = gpu.power_limit_w - gpu.idle_power_w
    e = df["energy_per_token_joules"].to_numpy()
    # Nor does any part of a step: static power, the power while all-reducing, and arithmetic or
    # memory traffic at the achieved rates each stay within it.
    per_term = {
        "static": head,
        "comm": head,
        "fp8": head,
        "mamba": head,
        "flop": head * k.inv_eff_compute / gpu.peak_flops,
        "byte": head * k.inv_eff_memory / gpu.memory_bandwidth,
    }
    fitted = relative_bounded_lsq(
        basis,
        e - g * gpu.idle_power_w * t_pred,
        lower=np.zeros(basis.shape[1]),
        weights=weights,
        constraints=(
            np.vstack([basis / (g * t_pred)[:, None], np.eye(len(names))]),
            np.concatenate([np.full(len(t_pred), head), [per_term[n] for n in names]]),
        ),
    )
    excess = dict(zip(names, fitted.tolist(), strict=True))
    return replace(
        k,
        static_power_w=float(gpu.idle_power_w + excess["static"]),
        energy_per_flop_j=float(excess.get("flop", 0.0)),
        energy_per_byte_j=float(excess.get("byte", 0.0)),
        comm_power_w=float(excess["comm"]) if "comm" in excess else None,
        fp8_expert_power_w=float(excess["fp8"]) if "fp8" in excess else None,
        mamba_power_w=float(excess["mamba"]) if "mamba" in excess else None,
    )


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
    prompts = _prompt_steps(df, columns)
    for rows, work, x, share in _replicas(df, gpu, columns, experts):
        reads = expert_reads(work, gpu, k)
        t[rows] = x @ time_coef(work, gpu, k) + (0.0 if reads is None else share * reads.time_s)
        e[rows] = x @ energy_coef(work, gpu, k) + (0.0 if reads is None else share * reads.energy_j)
        o = overlap(work, gpu, k)
        if o is not None:
            below = prompts.take(rows).below(np.full(len(rows), o.weights_s / o.per_token_s))
            t[rows] -= o.per_token_s * below
            e[rows] -= o.per_token_j * below
    return t, e


def calibrate(
    gpu: GpuSpec,
    gpu_label: str,
    data: pd.DataFrame | None = None,
    replay: pd.DataFrame | None = None,
    kernels: KernelRows | None = None,
    held: Mapping[str, float] | None = None,
) -> Calibration:
    """Fit hardware constants for the rows of `gpu_label` (the table's gpu_model, e.g. 'H100') on
    their replayed window features (default: the shipped ones), with measured prefill `kernels`
    beside them (weighted as `kernel_weight` chooses) and time constants `held` at a value."""
    merged = measured_rows(gpu_label, data, replay)
    sensitivity = None
    if kernels is not None:
        sensitivity = prefill_sensitivity(merged, gpu, kernels, held=held)
        weight = kernel_weight(sensitivity)
        kernels = replace(kernels, weight=weight) if weight > 0 else None
    fits = {basis: _held_out(merged, gpu, basis, kernels, held) for basis in ENERGY_BASES}
    rows_by_basis = {basis: fit[0] for basis, fit in fits.items()}
    by_basis = {basis: held_out_errors(r) for basis, r in rows_by_basis.items()}
    basis = min(by_basis, key=lambda b: float(by_basis[b]["energy_per_token_err_pct"].mean()))
    k, t_pred, itl_pred, e_pred = fit_constants(merged, gpu, basis, kernels, held)
    kernel_table = None
    if kernels is not None:
        kernel_table = kernel_errors(k, kernels).assign(held_out_ms=1e3 * fits[basis][1])
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
    return Calibration(
        k,
        prompt,
        rows,
        sigma,
        by_basis[basis],
        basis,
        energy_by_basis,
        rows_by_basis[basis],
        kernel_table,
        0.0 if kernels is None else kernels.weight,
        sensitivity,
        None if held is None else dict(held),
    )


def measured_rows(gpu_label: str, data: pd.DataFrame | None, replay: pd.DataFrame | None) -> pd.DataFrame:
    """The measured rows of one GPU that the screen keeps (`oracle.screen`: what the calibration
    does not fit on), with their replay features (ValueError naming rows without)."""
    df = load_mlenergy() if data is None else data
    df = df[(df["gpu_model"] == gpu_label) & (screen(df) == "")].reset_index(drop=True)
    if df.empty:
        raise ValueError(f"no ML.ENERGY rows for gpu_model {gpu_label!r}")
    feats = _with_knees(load_replay_features() if replay is None else replay)
    feats = feats[
        [*KEY, "prompt_mean_tokens", "prompt_sigma", *X_COLUMNS, *M_COLUMNS, X_EXPERTS, M_EXPERTS, *KNEE_COLUMNS]
    ]
    merged = df.merge(feats, on=KEY, how="inner", validate="one_to_one")
    if merged.empty:
        raise ValueError(f"no replay features for the {gpu_label} rows: rerun python -m sim.validation.calibrate")
    return merged


def _with_knees(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame`, which must hold the replay's prompt-step knees (ValueError saying how to get them)."""
    if any(c not in frame.columns for c in KNEE_COLUMNS):
        raise ValueError(
            "the replay features have no prompt-step knees (s_knee_*, written since the prefill overlap): "
            "rerun python -m sim.validation.calibrate"
        )
    return frame


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
    merged: pd.DataFrame,
    gpu: GpuSpec,
    kernels: KernelRows,
    weights: tuple[float, ...] = (0.0, *KERNEL_WEIGHTS),
    energy_basis: str = "flop+byte",
    held: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """What fitting the constants on measured runs (`merged`) beside the measured prefill
    `kernels` does, per weight of a kernel row (0: the runs alone, prompt GEMMs and attention at
    the other FLOPs' fraction): the fitted prompt-GEMM and prefill-attention constants, mean
    absolute errors (%) of the kernel rows of 128-2,048 tokens fitted and with their model left
    out, and of the runs' time and energy per output token with each model left out (all tasks,
    and the long-prompt Sourcegraph FIM runs alone)."""
    out = []
    big = (kernels.frame["tokens"] >= 128).to_numpy()
    for w in weights:
        fitted_with = replace(kernels, weight=w) if w > 0 else None
        k = fit_constants(merged, gpu, energy_basis, fitted_with, held)[0]
        rows, held_s = _held_out(merged, gpu, energy_basis, fitted_with, held)
        if fitted_with is None:  # a fit that never saw the kernels: the fit is their held-out one
            held_s = kernel_time_s(kernels, k)
        fitted = 100 * (kernel_time_s(kernels, k) / kernels.kernel_s - 1)
        held_out = 100 * (held_s / kernels.kernel_s - 1)
        time_err = (1.0 / rows["time_ratio"] - 1.0).abs() * 100
        energy_err = (1.0 / rows["energy_ratio"] - 1.0).abs() * 100
        fim = (rows["task"] == "sourcegraph-fim").to_numpy()
        out.append(
            {
                "kernel_weight": w,
                "inv_eff_prefill": k.prefill,
                "inv_eff_attention": k.attention,
                "kernels_fitted_mae_pct": np.abs(fitted[big]).mean(),
                "kernels_held_out_mae_pct": np.abs(held_out[big]).mean(),
                "mlenergy_held_out_time_mae_pct": time_err.mean(),
                "mlenergy_held_out_energy_mae_pct": energy_err.mean(),
                "fim_held_out_time_mae_pct": time_err[fim].mean(),
            }
        )
    return pd.DataFrame(out)


def kernel_weight(sensitivity: pd.DataFrame) -> float:
    """The weight of `prefill_sensitivity`'s table with the least sum of the two held-out time
    errors (the kernels' and the runs'): the constants exist for models nobody measured, so the
    weight kept is the one that predicts a left-out model's prefill and serving time best."""
    total = sensitivity["kernels_held_out_mae_pct"] + sensitivity["mlenergy_held_out_time_mae_pct"]
    return float(sensitivity.loc[total.idxmin(), "kernel_weight"])


def kernel_errors(k: HardwareConstants, kernels: KernelRows) -> pd.DataFrame:
    """Per kernel row: its measured kernel time (ms) and what constants `k` give it (ms, error %)."""
    fitted = 1e3 * kernel_time_s(kernels, k)
    return kernels.frame[["model", "tp", "tokens", "kernel_ms"]].assign(
        fitted_ms=fitted, error_pct=100 * (fitted / kernels.frame["kernel_ms"].to_numpy() - 1)
    )


def kernel_time_s(kernels: KernelRows, k: HardwareConstants) -> np.ndarray:
    """The kernel time (s) constants `k` give each kernel row (dense, tensor parallel), its
    prefill overlapped where `k` says so: what the time fit reproduces (`TimeRows`)."""
    rows, t = TimeRows.of_kernels(kernels), time_terms(k)
    return rows.predict(t) if k.prefill_overlap else rows.time @ t


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
