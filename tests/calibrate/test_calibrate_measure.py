import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import calibrate.measure as measure
from calibrate.config import BackendName, MeterKind, to_grid
from calibrate.nvml import NvmlUnavailableError, open_session
from calibrate.table import read_table

GRIDS = sorted(p.stem for p in (Path(measure.__file__).parents[1] / "conf/calibrate/grid").glob("*.yaml"))


def conf(*overrides: str):
    with initialize_config_module(config_module="conf.calibrate", version_base="1.3"):
        cfg = compose("measure", overrides=list(overrides))
    return measure.load_conf(cfg)


@pytest.mark.parametrize("grid", GRIDS)
def test_every_shipped_grid_composes_and_validates(grid, tmp_path):
    c = conf(f"grid={grid}", f"out={tmp_path / 'x.csv'}")
    g = to_grid(c.grid)
    assert g.name == grid and g.points()


def test_paper_grid_is_the_sweetspot_protocol(tmp_path):
    g = to_grid(conf("grid=sweetspot", f"out={tmp_path / 'x.csv'}").grid)
    assert g.n_in == g.n_out == (64, 128, 256, 512, 1024, 2048, 4096)
    assert g.num_requests == (10, 100, 1000) and len(g.batch_sizes) > 1


def test_defaults_and_enums(tmp_path):
    c = conf(f"out={tmp_path / 'x.csv'}")
    assert c.backend is BackendName.transformers and c.meter is MeterKind.nvml
    assert c.model == "tiny" and Path(c.out).is_absolute()


@pytest.mark.parametrize(
    "override, key",
    [
        ("backend=vllm", "backend"),
        ("meter=rapl", "meter"),
        ("grid.repeats=many", "grid.repeats"),
        ("grid.n_inn=[1]", "n_inn"),
    ],
)
def test_bad_config_names_the_key(override, key, tmp_path):
    with pytest.raises(Exception) as e:
        conf(override, f"out={tmp_path / 'x.csv'}")
    assert key in str(e.value)


def test_missing_out_is_named():
    with pytest.raises(Exception, match="out"):
        OmegaConf.to_object(compose_raw())


def _needs_torch() -> None:
    """Runs of the transformers backend need torch and transformers (the `hf` extra): skip without them."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")


def compose_raw():
    with initialize_config_module(config_module="conf.calibrate", version_base="1.3"):
        return compose("measure")


def test_no_driver_error_says_meter_none(tmp_path, monkeypatch):
    from fake_nvml import FakeClock, FakeNvml

    fake = FakeNvml(FakeClock(), library=False)
    monkeypatch.setattr(measure, "open_session", lambda gpus: open_session(gpus, nvml=fake))
    with pytest.raises(NvmlUnavailableError, match="meter=none"):
        measure.run_measure(conf(f"out={tmp_path / 'x.csv'}", "tracking.enabled=false"))


@pytest.mark.slow
def test_cpu_end_to_end_tiny_model_then_resume(tmp_path):
    """backend=transformers model=tiny meter=none grid=smoke: exact-length rows; a rerun adds none."""
    _needs_torch()
    c = conf(
        "backend=transformers",
        "model=tiny",
        "meter=none",
        "grid=smoke",
        f"out={tmp_path / 'm.csv'}",
        "tracking.enabled=false",
        "progress=false",
    )
    first = measure.run_measure(c)
    df = read_table(tmp_path / "m.csv", require_energy=False)
    grid = to_grid(c.grid)
    assert first["summary"].rows_written == len(df) == len(grid.points()) * grid.repeats
    assert sorted(set(zip(df.n_in, df.n_out, strict=True))) == sorted({(p.n_in, p.n_out) for p in grid.points()})
    assert df.energy_j.isna().all() and (df.duration_s > 0).all() and set(df.gpu) == {"cpu"}
    assert first["report"] == {} and first["spread_path"].exists()
    second = measure.run_measure(c)
    assert second["summary"].rows_written == 0
    assert len(read_table(tmp_path / "m.csv", require_energy=False)) == len(df)


@pytest.mark.slow
def test_energy_sweep_fits_and_tracks(tmp_path, monkeypatch):
    """With a (fake, real-time) NVML, the sweep ends by fitting and logs one MLflow run."""
    _needs_torch()
    from fake_nvml import FakeNvml

    fake = FakeNvml(time.monotonic)
    monkeypatch.setattr(measure, "open_session", lambda gpus: open_session(gpus, nvml=fake))
    fitted = {}

    def fit_measurements(table_path, out_path):
        fitted["rows"] = len(read_table(table_path))
        Path(out_path).write_text("{}")
        return {"mape_pct": 1.5, "cv_mape_pct": 2.5}

    monkeypatch.setitem(sys.modules, "calibrate.fit", SimpleNamespace(fit_measurements=fit_measurements))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = conf(
        "meter=nvml",
        "grid=smoke",
        "grid.n_in=[4]",
        "grid.n_out=[2]",
        "grid.repeats=2",
        "nvml.min_window_s=0.15",
        "nvml.idle_settle_s=0",
        "nvml.idle_window_s=0.15",
        f"out={tmp_path / 'e.csv'}",
        f"tracking.uri={uri}",
        "progress=false",
    )
    result = measure.run_measure(c)
    df = read_table(tmp_path / "e.csv")
    assert fitted["rows"] == len(df) == 2 and (df.energy_j > 0).all() and (df.iterations >= 1).all()
    assert json.loads((tmp_path / "e.fit.json").read_text())["mape_pct"] == 1.5
    assert (tmp_path / "e.oracle.json").exists()

    import mlflow

    run = mlflow.MlflowClient(uri).get_run(result["run_id"])
    assert run.data.params["gpu"] == "NVIDIA H100 80GB HBM3"
    assert run.data.params["driver"] == "550.54.15" and run.data.params["grid.name"] == "smoke"
    assert run.data.metrics["fit.cv_mape_pct"] == 2.5
    names = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(result["run_id"])}
    assert {"e.csv", "e.spread.csv", "e.fit.json", "e.oracle.json"} <= names


def measure_command(*overrides: str) -> list[str]:
    """`python -m calibrate.measure` on the tiny CPU model, untracked, no progress bar."""
    return [
        sys.executable,
        "-m",
        "calibrate.measure",
        "backend=transformers",
        "model=tiny",
        "meter=none",
        "grid=smoke",
        *overrides,
        "tracking.enabled=false",
        "progress=false",
    ]


@pytest.mark.slow
def test_command_line(tmp_path):
    _needs_torch()
    cmd = measure_command("grid.n_in=[4]", "grid.n_out=[3]", "grid.repeats=1", "out=rel/m.csv")
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "1 row(s) written" in done.stdout
    assert len(read_table(tmp_path / "rel/m.csv", require_energy=False)) == 1
    assert not (tmp_path / "outputs").exists()
    bad = subprocess.run(
        [*cmd[:4], "model=nowhere", "out=x.csv"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 1 and "never downloads" in bad.stderr


@pytest.mark.parametrize("signum, status, name", [(2, 130, "SIGINT"), (15, 143, "SIGTERM")])
@pytest.mark.slow
def test_a_signal_mid_sweep_prints_one_line_and_keeps_the_rows(tmp_path, signum, status, name):
    _needs_torch()
    cmd = measure_command("grid.repeats=500", "out=m.csv")
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = tmp_path / "m.csv"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (not out.exists() or out.read_text().count("\n") < 3):
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    kept = len(read_table(out, require_energy=False))
    assert proc.returncode == status
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"calibrate.measure: stopped ({name}); {kept} row(s) kept in {out}; "
        "run the same command again to resume (points already measured are skipped)"
    )
    assert kept >= 2 and not (tmp_path / "m.csv.lock").exists()
