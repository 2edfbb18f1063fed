"""The calibration loop: every grid point, warmed up, measured `repeats` times, one row per repeat.

Each row is appended to the table as soon as it is measured, so a crash loses at most the point in
flight; a rerun reads the table and skips every (model, backend, n_in, n_out, batch_size,
num_requests, repeat, clock_mhz, power_limit_w) already there. A run whose output lengths differ
from n_out raises `OutputLengthError`: it never becomes a row. A window shorter than the meter's
`min_window_s` is lengthened by running the same requests again inside it; the row holds the
per-run energy and time (window totals / `iterations`) and `window_short` if it stayed too short.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tqdm import tqdm

from calibrate.backends.base import Backend, EngineLimits, GenerationResult, check_lengths
from calibrate.gpu_settings import GpuSettingsController
from calibrate.grid import GpuSettings, Grid, GridPoint
from calibrate.lock import table_lock
from calibrate.meter import EnergyMeter, Measurement
from calibrate.nvml import NvmlError
from calibrate.prompts import make_prompts, point_rng
from calibrate.signals import sigterm_raises
from calibrate.table import MeasurementTableError, append_row, read_table, set_aside_partial_lines
from sim.console.progress import progress_bar

KEY_COLUMNS = (
    "model",
    "backend",
    "n_in",
    "n_out",
    "batch_size",
    "num_requests",
    "repeat",
    "clock_mhz",
    "power_limit_w",
)
Key = tuple[Any, ...]


@dataclass(frozen=True)
class SweepOptions:
    """`model` is the table's model label; `out_path` the CSV table (appended to, resumed from)."""

    model: str
    out_path: Path
    seed: int = 0
    max_window_repeats: int = 1000
    progress: bool = True


@dataclass(frozen=True)
class SweepSummary:
    rows_written: int
    rows_skipped: int
    energy_measured: bool
    out_path: Path


def make_key(model: str, backend: str, point: GridPoint, repeat: int) -> Key:
    s = point.settings
    return (
        model,
        backend,
        point.n_in,
        point.n_out,
        point.batch_size,
        point.num_requests,
        repeat,
        s.clock_mhz,
        s.power_limit_w,
    )


def done_keys(path: Path, measures_energy: bool) -> set[Key]:
    """Keys of the rows already in the table at `path` (empty if it does not exist yet)."""
    if not path.exists() or path.stat().st_size == 0:
        return set()
    df = read_table(path, require_energy=False)
    missing = [c for c in KEY_COLUMNS if c not in df.columns]
    if missing:
        raise MeasurementTableError(
            f"{path} lacks column(s) {missing}: it was not written by calibrate.measure; pass a new out=FILE"
        )
    _check_energy_kind(path, df["energy_j"].isna().to_numpy(), measures_energy)
    return {_row_key(row) for row in df[list(KEY_COLUMNS)].itertuples(index=False)}


def _check_energy_kind(path: Path, empty: Any, measures_energy: bool) -> None:
    if measures_energy and empty.any():
        raise MeasurementTableError(f"{path} holds timing-only rows (meter=none); write energy rows to a new out=FILE")
    if not measures_energy and not empty.all():
        raise MeasurementTableError(f"{path} holds energy rows; write timing-only (meter=none) rows to a new out=FILE")


def _row_key(row: tuple) -> Key:
    model, backend, n_in, n_out, batch, num, repeat, clock, power = row
    return (
        str(model),
        str(backend),
        int(n_in),
        int(n_out),
        int(batch),
        int(num),
        int(repeat),
        _optional(clock, int),
        _optional(power, float),
    )


def _optional(value: Any, kind: Callable[[Any], Any]) -> Any:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else kind(value)


class Sweep:
    """Runs a grid through a backend under a meter, optionally under DVFS / power-cap settings."""

    def __init__(
        self,
        grid: Grid,
        backend: Backend,
        meter: EnergyMeter,
        options: SweepOptions,
        controller: GpuSettingsController | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.grid, self.backend, self.meter, self.options = grid, backend, meter, options
        self.controller, self._clock = controller, clock
        self._done: set[Key] = set()
        self._written = 0

    def run(self) -> SweepSummary:
        """Measure every point not yet in the table; restore GPU settings on every exit.

        Holds the table's lock (`calibrate.lock`) throughout, and first sets aside lines a killed
        sweep left half-written.
        """
        with table_lock(self.options.out_path):
            set_aside_partial_lines(self.options.out_path)
            self._done = done_keys(self.options.out_path, self.meter.measures_energy)
            self._check_settings()
            todo = sum(len(self._todo(p)) for p in self.grid.points())
            with (
                sigterm_raises(),
                progress_bar(self.options.progress, total=len(self.grid.points()), desc="grid points") as bar,
            ):
                for settings, points in itertools.groupby(self.grid.points(), key=lambda p: p.settings):
                    self._run_settings(settings, list(points), bar)
        skipped = len(self.grid.points()) * self.grid.repeats - todo
        return SweepSummary(self._written, skipped, self.meter.measures_energy, self.options.out_path)

    def _check_settings(self) -> None:
        wanted = [s for s in self.grid.settings if not s.is_default]
        if wanted and self.controller is None:
            raise NvmlError("grid sets clocks_mhz / power_limits_w, which needs NVML (an NVIDIA GPU)")
        if self.controller is not None:
            self.controller.check(wanted)

    def _run_settings(self, settings: GpuSettings, points: list[GridPoint], bar: tqdm) -> None:
        pending = [p for p in points if self._todo(p)]
        bar.update(len(points) - len(pending))
        if not pending:
            return
        with self._applied(settings):
            for point in pending:
                self._measure_point(point)
                bar.update(1)

    def _applied(self, settings: GpuSettings) -> AbstractContextManager[None]:
        if settings.is_default or self.controller is None:
            return nullcontext()
        return self.controller.applied(settings)

    def _todo(self, point: GridPoint) -> list[int]:
        model, backend = self.options.model, self.backend.name
        return [r for r in range(self.grid.repeats) if make_key(model, backend, point, r) not in self._done]

    def _measure_point(self, point: GridPoint) -> None:
        repeats = self._todo(point)
        self.backend.start(EngineLimits(point.batch_size, self.grid.max_seq_len, self.grid.max_num_tokens))
        idle_w = self.meter.idle_power_w()
        for _ in range(self.grid.warmup):
            self._run_checked(self._prompts(point, 0), point)
        for repeat in repeats:
            measurement, iterations, result = self._measure_window(point, repeat)
            row = self._row(point, repeat, measurement, iterations, result, idle_w)
            append_row(self.options.out_path, row)
            self._done.add(make_key(self.options.model, self.backend.name, point, repeat))
            self._written += 1

    def _prompts(self, point: GridPoint, stream: int) -> list[list[int]]:
        info = self.backend.model_info
        rng = point_rng(self.options.seed, point.n_in, point.n_out, point.batch_size, point.num_requests, stream)
        return make_prompts(point.num_requests, point.n_in, info.vocab_size, rng, info.special_ids)

    def _run_checked(self, prompts: list[list[int]], point: GridPoint) -> GenerationResult:
        result = self.backend.generate(prompts, point.n_out)
        check_lengths(result, point.num_requests, point.n_out)
        return result

    def _measure_window(self, point: GridPoint, repeat: int) -> tuple[Measurement, int, GenerationResult]:
        """Run the repeat's requests until the window is at least the meter's `min_window_s`."""
        prompts = self._prompts(point, 1 + repeat)
        name = f"{point}#{repeat}"
        self.meter.begin_window(name)
        start, iterations = self._clock(), 0
        while True:
            result = self._run_checked(prompts, point)
            iterations += 1
            long_enough = self._clock() - start >= self.meter.min_window_s
            if long_enough or iterations >= self.options.max_window_repeats:
                return self.meter.end_window(name), iterations, result

    def _row(
        self,
        point: GridPoint,
        repeat: int,
        m: Measurement,
        iterations: int,
        result: GenerationResult,
        idle_w: float | None,
    ) -> dict[str, Any]:
        info = self.meter.device_info()
        return {
            "model": self.options.model,
            "gpu": info.gpu_name if info else self.backend.device_name(),
            "backend": self.backend.name,
            "n_in": point.n_in,
            "n_out": point.n_out,
            "batch_size": point.batch_size,
            "num_requests": point.num_requests,
            "energy_j": None if m.energy_j is None else m.energy_j / iterations,
            "duration_s": m.duration_s / iterations,
            "idle_power_w": idle_w,
            "ttft_s": result.ttft_s,
            "tpot_s": result.tpot_s,
            "clock_mhz": point.settings.clock_mhz,
            "power_limit_w": point.settings.power_limit_w,
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "repeat": repeat,
            "iterations": iterations,
            "window_short": m.short,
            "gpu_count": info.gpu_count if info else None,
            "driver": info.driver if info else None,
            "sm_clock_mhz": info.sm_clock_mhz if info else None,
            "mem_clock_mhz": info.mem_clock_mhz if info else None,
            "temperature_c": info.temperature_c if info else None,
            "enforced_power_limit_w": info.power_limit_w if info else None,
            "seed": self.options.seed,
        }
