"""`python -m calibrate.fit`: fit a table, write the oracle and its plots."""

import json
import subprocess
import sys

import pytest

from calibrate.fit import fit_measurements
from oracle.model import Oracle
from tests.oracle.test_fit import physical_truth, synthetic_table


def fit_cli(table, out, tmp_path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m calibrate.fit measurements=TABLE out=OUT [EXTRA]` in `tmp_path`, output captured."""
    args = [f"measurements={table}", f"out={out}", *extra, f"hydra.run.dir={tmp_path}/h"]
    return subprocess.run(
        [sys.executable, "-m", "calibrate.fit", *args], capture_output=True, text=True, cwd=tmp_path, timeout=timeout
    )


@pytest.fixture(scope="module")
def table_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("fit") / "m.csv"
    synthetic_table(physical_truth(), noise=0.01, seed=3).to_csv(path, index=False)
    return path


def test_fit_measurements_writes_oracle_and_plots(table_csv, tmp_path, capsys):
    report = fit_measurements(table_csv, tmp_path / "o.json")
    out = capsys.readouterr().out
    assert "CV MAPE" in out and "n_out*" in out and "flops-only" in out
    saved = json.loads((tmp_path / "o.json").read_text())
    assert saved["fit"]["mape_pct"] == pytest.approx(report["mape_pct"])
    assert saved["fit"]["cv_mape_pct"] < 1.79
    assert (tmp_path / "o.heatmap.png").stat().st_size > 10_000
    assert (tmp_path / "o.energy_per_token.png").stat().st_size > 10_000


def test_command_line(table_csv, tmp_path):
    out = tmp_path / "cli.json"
    proc = fit_cli(table_csv, out, tmp_path, "plots=false")
    assert proc.returncode == 0, proc.stderr
    assert Oracle.load(out).fit["rows"] == 294


@pytest.mark.slow
def test_command_line_fits_a_batch_one_table_and_prints_the_caveat(tmp_path):
    """Before, a table of batch-1 runs (SweetSpot's, most published tables) was refused."""
    table = tmp_path / "b1.csv"
    synthetic_table(physical_truth(), noise=0.01, seed=5, batches=(1,)).to_csv(table, index=False)
    out = tmp_path / "b1.json"
    proc = fit_cli(table, out, tmp_path, "plots=false")
    assert proc.returncode == 0, proc.stderr
    caveat = "caveat: fitted at batch 1 only: batch scaling is undetermined, so predictions at other batch sizes"
    assert caveat in proc.stdout and "Traceback" not in proc.stderr
    oracle = Oracle.load(out)
    assert oracle.calibrated.batch == (1.0, 1.0) and oracle.fit["fitted_batch"] == 1.0
    assert "batch scaling is undetermined" in oracle.fit["batch_scaling"]


@pytest.mark.filterwarnings("error::oracle.model.OracleRangeWarning")
def test_one_batch_oracle_is_plotted_at_its_batch(tmp_path, capsys):
    """Plots at batch 1 of an oracle measured at batch 8 would be extrapolations (and warn)."""
    table = tmp_path / "b8.csv"
    synthetic_table(physical_truth(), noise=0.01, seed=6, batches=(8,), requests=(16, 96)).to_csv(table, index=False)
    report = fit_measurements(table, tmp_path / "b8.json")
    assert report["fitted_batch"] == 8.0 and "fitted at batch 8 only" in capsys.readouterr().out
    assert (tmp_path / "b8.heatmap.png").stat().st_size > 10_000


@pytest.mark.slow
def test_command_line_bad_table_is_one_clear_line(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("model,gpu\nm,g\n")
    proc = fit_cli(bad, f"{tmp_path}/o.json", tmp_path)
    assert proc.returncode != 0
    assert "calibrate.fit: error:" in proc.stderr and "missing required column(s)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_command_line_refuses_a_table_that_cannot_determine_the_model(table_csv, tmp_path):
    import pandas as pd

    same = tmp_path / "same.csv"
    pd.read_csv(table_csv).iloc[[3] * 8].to_csv(same, index=False)
    out = tmp_path / "o.json"
    proc = fit_cli(same, out, tmp_path)
    assert proc.returncode == 1
    assert "calibrate.fit: error: the table cannot determine the model" in proc.stderr
    assert "Traceback" not in proc.stderr and "MAPE" not in proc.stdout
    assert not out.exists()


def test_command_line_refuses_a_table_in_kwh_in_one_line(table_csv, tmp_path):
    """Before, the fit ran for minutes with scipy 'Singular Jacobian' warnings and no word."""
    import pandas as pd

    kwh = tmp_path / "kwh.csv"
    table = pd.read_csv(table_csv)
    table.assign(energy_j=table["energy_j"] / 3.6e6).to_csv(kwh, index=False)
    out = tmp_path / "o.json"
    proc = fit_cli(kwh, out, tmp_path, timeout=60)
    assert proc.returncode == 1
    (line,) = [x for x in proc.stderr.splitlines() if "calibrate.fit: error:" in x]
    assert line.startswith("calibrate.fit: error: 294 of 294 rows imply a mean power (energy_j / duration_s)")
    assert line.endswith("energy_j looks like kWh: multiply it by 3.6e6.")
    assert "Traceback" not in proc.stderr and not out.exists()
