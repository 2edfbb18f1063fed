"""Constants of a measured configuration: its GPU family's, refined on its own runs.

A GPU family's constants (`oracle.hwcal`) are fitted on every model measured on that GPU, so that
they carry to models nobody measured; the leave-one-model-out error of the calibration report is
what they are worth there. A configuration that was measured (a model on a replica layout of the
GPU) can do better with its own runs: its kernels may be faster or slower than the family's
average, its overheads longer, its GPUs may wait more or less. `refine` scales groups of the
family's time constants by multipliers fitted on the configuration's runs (time per output token
and median ITL): its work (compute and memory efficiencies, the fp8 experts' dequantisation and the
prefill fractions together, so that the prefill knee stays where the family puts it and the fit
stays linear), its per-sequence overhead, its per-step and per-layer overheads, its all-reduces,
and a hybrid's Mamba prefill. It then refits energy terms (`ENERGY_BASIS`) on the refined times.
The shipped oracle of each measured configuration on its measured GPU is derived with them
(`oracle.build`); every other oracle keeps its family's constants.

The refinement is judged by leaving each run of a configuration out in turn (`Refinement.checks`):
how it carries to a batch cap or task that was not measured on that configuration. Carrying a
model's refinement to a layout of it that nobody measured is not done: `Refinement.transfer`
refines each model on its other measured layouts and predicts the one left out, and with the runs
shipped that is better than the family's constants on some layouts and much worse on others (the
multipliers of a layout trade off against one another).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from oracle import hwcal
from oracle.arch import GpuSpec
from oracle.derive import HardwareConstants, Layout
from oracle.regress import relative_bounded_lsq

GROUPS: dict[str, tuple[int, ...]] = {
    "work": (0, 1, 7, 8, 9),  # inv_c, inv_m, fp8_experts, inv_attn, inv_p
    "sequence": (3,),  # t_seq
    "step": (2, 6),  # t_step, t_layer
    "comm": (4, 5),  # comm, ep_comm
    "mamba": (10,),  # t_mamba: a hybrid's prefill per Mamba layer
}
"""The `hwcal.TIME_TERMS` each multiplier scales, by name. The overheads apart, not together: the
runs left out of their configuration's refinement come out closer (the calibration reports of
commits 929aff1, three groups, and 37a7a28, four and `MIN_RUNS` 5: H100 energy per output token
8.6 → 7.2 %, time 7.3 → 6.7 %). A hybrid's Mamba prefill apart from its per-sequence overhead, not
with it: the Nemotrons' chat runs prefill far more than their GPQA runs, and with one multiplier for
both their H100 runs left out came out at 9.0 and 10.6 % energy, 4.4 and 3.6 % time per output
token; with two, 5.6 and 8.7 %, 1.8 and 2.2 % (every H100 configuration: energy 6.3 → 5.9 %, time
4.8 → 4.5 %). Only hybrids exercise it; every other configuration keeps its multiplier at 1."""
BOUNDS = (1.0 / 3.0, 3.0)
"""A configuration's multipliers stay within these: its engine may be slower or faster than its
GPU family's average, not by more (and no achieved fraction of peak above 1: `hwcal.LOWER`)."""
ENERGY_BASIS = "flop+byte+comm+fp8+mamba"
"""The energy terms a configuration's runs refit (`hwcal.ENERGY_BASES`): of the bases tried, the one
with the least error on runs left out of their configuration's refinement, on H100 and B200 alike.
Before the hybrids: energy per output token H100 5.7 %, B200 5.8 %, where flop+byte+comm gives 5.9
and 5.9 % (the calibration reports of commits 8670360 and 2805bb8) and flop+byte+fp8 7.7 and 6.8 %.
With them, the Mamba layers' own power ("mamba", which only hybrids exercise: while their states
move and while a prefill scans) takes B200 from 5.6 to 5.4 % and H100 from 6.1 to 5.3 % (this set to
flop+byte+comm+fp8 and back, `python -m oracle.build --out`)."""
ROBUST_PASSES = 1
"""Refits of a configuration's time and energy with Huber weights (`_robust_weights`): with one,
its runs left out come out closer than with plain least squares (the calibration reports of
commits 37a7a28 and 1b84e0c: H100 energy per output token 7.2 → 7.1 %, time 6.7 → 6.5 %; B200
13.6 → 13.2 %, 16.0 → 15.8 %)."""
ROBUST_SCALE = 2.0
"""Huber's threshold, in medians of a fit's absolute relative residuals."""
RATIO_COLUMNS = ["model", "config_id", "task", "time_ratio", "energy_ratio"]
"""`Refinement.held_out_rows`' columns (`model`: the configuration)."""
MIN_RUNS = 4
"""Fewest runs of a configuration for constants of its own (up to four time multipliers, five for a
hybrid, each run giving two times, and four bounded energy terms); with fewer it keeps its family's. Every refined
configuration is checked with one run left out: at 4 (gpt-oss-120b on one H100, the one H100
configuration it adds to those of 5 or more) its runs left out come out at 4.1 % energy and 2.2 %
time per output token, against 23.2 and 8.8 % with the family's constants (the calibration report;
with 3 runs a run left out would leave fewer energies than energy terms)."""


@dataclass(frozen=True)
class Refinement:
    """A GPU's refined configurations: the constants of each (by oracle name, e.g.
    'llama-3.1-70b_h100_tp4'), and per configuration its runs, multipliers of the family's time
    constants (`GROUPS`) and mean absolute errors (%) of energy and time per output token with
    the family's constants, refined, and refined without the run (`checks`); `transfer`'s table
    (`layout_transfer`); and per run its measured time and energy per output token over what its
    configuration refined without it predicts (`held_out_rows`, `oracle.errors.COLUMNS` less
    `gpu`, the configuration as `model`: what a refined oracle's bands draw from)."""

    constants: Mapping[str, HardwareConstants]
    checks: pd.DataFrame
    transfer: pd.DataFrame
    held_out_rows: pd.DataFrame


def configurations(rows: pd.DataFrame, gpu: GpuSpec) -> pd.Series:
    """Each measured run's configuration: the name of its model's oracle on its replica layout of
    `gpu` (KeyError for a model with no shipped architecture)."""
    names = {}
    for model_id, g, ep in rows[["model_id", "num_gpus", "expert_parallel"]].drop_duplicates().itertuples(index=False):
        spec = hwcal.model_spec(str(model_id))
        names[(model_id, g, ep)] = Layout(int(g), int(ep) > 1 and bool(spec.experts)).oracle_name(spec, gpu)
    keys = zip(rows["model_id"], rows["num_gpus"], rows["expert_parallel"], strict=True)
    return pd.Series([names[key] for key in keys], index=rows.index, name="configuration")


def scaled(
    k: HardwareConstants, work: float, sequence: float, step: float, comm: float, mamba: float = 1.0
) -> HardwareConstants:
    """`k` with the time of its work, its per-sequence overhead, its per-step and per-layer
    overheads, its all-reduces and a hybrid's Mamba prefill scaled (`GROUPS`)."""
    return replace(
        k,
        inv_eff_compute=k.inv_eff_compute * work,
        inv_eff_memory=k.inv_eff_memory * work,
        fp8_expert_read_scale=k.fp8_expert_read_scale * work,
        inv_eff_attention=None if k.inv_eff_attention is None else k.inv_eff_attention * work,
        inv_eff_prefill=None if k.inv_eff_prefill is None else k.inv_eff_prefill * work,
        step_overhead_s=k.step_overhead_s * step,
        seq_overhead_s=k.seq_overhead_s * sequence,
        mamba_prefill_s=k.mamba_prefill_s * mamba,
        layer_overhead_s=k.layer_overhead_s * step,
        comm_scale=k.comm_scale * comm,
        ep_comm_scale=None if k.ep_comm_scale is None else k.ep_comm_scale * comm,
    )


def _group_times(rows: pd.DataFrame, gpu: GpuSpec, k: HardwareConstants) -> np.ndarray:
    """Per run, the time (s) of each `GROUPS` at the constants `k`: its time per output token's
    (the first len(rows) rows) and its median-ITL step's (the next len(rows)). Scaling a group's
    constants scales its column: the prefill knee is a ratio of work terms, so it does not move."""
    t = hwcal.time_terms(k)
    parts = []
    for columns, experts, target in (
        (hwcal.X_COLUMNS, hwcal.X_EXPERTS, "time_per_token_s"),
        (hwcal.M_COLUMNS, hwcal.M_EXPERTS, "itl_median_s"),
    ):
        tr = hwcal.TimeRows.of(hwcal._bases(rows, gpu, columns, experts), rows[target])
        x = tr.at_knee(tr.knee(t)) * t
        parts.append(np.column_stack([x[:, list(i)].sum(axis=1) for i in GROUPS.values()]))
    return np.vstack(parts)


def refine(
    rows: pd.DataFrame, gpu: GpuSpec, k: HardwareConstants, energy_basis: str = ENERGY_BASIS
) -> tuple[HardwareConstants, dict[str, float]]:
    """The constants of the configuration whose measured runs (merged with their replay features,
    as `hwcal.measured_rows` gives them) are `rows`: the family's `k` with its `GROUPS` scaled to
    fit their time per output token and median ITL (relative error), and the energy terms of
    `energy_basis` refitted on them; with the multipliers. Each fit is refitted `ROBUST_PASSES`
    times with Huber weights (`_robust_weights`), so that one run out of line with the others
    (such as Qwen3-14B's GPQA run at cap 64 on H100) does not pull the rest.
    A group no run exercises (all-reduces of a one-GPU replica) keeps 1."""
    x = _group_times(rows, gpu, k)
    y = np.concatenate([rows["time_per_token_s"].to_numpy(), rows["itl_median_s"].to_numpy()])
    used = np.any(x > 0.0, axis=0)
    lo, hi = np.full(len(GROUPS), BOUNDS[0]), np.full(len(GROUPS), BOUNDS[1])
    work = list(GROUPS).index("work")
    fractions = [f for f in hwcal.time_terms(k)[[0, 1, 8, 9]] if f > 0.0]
    lo[work] = max(lo[work], 1.0 / min(fractions))  # no engine beats the datasheet
    m = np.ones(len(GROUPS))
    n = int(used.sum())
    w = None
    for _ in range(1 + ROBUST_PASSES):
        m[used] = relative_bounded_lsq(x[:, used], y, lower=lo[used], constraints=(np.eye(n), hi[used]), weights=w)
        w = _robust_weights(x @ m / y - 1.0)
    scales = dict(zip(GROUPS, m.tolist(), strict=True))
    refined = scaled(k, **scales)
    b = hwcal._bases(rows, gpu, hwcal.X_COLUMNS, hwcal.X_EXPERTS)
    t_pred = hwcal.predicted_time_s(rows, gpu, refined, hwcal.X_COLUMNS)
    e = rows["energy_per_token_joules"].to_numpy()
    k_e, w = refined, None
    for _ in range(1 + ROBUST_PASSES):
        k_e = hwcal.fit_energy(rows, gpu, refined, energy_basis, b, t_pred, weights=w)
        w = _robust_weights(hwcal.predicted_energy_j(rows, gpu, k_e) / e - 1.0)
    refined = k_e
    runs = len(rows)
    return replace(refined, source=f"{k.source}; refined on this configuration's {runs} runs (oracle.refine)"), scales


def _robust_weights(residuals: np.ndarray) -> np.ndarray:
    """Huber weights of relative residuals: 1 within `ROBUST_SCALE` × their median absolute value,
    falling as 1/|r| beyond (a run far off the others pulls the fit no more than a bound amount)."""
    r = np.abs(residuals)
    c = ROBUST_SCALE * max(float(np.median(r)), 1e-6)
    return np.sqrt(np.minimum(1.0, c / np.maximum(r, 1e-12)))


def refine_all(rows: pd.DataFrame, gpu: GpuSpec, k: HardwareConstants, energy_basis: str = ENERGY_BASIS) -> Refinement:
    """Every configuration of the measured `rows` (merged, of one GPU) with at least `MIN_RUNS`
    runs, refined from the family's constants `k`, and the checks (`Refinement`)."""
    config = configurations(rows, gpu)
    constants: dict[str, HardwareConstants] = {}
    checks, ratios = [], []
    for name, idx in config.groupby(config, sort=True).groups.items():
        part = rows.loc[idx].reset_index(drop=True)
        if len(part) < MIN_RUNS:
            continue
        refined, scales = refine(part, gpu, k, energy_basis)
        constants[str(name)] = refined
        held = _without_each(part, gpu, k, energy_basis)
        time_ratio, energy_ratio = _ratios(part, gpu, held)
        ratios.append(
            pd.DataFrame(
                {
                    "model": str(name),
                    "config_id": part["config_id"],
                    "task": part["task"],
                    "time_ratio": time_ratio,
                    "energy_ratio": energy_ratio,
                }
            )
        )
        checks.append(
            {
                "configuration": str(name),
                "runs": len(part),
                **{key: round(v, 3) for key, v in scales.items()},
                **_mae("family", part, gpu, k),
                **_mae("refined", part, gpu, refined),
                **_mae("held_out", part, gpu, held),
            }
        )
    held_out = pd.concat(ratios, ignore_index=True) if ratios else pd.DataFrame(columns=RATIO_COLUMNS)
    return Refinement(constants, pd.DataFrame(checks), layout_transfer(rows, gpu, k, energy_basis), held_out)


def layout_transfer(
    rows: pd.DataFrame, gpu: GpuSpec, k: HardwareConstants, energy_basis: str = ENERGY_BASIS
) -> pd.DataFrame:
    """Each measured configuration of a model measured on other layouts of `gpu` too (with at
    least `MIN_RUNS` runs there): its runs' mean absolute errors (%) of energy and time per output
    token with the family's constants and with the model refined on its other layouts instead."""
    config = configurations(rows, gpu)
    model = rows["model_id"].map(lambda m: hwcal.model_spec(str(m)).name)
    out = []
    for name in sorted(config.unique()):
        test = config == name
        train = (model == model[test].iloc[0]) & ~test
        if train.sum() < MIN_RUNS:
            continue
        carried, _ = refine(rows[train].reset_index(drop=True), gpu, k, energy_basis)
        part = rows[test].reset_index(drop=True)
        trained = ", ".join(sorted(config[train].unique()))
        row = {"configuration": str(name), "runs": len(part), "refined_on": trained}
        out.append(row | _mae("family", part, gpu, k) | _mae("carried", part, gpu, carried))
    return pd.DataFrame(out)


def _without_each(part: pd.DataFrame, gpu: GpuSpec, k: HardwareConstants, energy_basis: str) -> list[HardwareConstants]:
    """Per run of a configuration, its constants refined on its other runs."""
    return [refine(part.drop(index=i).reset_index(drop=True), gpu, k, energy_basis)[0] for i in range(len(part))]


def _mae(
    label: str, part: pd.DataFrame, gpu: GpuSpec, k: HardwareConstants | list[HardwareConstants]
) -> dict[str, float]:
    """Mean absolute errors (%) of the runs' energy and time per output token with constants `k`
    (one set, or one a run)."""
    time_ratio, energy_ratio = _ratios(part, gpu, k)
    return {
        f"{label}_energy_mae_pct": 100 * float(np.mean(np.abs(1.0 / energy_ratio - 1.0))),
        f"{label}_time_mae_pct": 100 * float(np.mean(np.abs(1.0 / time_ratio - 1.0))),
    }


def _ratios(
    part: pd.DataFrame, gpu: GpuSpec, k: HardwareConstants | list[HardwareConstants]
) -> tuple[np.ndarray, np.ndarray]:
    """The runs' measured over predicted time and energy per output token with constants `k`
    (one set, all runs at once; or one a run)."""
    if isinstance(k, list):
        t, e = np.zeros(len(part)), np.zeros(len(part))
        for i, ki in enumerate(k):
            one = part.iloc[[i]].reset_index(drop=True)
            t[i] = hwcal.predicted_time_s(one, gpu, ki, hwcal.X_COLUMNS)[0]
            e[i] = hwcal.predicted_energy_j(one, gpu, ki)[0]
    else:
        t = hwcal.predicted_time_s(part, gpu, k, hwcal.X_COLUMNS)
        e = hwcal.predicted_energy_j(part, gpu, k)
    return part["time_per_token_s"].to_numpy() / t, part["energy_per_token_joules"].to_numpy() / e
