"""Seeded options shared by every trace: model filter, window, sampling, rate scaling, cap."""

from __future__ import annotations

import numpy as np
import pandas as pd

from traces.config import TraceConfig


def apply_options(frame: pd.DataFrame, cfg: TraceConfig, rng: np.random.Generator) -> tuple[pd.DataFrame, list[str]]:
    """Apply `cfg`'s options in their documented order to a sorted, 0-based trace."""
    notes: list[str] = []
    for step in (_model, _window, _sample, _scale, _cap):
        frame = step(frame, cfg, rng, notes)
    if len(frame) == 0:
        raise ValueError(f"trace {cfg.name!r}: no requests left after the options ({'; '.join(notes)})")
    t = frame["arrival_s"].to_numpy()
    if t[0] != 0.0:
        frame = frame.assign(arrival_s=t - t[0])
    return frame.reset_index(drop=True), notes


def _model(frame, cfg, rng, notes):
    if cfg.model is None:
        return frame
    if "model" not in frame.columns:
        raise ValueError(
            f"trace config: model={cfg.model!r} is invalid for trace {cfg.name!r}, which has no model column"
        )
    kept = frame.loc[frame["model"].to_numpy() == cfg.model]
    notes.append(f"model={cfg.model}: kept {len(kept):,} of {len(frame):,}")
    return kept


def _window(frame, cfg, rng, notes):
    if cfg.start_s == 0 and cfg.duration_s is None:
        return frame
    t = frame["arrival_s"].to_numpy()
    end = np.inf if cfg.duration_s is None else cfg.start_s + cfg.duration_s
    lo, hi = np.searchsorted(t, [cfg.start_s, end], side="left")
    notes.append(f"window [{cfg.start_s:g}, {end:g}) s: kept {hi - lo:,} of {len(frame):,}")
    return frame.iloc[lo:hi]


def _sample(frame, cfg, rng, notes):
    if cfg.sample_frac == 1.0:
        return frame
    keep = rng.random(len(frame)) < cfg.sample_frac
    notes.append(f"sampled {cfg.sample_frac:g} (seed {cfg.seed}): kept {int(keep.sum()):,} of {len(frame):,}")
    return frame.loc[keep]


def _scale(frame, cfg, rng, notes):
    if cfg.rate_scale == 1.0:
        return frame
    notes.append(f"arrival rate x{cfg.rate_scale:g} (inter-arrival times / {cfg.rate_scale:g})")
    return frame.assign(arrival_s=frame["arrival_s"].to_numpy() / cfg.rate_scale)


def _cap(frame, cfg, rng, notes):
    if cfg.max_requests is None or len(frame) <= cfg.max_requests:
        return frame
    notes.append(f"first {cfg.max_requests:,} of {len(frame):,} requests")
    return frame.iloc[: cfg.max_requests]
