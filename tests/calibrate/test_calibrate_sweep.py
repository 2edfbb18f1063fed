import pandas as pd
import pytest

from calibrate.backends.base import GenerationResult, OutputLengthError
from calibrate.gpu_settings import GpuSettingsController
from calibrate.grid import Grid
from calibrate.meter import NullMeter, NvmlMeter
from calibrate.models import ModelInfo
from calibrate.nvml import NvmlError, NvmlPermissionError
from calibrate.sweep import Sweep, SweepOptions
from calibrate.table import MeasurementTableError, read_table


class FakeBackend:
    """Takes `seconds_per_token * n_out` of fake time per run at 300 W (100 W idle) on a fake NVML;
    can return wrong lengths or crash."""

    name = "fake"
    model_info = ModelInfo(vocab_size=100, eos_token_ids=(2,), pad_token_id=0)

    def __init__(self, clock, seconds_per_token=0.1, short_by=0, crash_after=None, nvml=None):
        self.clock, self.seconds_per_token = clock, seconds_per_token
        self.short_by, self.crash_after, self.nvml = short_by, crash_after, nvml
        self.runs: list[tuple[int, int, int]] = []
        self.limits = []
        self.locked_during_runs = set()

    def start(self, limits):
        self.limits.append(limits)

    def generate(self, prompts, n_out):
        if self.crash_after is not None and len(self.runs) >= self.crash_after:
            raise RuntimeError("engine crashed")
        self.runs.append((len(prompts), len(prompts[0]), n_out))
        if self.nvml is not None:
            self.locked_during_runs.add(self.nvml.gpus[0].locked_clocks)
            self.nvml.set_power(300.0)
        self.clock.advance(self.seconds_per_token * n_out)
        if self.nvml is not None:
            self.nvml.set_power(100.0)
        return GenerationResult((n_out - self.short_by,) * len(prompts), ttft_s=0.01, tpot_s=0.002)

    def device_name(self):
        return "fake-gpu"

    def close(self):
        pass


GRID = Grid(name="t", n_in=(8, 16), n_out=(4, 20), batch_sizes=(2,), num_requests=(3,), repeats=2, warmup=1)


def options(tmp_path, **kw):
    return SweepOptions(model="m", out_path=tmp_path / "t.csv", progress=False, **kw)


def nvml_meter(session, clock):
    return NvmlMeter(session, min_window_s=1.0, idle_settle_s=1.0, idle_window_s=1.0, clock=clock, sleep=clock.sleep)


def test_energy_rows_with_window_lengthening(tmp_path, session, nvml, clock):
    backend = FakeBackend(clock, nvml=nvml)
    summary = Sweep(GRID, backend, nvml_meter(session, clock), options(tmp_path), clock=clock).run()
    assert (summary.rows_written, summary.rows_skipped, summary.energy_measured) == (8, 0, True)
    df = read_table(tmp_path / "t.csv")
    short = df[df.n_out == 4]  # 0.4 s per run: repeated 3 times to reach the 1 s window
    assert (short.iterations == 3).all()
    assert short.duration_s.to_numpy() == pytest.approx(0.4)
    assert short.energy_j.to_numpy() == pytest.approx(120.0, abs=30.0 / 3 + 1e-6)  # 300 W, ±1 tick over 3
    long = df[df.n_out == 20]
    assert (long.iterations == 1).all() and long.energy_j.to_numpy() == pytest.approx(600.0, abs=30)
    assert df.idle_power_w.to_numpy() == pytest.approx(100.0)
    assert set(df.gpu) == {"NVIDIA H100 80GB HBM3"} and set(df.driver) == {"550.54.15"}
    assert list(df.repeat) == [0, 1] * 4 and not df.window_short.any()
    assert df.ttft_s.notna().all() and df.temperature_c.notna().all()


def test_every_run_has_exact_lengths_and_warmup(tmp_path, clock):
    backend = FakeBackend(clock)
    Sweep(GRID, backend, NullMeter(clock), options(tmp_path), clock=clock).run()
    # per point: 1 warmup + 2 repeats of 3 requests, prompts of n_in tokens
    assert backend.runs[:3] == [(3, 8, 4)] * 3
    assert len(backend.runs) == 4 * 3
    assert {lim.max_batch_size for lim in backend.limits} == {2}
    assert {lim.max_seq_len for lim in backend.limits} == {36}


def test_length_mismatch_is_an_error_not_a_row(tmp_path, clock):
    with pytest.raises(OutputLengthError, match="instead of n_out=4"):
        Sweep(GRID, FakeBackend(clock, short_by=1), NullMeter(clock), options(tmp_path), clock=clock).run()
    assert not (tmp_path / "t.csv").exists()


def test_crash_keeps_finished_rows_and_rerun_resumes(tmp_path, clock):
    with pytest.raises(RuntimeError, match="engine crashed"):
        Sweep(GRID, FakeBackend(clock, crash_after=5), NullMeter(clock), options(tmp_path), clock=clock).run()
    assert len(pd.read_csv(tmp_path / "t.csv")) == 3  # point 1 (2 repeats) + point 2, repeat 0
    backend = FakeBackend(clock)
    summary = Sweep(GRID, backend, NullMeter(clock), options(tmp_path), clock=clock).run()
    assert (summary.rows_written, summary.rows_skipped) == (5, 3)
    df = read_table(tmp_path / "t.csv", require_energy=False)
    assert len(df) == 8 and len(df.drop_duplicates(["n_in", "n_out", "repeat"])) == 8
    again = Sweep(GRID, FakeBackend(clock), NullMeter(clock), options(tmp_path), clock=clock).run()
    assert (again.rows_written, again.rows_skipped) == (0, 8)


def test_timing_only_rows_are_refused_by_the_fitter(tmp_path, clock):
    Sweep(GRID, FakeBackend(clock), NullMeter(clock), options(tmp_path), clock=clock).run()
    df = read_table(tmp_path / "t.csv", require_energy=False)
    assert df.energy_j.isna().all() and set(df.gpu) == {"fake-gpu"}
    with pytest.raises(MeasurementTableError, match="meter=nvml"):
        read_table(tmp_path / "t.csv")


def test_energy_and_timing_rows_never_mix(tmp_path, session, clock):
    Sweep(GRID, FakeBackend(clock), NullMeter(clock), options(tmp_path), clock=clock).run()
    with pytest.raises(MeasurementTableError, match="timing-only rows"):
        Sweep(GRID, FakeBackend(clock), nvml_meter(session, clock), options(tmp_path), clock=clock).run()


DVFS = Grid(
    name="d",
    n_in=(8,),
    n_out=(20,),
    batch_sizes=(2,),
    num_requests=(2,),
    clocks_mhz=(None, 990),
    power_limits_w=(None, 400.0),
    repeats=1,
    warmup=0,
)


def test_dvfs_settings_recorded_applied_and_restored(tmp_path, session, nvml, clock):
    backend = FakeBackend(clock, nvml=nvml)
    Sweep(
        DVFS, backend, nvml_meter(session, clock), options(tmp_path), GpuSettingsController(session), clock=clock
    ).run()
    df = read_table(tmp_path / "t.csv")
    assert list(df.clock_mhz.fillna(0)) == [0, 0, 990, 990]
    assert list(df.power_limit_w.fillna(0)) == [0, 400, 0, 400]
    assert list(df.enforced_power_limit_w) == [700, 400, 700, 400]
    assert list(df.sm_clock_mhz) == [1980, 1980, 990, 990]
    assert backend.locked_during_runs == {None, (990, 990)}
    assert nvml.gpus[0].locked_clocks is None and nvml.gpus[0].power_limit_mw == 700_000


def test_dvfs_settings_restored_when_the_engine_crashes(tmp_path, session, nvml, clock):
    with pytest.raises(RuntimeError):
        Sweep(
            DVFS,
            FakeBackend(clock, crash_after=2),
            nvml_meter(session, clock),
            options(tmp_path),
            GpuSettingsController(session),
            clock=clock,
        ).run()
    assert nvml.gpus[0].locked_clocks is None and nvml.gpus[0].power_limit_mw == 700_000


def test_dvfs_without_privilege_fails_before_any_measurement(tmp_path, session, nvml, clock):
    nvml.root = False
    backend = FakeBackend(clock)
    with pytest.raises(NvmlPermissionError, match="needs root"):
        Sweep(
            DVFS, backend, nvml_meter(session, clock), options(tmp_path), GpuSettingsController(session), clock=clock
        ).run()
    assert backend.runs == [] and not (tmp_path / "t.csv").exists()


def test_dvfs_without_nvml_is_an_error(tmp_path, clock):
    with pytest.raises(NvmlError, match="needs NVML"):
        Sweep(DVFS, FakeBackend(clock), NullMeter(clock), options(tmp_path), clock=clock).run()


def test_foreign_table_is_not_resumed(tmp_path, clock):
    pd.DataFrame(
        {
            "model": ["m"],
            "gpu": ["g"],
            "backend": ["fake"],
            "n_in": [8],
            "n_out": [4],
            "batch_size": [2],
            "num_requests": [3],
            "energy_j": [None],
            "duration_s": [1.0],
        }
    ).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(MeasurementTableError, match="not written by calibrate.measure"):
        Sweep(GRID, FakeBackend(clock), NullMeter(clock), options(tmp_path), clock=clock).run()


@pytest.mark.filterwarnings("ignore:.*outside its calibrated range")
def test_a_sweep_table_fits_with_the_real_fitter(tmp_path, session, nvml, clock):
    fit = pytest.importorskip("calibrate.fit")
    grid = Grid(
        name="c",
        n_in=(64, 256, 1024),
        n_out=(64, 256, 1024),
        batch_sizes=(2, 4),
        num_requests=(8,),
        repeats=2,
        warmup=0,
    )
    Sweep(
        grid,
        FakeBackend(clock, seconds_per_token=0.01, nvml=nvml),
        nvml_meter(session, clock),
        options(tmp_path),
        clock=clock,
    ).run()
    report = fit.fit_measurements(tmp_path / "t.csv", tmp_path / "t.oracle.json", plots=False)
    assert {"mape_pct", "cv_mape_pct"} <= set(report) and (tmp_path / "t.oracle.json").exists()


@pytest.mark.parametrize("cut", [1, 20, 60])
def test_a_half_written_last_line_is_set_aside_and_the_sweep_resumes(tmp_path, clock, caplog, cut):
    Sweep(GRID, FakeBackend(clock), NullMeter(clock), options(tmp_path), clock=clock).run()
    path = tmp_path / "t.csv"
    full = path.read_bytes()
    last = full.rstrip(b"\r\n").rsplit(b"\n", 1)[1]
    path.write_bytes(full[: len(full) - len(last) - 2 + cut])  # killed while writing the 9th line
    with caplog.at_level("WARNING", logger="calibrate.table"):
        summary = Sweep(GRID, FakeBackend(clock), NullMeter(clock), options(tmp_path), clock=clock).run()
    assert (summary.rows_written, summary.rows_skipped) == (1, 7)  # only the cut-short point again
    assert f"{path}, line 9 was cut short" in caplog.text and "t.rejected.csv" in caplog.text
    assert (tmp_path / "t.rejected.csv").read_bytes() == last[:cut] + b"\n"
    df = read_table(path, require_energy=False)
    assert len(df) == 8 and len(df.drop_duplicates(["n_in", "n_out", "repeat"])) == 8


def test_a_second_sweep_on_the_same_table_is_refused_naming_the_holder(tmp_path, clock):
    import json
    import os
    import socket

    from calibrate.lock import TableLockedError, lock_path

    holder = {"pid": os.getppid(), "host": socket.gethostname(), "started": "2026-11-22T05:00:00+00:00"}
    lock_path(tmp_path / "t.csv").write_text(json.dumps(holder))
    backend = FakeBackend(clock)
    with pytest.raises(TableLockedError, match=f"pid {os.getppid()} on host {socket.gethostname()}, started 2026"):
        Sweep(GRID, backend, NullMeter(clock), options(tmp_path), clock=clock).run()
    assert backend.runs == [] and not (tmp_path / "t.csv").exists()


def test_the_lock_of_a_dead_sweep_is_taken_over_and_released(tmp_path, clock, caplog):
    import json
    import socket
    import subprocess
    import sys

    from calibrate.lock import lock_path

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = lock_path(tmp_path / "t.csv")
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(), "started": "earlier"}))
    with caplog.at_level("WARNING", logger="calibrate.lock"):
        summary = Sweep(GRID, FakeBackend(clock), NullMeter(clock), options(tmp_path), clock=clock).run()
    assert summary.rows_written == 8 and not lock.exists()
    assert f"taking over the lock of pid {int(dead.stdout)}" in caplog.text
