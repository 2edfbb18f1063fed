"""How far a derived oracle is off on a model nobody measured: the calibration's leave-one-model-out
errors, row by row, and the bands they give.

`python -m oracle.build` writes `data/held_out_errors.csv`: for every ML.ENERGY run the shipped
constants were fitted on, its measured time and energy per output token over the prediction of
constants fitted without its model (`oracle.hwcal.held_out_rows`; the energy terms the calibration
kept). The simulator's calibration band (`sim.planning.uncertainty`) replays a trace with an oracle's step
times and energies scaled by ratios drawn from these rows: a model first (each equally likely,
whatever its number of runs), then one of its runs, so a time and an energy error that go together
are drawn together. A band meant to hold a `level` share of what a model nobody measured does is
taken at the wider `corrected_level` of the errors of m models: the finite-sample correction of
conformal prediction, level·(m+1)/m (a new model is one more draw from where the m came from, so
its rank among m + 1 is uniform), applied to the central level. `coverage` checks that the band
means what it says: each model left out in turn, the share of its runs whose measured energy per
token lies inside the band drawn from the other models' errors.

An oracle refined on its own configuration's runs (`oracle.refine`, `Oracle.refined`) draws from
its GPU's refined configurations instead (their calibration label `refined_label`, e.g.
'H100_refined'): each run's ratios to its configuration refined without it, configurations each equally
likely, so the band says how the refinement carries to a batch cap or task not measured on it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from importlib import resources

import numpy as np
import pandas as pd

from oracle import arch
from oracle.model import Oracle, Overlap

HELD_OUT_FILE = "data/held_out_errors.csv"
REFINED = "_refined"  # the suffix of a GPU label whose errors are its refined configurations' (`refined_label`)
COLUMNS = ["gpu", "model", "config_id", "task", "time_ratio", "energy_ratio"]


class NoHeldOutErrorsError(ValueError):
    """No calibration errors apply to an oracle (a GPU no calibration covers)."""


@dataclass(frozen=True)
class HeldOutErrors:
    """Leave-one-model-out ratios (measured / predicted) of time and energy per output token, one
    row per run (`COLUMNS`), of one calibration (`gpu`: the measured GPU label)."""

    gpu: str
    rows: pd.DataFrame

    def __post_init__(self) -> None:
        if self.rows.empty:
            raise NoHeldOutErrorsError(f"no held-out errors for {self.gpu}")
        ratios = self.rows[["time_ratio", "energy_ratio"]].to_numpy()
        if not np.all(np.isfinite(ratios) & (ratios > 0)):
            raise ValueError(f"held-out ratios of {self.gpu} must be finite and > 0")

    @property
    def refined(self) -> bool:
        """Whether these are the errors of a GPU's refined configurations (`refined_label`)."""
        return self.gpu.endswith(REFINED)

    @property
    def models(self) -> int:
        """Models the errors come from."""
        return int(self.rows["model"].nunique())

    def describe(self) -> str:
        """Where the errors come from, in words."""
        if self.refined:
            return (
                f"leave-one-run-out errors of {len(self.rows)} {self.gpu.removesuffix(REFINED)} runs of "
                f"{self.models} configurations refined on their own runs (ML.ENERGY v3, {HELD_OUT_FILE})"
            )
        return (
            f"leave-one-model-out errors of {len(self.rows)} {self.gpu} runs of {self.models} models "
            f"(ML.ENERGY v3, {HELD_OUT_FILE})"
        )

    @functools.cached_property
    def _weights(self) -> np.ndarray:
        size = self.rows.groupby("model")["model"].transform("size").to_numpy(float)
        weights = 1.0 / (size * self.models)
        weights.flags.writeable = False
        return weights

    def weights(self) -> np.ndarray:
        """Each run's probability: models equally likely, then their runs (computed once: every
        replay of the bands draws from it)."""
        return self._weights

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """`n` (time ratio, energy ratio) pairs: a model, then one of its runs."""
        i = rng.choice(len(self.rows), size=n, p=self.weights())
        return self.rows["time_ratio"].to_numpy()[i], self.rows["energy_ratio"].to_numpy()[i]

    @classmethod
    def of(cls, gpu: str, table: pd.DataFrame | None = None) -> HeldOutErrors:
        """The errors of calibration `gpu` ('H100', 'B200') in `table` (default: the shipped ones)."""
        df = load_held_out() if table is None else table
        return cls(gpu, df[df["gpu"] == gpu].reset_index(drop=True))

    def without(self, model: str) -> HeldOutErrors:
        """The errors of the other models."""
        return HeldOutErrors(self.gpu, self.rows[self.rows["model"] != model].reset_index(drop=True))

    def interval(self, column: str, level: float) -> tuple[float, float]:
        """The central `level` interval of the ratios in `column` ('time_ratio' or
        'energy_ratio'), models weighted equally."""
        values = self.rows[column].to_numpy()
        order = np.argsort(values)
        cdf = np.cumsum(self.weights()[order])
        tail = (1.0 - level) / 2.0
        pick = np.searchsorted(cdf, [tail, 1.0 - tail])
        return float(values[order][pick[0]]), float(values[order][min(pick[1], len(values) - 1)])


def corrected_level(level: float, models: int) -> float:
    """The central share of `models` models' errors to span so that a band holds about `level` of
    a new model's: level·(m+1)/m, at most 1."""
    if models < 1:
        raise ValueError(f"models must be ≥ 1, got {models}")
    return min(level * (models + 1) / models, 1.0)


def load_held_out(path: str | None = None) -> pd.DataFrame:
    """The shipped per-run held-out errors of every calibration (or those of `path`)."""
    source = resources.files("oracle").joinpath(HELD_OUT_FILE) if path is None else path
    with open(str(source)) as f:
        df = pd.read_csv(f)
    missing = sorted(set(COLUMNS) - set(df.columns))
    if missing:
        raise ValueError(f"{source}: columns {missing} missing; rerun python -m oracle.build")
    return df[COLUMNS]


def refined_label(label: str) -> str:
    """The calibration label of a GPU's refined configurations ('H100' → 'H100_refined')."""
    return f"{label}{REFINED}"


def calibration_of(oracle: Oracle) -> str:
    """The measured GPU label whose calibration an oracle's GPU rests on (`arch.CALIBRATED_ON`), the
    GPU found as `oracle.clocks.clock_spec` finds it (`arch.find_gpu`); `refined_label` of it for
    an oracle refined on its own runs. NoHeldOutErrorsError for a GPU no calibration covers."""
    found = arch.find_gpu(oracle.gpu)
    if found is not None and found.name in arch.CALIBRATED_ON:
        label = arch.CALIBRATED_ON[found.name]
        return refined_label(label) if oracle.refined else label
    known = ", ".join(arch.load_gpu(n).full_name for n in arch.gpu_names() if n in arch.CALIBRATED_ON)
    raise NoHeldOutErrorsError(
        f"oracle {oracle.name!r} runs on {oracle.gpu!r}, which no calibration covers (known: {known})"
    )


def held_out_for(oracle: Oracle, table: pd.DataFrame | None = None) -> HeldOutErrors:
    """The held-out errors of the calibration `oracle`'s GPU rests on."""
    return HeldOutErrors.of(calibration_of(oracle), table)


def scaled(oracle: Oracle, time_scale: float, energy_scale: float) -> Oracle:
    """The oracle with every step's time × `time_scale` and energy × `energy_scale` (its expert
    reads and prefill overlap included; idle power, a measured figure, unchanged)."""
    if not (time_scale > 0 and energy_scale > 0 and np.isfinite(time_scale) and np.isfinite(energy_scale)):
        raise ValueError(f"scales must be finite and > 0, got time {time_scale}, energy {energy_scale}")
    x, o = oracle.experts, oracle.overlap
    experts = None if x is None else replace(x, time_s=x.time_s * time_scale, energy_j=x.energy_j * energy_scale)
    hide = None
    if o is not None:
        t, e = time_scale, energy_scale
        hide = Overlap(o.weights_s * t, o.per_token_s * t, o.weights_j * e, o.per_token_j * e)
    return replace(
        oracle,
        time_coef_s=oracle.time_coef_s * time_scale,
        energy_coef_j=oracle.energy_coef_j * energy_scale,
        experts=experts,
        overlap=hide,
    )


def coverage(errors: HeldOutErrors, level: float = 0.9) -> pd.DataFrame:
    """Each model left out in turn: the share of its runs whose measured energy (and time) per
    output token lies inside the `level` band of the other models' held-out ratios (their central
    `corrected_level`). One row per model: runs, energy_covered, time_covered (shares)."""
    out = {}
    for model in errors.rows["model"].unique():
        own = errors.rows[errors.rows["model"] == model]
        others = errors.without(str(model))
        shares = {}
        for column in ("energy_ratio", "time_ratio"):
            lo, hi = others.interval(column, corrected_level(level, others.models))
            shares[column.replace("_ratio", "_covered")] = float(own[column].between(lo, hi).mean())
        out[str(model)] = {"runs": len(own), **shares}
    return pd.DataFrame(out).T.astype({"runs": int})


@dataclass(frozen=True)
class BandCheck:
    """What a `level` band of one calibration's errors spans and how often it holds a model left
    out: the share of the errors spanned (`corrected_level`), the measured / predicted intervals
    of energy and time per output token, and the shares of all runs inside (`per_model`:
    `coverage`)."""

    spanned: float
    energy_interval: tuple[float, float]
    time_interval: tuple[float, float]
    energy_covered: float
    time_covered: float
    per_model: pd.DataFrame


def band_check(errors: HeldOutErrors, level: float = 0.9) -> BandCheck:
    """The band of `errors` at `level` and its leave-one-model-out coverage, runs weighted alike."""
    cov = coverage(errors, level)
    runs = cov["runs"].to_numpy()
    spanned = corrected_level(level, errors.models)
    return BandCheck(
        spanned,
        errors.interval("energy_ratio", spanned),
        errors.interval("time_ratio", spanned),
        float((cov["energy_covered"] * runs).sum() / runs.sum()),
        float((cov["time_covered"] * runs).sum() / runs.sum()),
        cov,
    )
