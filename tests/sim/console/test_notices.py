"""Warnings on a command's console: each distinct one once, one line, no source echo."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings

import pytest

from oracle.model import OracleRangeWarning
from sim.console import notices
from sim.serving.run_warnings import RejectedRequestsWarning


@pytest.fixture
def once(monkeypatch):
    """`show_warnings_once` for this test only: a fresh memory of what was shown."""
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    monkeypatch.setattr(notices, "_seen", set())
    monkeypatch.setattr(notices, "_repeats", notices.Counter())
    notices.show_warnings_once()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        yield


def test_each_distinct_warning_is_logged_once_and_its_repeats_counted(once, caplog):
    with caplog.at_level(logging.WARNING, logger="sweetspot"):
        for _ in range(3):
            warnings.warn("12 requests outside the range (4.5 %)", OracleRangeWarning, stacklevel=1)
        warnings.warn("1,013 requests outside the range (10.25 %)", OracleRangeWarning, stacklevel=1)
        warnings.warn("12 requests outside the range (4.5 %)", RejectedRequestsWarning, stacklevel=1)
        warnings.warn("an oracle without figures", OracleRangeWarning, stacklevel=1)
        warnings.warn("oracle 'qwen3-14b_b200' asked outside", OracleRangeWarning, stacklevel=1)
        warnings.warn("oracle 'llama-3.1-8b_h100' asked outside", OracleRangeWarning, stacklevel=1)  # a name apart
        notices.count_repeats()
    assert [r.getMessage() for r in caplog.records] == [
        "warning (OracleRangeWarning): 12 requests outside the range (4.5 %)",
        "warning (RejectedRequestsWarning): 12 requests outside the range (4.5 %)",
        "warning (OracleRangeWarning): an oracle without figures",
        "warning (OracleRangeWarning): oracle 'qwen3-14b_b200' asked outside",
        "warning (OracleRangeWarning): 2 more like the one shown earlier, with other figures or names, not shown",
    ]


@pytest.mark.slow
def test_a_run_says_its_range_warning_once_without_the_source_line(tmp_path):
    """Baseline and policy simulate the same long prompts: one warning line, not two with echoes."""
    args = [
        "trace=synthetic",
        "trace.num_requests=30",
        "trace.n_in=12000",
        "trace.n_out=50",
        "policy=adaptive_gen",
        "progress=false",
        "background=false",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"output_dir={tmp_path / 'out'}",
        "plots=false",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "sim", *args], capture_output=True, text=True, timeout=240, cwd=tmp_path, check=False
    )
    console = done.stdout + done.stderr
    assert done.returncode == 0, console
    assert console.count("OracleRangeWarning") == 1, console
    assert "warnings.warn" not in console and "return simulate_fleet" not in console
