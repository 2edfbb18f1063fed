"""sim.validation.layers: the shipped LLMServingSim table, its comparison with the shipped oracles, the CLI
(the carry-over to a fused engine: tests/oracle/test_kernels.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oracle import kernels
from sim.validation import layers

SOURCE = Path("/work/shared/data/latency/llmservingsim_h100")


@pytest.fixture(scope="module")
def shipped() -> pd.DataFrame:
    return pd.read_csv(layers.table())


@pytest.fixture(scope="module")
def compared() -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    return layers.compare()


@pytest.mark.skipif(not SOURCE.is_dir(), reason=f"the source tables ({SOURCE}) are not on this machine")
def test_the_shipped_table_is_built_from_the_source(shipped):
    pd.testing.assert_frame_equal(layers.build(SOURCE), shipped)


def test_the_shipped_table_has_every_model_tp_and_token_count(shipped):
    keys = set(zip(shipped["model"], shipped["tp"], strict=True))
    assert keys == {
        ("meta-llama/Llama-3.1-8B", 1),
        ("meta-llama/Llama-3.1-8B", 2),
        ("meta-llama/Llama-3.1-70B", 1),
        ("meta-llama/Llama-3.1-70B", 2),
        ("meta-llama/Llama-3.1-70B", 4),
    }
    assert len(kernels.TOKENS) == 23 and {1, 64, 128, 384, 2048} <= set(kernels.TOKENS)
    for _, part in shipped.groupby(["model", "tp"]):
        assert tuple(part["tokens"]) == kernels.TOKENS
    assert list(shipped.columns[3:]) == [f"{c}_ns" for c in kernels.LAYERS]
    assert (shipped[list(shipped.columns[3:])] > 0).all().all()


def test_the_rows_left_out_and_the_errors_groups(compared):
    df, err, notes = compared
    assert any("Mixtral" in n for n in notes)
    assert any("Llama-3.1-70B TP 1" in n and "does not fit" in n for n in notes)
    assert set(zip(df["model"], df["tp"], strict=True)) == {
        ("meta-llama/Llama-3.1-8B", 1),
        ("meta-llama/Llama-3.1-8B", 2),
        ("meta-llama/Llama-3.1-70B", 2),
        ("meta-llama/Llama-3.1-70B", 4),
    }
    assert len(df) == 4 * 23
    assert (df.loc[df["tp"] == 1, "allreduce_ms"] == 0).all() and (df.loc[df["tp"] > 1, "allreduce_ms"] > 0).all()
    engine = df["kernel_ms"] + df["allreduce_ms"] + df["overhead_ms"]
    assert np.allclose(df["engine_ms"], engine)
    assert np.allclose(df["error_pct"], 100 * (df["simulated_ms"] / df["engine_ms"] - 1))
    expected_rows = ["all", "Llama-3.1-8B TP 1", "Llama-3.1-8B TP 2", "Llama-3.1-70B TP 2", "Llama-3.1-70B TP 4"]
    assert list(err["rows"].drop_duplicates()) == expected_rows
    assert set(err["tokens"]) == {"128-2048", "<128"}
    assert err.set_index(["rows", "tokens"])["n"].to_dict() == {
        **{(r, "128-2048"): 16 for r in expected_rows[1:]},
        **{(r, "<128"): 7 for r in expected_rows[1:]},
        ("all", "128-2048"): 64,
        ("all", "<128"): 28,
    }
    sub = df[(df["model"] == "meta-llama/Llama-3.1-8B") & (df["tp"] == 1) & (df["tokens"] >= 128)]
    one = err[(err["rows"] == "Llama-3.1-8B TP 1") & (err["tokens"] == "128-2048")].iloc[0]
    assert one["mae_pct"] == pytest.approx(sub["error_pct"].abs().mean())
    assert one["bias_pct"] == pytest.approx(sub["error_pct"].mean())


def test_the_simulated_step_is_the_oracle_s(compared):
    from oracle.model import Oracle

    df = compared[0]
    row = df[(df["tp"] == 2) & (df["model"] == "meta-llama/Llama-3.1-8B") & (df["tokens"] == 1024)].iloc[0]
    o = Oracle.load("llama-3.1-8b_h100_tp2")
    c, hide = o.time_coef_s, o.overlap
    assert hide is not None  # the step hides the shorter of its weights' read and its prompt's GEMMs
    step_s = c[0] + c[3] + c[4] * 1024 + c[5] * 1024 * 1025 / 2 - min(hide.weights_s, hide.per_token_s * 1024)
    assert row["simulated_ms"] == pytest.approx(1e3 * step_s, rel=1e-12)


def test_report_writes_the_rows(tmp_path, capsys):
    assert layers.main([f"out={tmp_path}"]) == 0
    out = capsys.readouterr().out
    assert "left out:" in out and "mae_pct" in out
    assert len(pd.read_csv(tmp_path / "layers.csv")) == 92


@pytest.mark.parametrize(
    "argv",
    [["nonsense"], ["out"], ["dir=x"], ["build"], ["build", "src=x"], ["build", "SRC="], ["build", "out=x.csv"]],
)
def test_bad_arguments_exit_2_with_one_line(argv, capsys):
    assert layers.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("sim.validation.layers: error:") and err.count("\n") == 1


def test_build_refuses_a_folder_that_is_not_the_source(tmp_path, capsys):
    assert layers.main(["build", f"SRC={tmp_path / 'missing'}"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert layers.main(["build", f"SRC={tmp_path}", f"out={tmp_path / 't.csv'}"]) == 2
    assert "no meta-llama/Llama-3.1-8B/tp<k>/layers.csv" in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists()
