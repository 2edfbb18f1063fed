"""The oracle's pictures: tokens-per-joule map (SweetSpot Fig. 3) and energy per output token curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from oracle.model import Oracle  # noqa: E402

GRID = tuple(2**k for k in range(6, 13))  # 64 … 4096 tokens


def efficiency_map(oracle: Oracle, batch: int = 1, grid: tuple[int, ...] = GRID) -> np.ndarray:
    """Output tokens per joule over (n_in rows, n_out columns) of `grid`."""
    n_in, n_out = np.meshgrid(grid, grid, indexing="ij")
    return oracle.efficiency(n_in, n_out, batch)


def plot_efficiency_heatmap(oracle: Oracle, path: str | Path, batch: int = 1) -> Path:
    """Heatmap of tokens per joule over n_in × n_out ∈ {64 … 4096}; best and worst annotated."""
    eff = efficiency_map(oracle, batch)
    fig, ax = plt.subplots(figsize=(7, 5.5))
    im = ax.imshow(eff, origin="lower", cmap="viridis")
    ax.set_xticks(range(len(GRID)), GRID)
    ax.set_yticks(range(len(GRID)), GRID)
    ax.set_xlabel("output tokens n_out")
    ax.set_ylabel("input tokens n_in")
    for i in range(len(GRID)):
        for j in range(len(GRID)):
            light = eff[i, j] > (eff.min() + eff.max()) / 2
            ax.text(j, i, f"{eff[i, j]:.3g}", ha="center", va="center", fontsize=7, color="k" if light else "w")
    fig.colorbar(im, ax=ax, label="output tokens per joule")
    ax.set_title(f"{oracle.name}: tokens/J at batch {batch} (best/worst = {eff.max() / eff.min():.1f}x)")
    return _save(fig, path)


def plot_energy_per_token(
    oracle: Oracle, path: str | Path, n_ins: tuple[int, ...] = (128, 512, 1024, 2048, 4096), batch: int = 1
) -> Path:
    """Energy per output token (J) against n_out for several n_in, with n_out* marked. The curves
    run to 2× past the calibrated n_out range on both sides: that part is dashed on a grey band,
    and a curve whose n_in (or the batch) lies outside the calibrated range is dashed throughout."""
    lo, hi = oracle.calibrated.n_out
    n_out = np.unique(np.r_[np.geomspace(max(lo / 2, 1.0), hi * 2, 200), lo, hi])  # both bounds on both parts
    inside, outside = (n_out >= lo) & (n_out <= hi), (n_out <= lo) | (n_out >= hi)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for edge in ((n_out[0], lo), (hi, n_out[-1])):
        ax.axvspan(*edge, color="0.9", zorder=0)
    for n_in in n_ins:
        known = _calibrated(oracle.calibrated.n_in, n_in) and _calibrated(oracle.calibrated.batch, batch)
        e = oracle.energy(n_in, n_out, batch) / n_out
        (line,) = ax.plot(np.where(inside, n_out, np.nan), e, ls="-" if known else "--",
                          label=f"n_in={n_in}" + ("" if known else " (n_in outside the calibrated range)"))  # fmt: skip
        ax.plot(np.where(outside, n_out, np.nan), e, ls="--", color=line.get_color())
        star = float(oracle.optimal_output(n_in, batch))
        if np.isfinite(star):
            ax.plot(star, float(oracle.energy(n_in, star, batch) / star), "o", color=line.get_color(),
                    fillstyle="full" if known and lo <= star <= hi else "none")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(f"output tokens n_out (grey, dashed: extrapolated, outside the calibrated [{lo:g}, {hi:g}])")
    ax.set_ylabel("energy per output token (J)")
    ax.set_title(f"{oracle.name}: energy per output token at batch {batch} (dots: n_out*)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def _calibrated(bounds: tuple[float, float], value: float) -> bool:
    return bounds[0] <= value <= bounds[1]


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
