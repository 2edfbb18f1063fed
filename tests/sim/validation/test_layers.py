"""sim.validation.layers: the shipped LLMServingSim table, the carry-over to a fused engine, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oracle import arch
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
    assert len(layers.TOKENS) == 23 and {1, 64, 128, 384, 2048} <= set(layers.TOKENS)
    for _, part in shipped.groupby(["model", "tp"]):
        assert tuple(part["tokens"]) == layers.TOKENS
    assert list(shipped.columns[3:]) == [f"{c}_ns" for c in layers.LAYERS]
    assert (shipped[list(shipped.columns[3:])] > 0).all().all()


def test_one_row_counted_by_hand(shipped):
    """Llama-3.1-8B TP 1 at 512 tokens: 32 layers of GEMMs and attention as measured, the LM head
    at 1 token, the embedding at 512, the fused elementwise kernels at 3.35 TB/s."""
    part = shipped[(shipped["model"] == "meta-llama/Llama-3.1-8B") & (shipped["tp"] == 1)]
    row = part[part["tokens"] == 512].iloc[0]
    gemms = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "attn"]
    measured_ns = 32 * sum(row[f"{c}_ns"] for c in gemms) + row["embedding_ns"]
    measured_ns += part.loc[part["tokens"] == 1, "lm_head_ns"].iloc[0]
    n, h, inter, bw = 512, 4096, 14336, 3.35e12
    norm = 2 * n * h * 2
    act = 2 * n * inter * 2 + n * inter * 2
    rope = 2 * n * (32 + 8) * 128 * 2
    elementwise_s = (32 * (2 * norm + act + rope) + norm) / bw
    got = layers.carried(part).set_index("tokens").loc[512]
    assert got["measured_ms"] == pytest.approx(measured_ns / 1e6, rel=1e-12)
    assert got["elementwise_ms"] == pytest.approx(1e3 * elementwise_s, rel=1e-12)
    assert got["kernel_ms"] == pytest.approx(measured_ns / 1e6 + 1e3 * elementwise_s, rel=1e-12)


def test_the_lm_head_is_counted_at_one_token(shipped):
    part = shipped[(shipped["model"] == "meta-llama/Llama-3.1-70B") & (shipped["tp"] == 4)].copy()
    before = layers.carried(part)["measured_ms"].to_numpy()
    bigger = part.assign(lm_head_ns=np.where(part["tokens"] == 1, part["lm_head_ns"], 10**12))
    assert np.array_equal(layers.carried(bigger)["measured_ms"].to_numpy(), before)
    one = part.assign(lm_head_ns=np.where(part["tokens"] == 1, part["lm_head_ns"] + 10**6, part["lm_head_ns"]))
    assert np.allclose(layers.carried(one)["measured_ms"].to_numpy(), before + 1.0)


def test_a_norm_is_its_bytes_at_the_datasheet_bandwidth():
    spec, gpu = arch.load_model("llama-3.1-70b"), arch.load_gpu("h100")
    assert gpu.memory_bandwidth == 3.35e12
    for layer in ("input_layernorm", "post_layernorm", "final_layernorm"):
        assert layers.fused_bytes(layer, spec, 4, 1000) == 2 * 1000 * 8192 * 2  # read and write N·h bf16
        assert layers.fused_ns(layer, spec, 4, 1000, gpu) == pytest.approx(1e9 * 4 * 1000 * 8192 / 3.35e12)
    # act_fn: gate and up read, the product written, I/tp wide; rope: q and k heads read and written
    assert layers.fused_bytes("act_fn", spec, 4, 10) == 3 * 10 * (28672 / 4) * 2
    assert layers.fused_bytes("rope", spec, 4, 10) == 2 * 10 * (64 / 4 + 8 / 4) * 128 * 2
    with pytest.raises(ValueError, match="no memory-bound estimate"):
        layers.fused_bytes("q_proj", spec, 1, 10)


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
    c = Oracle.load("llama-3.1-8b_h100_tp2").time_coef_s
    step_s = c[0] + c[3] + c[4] * 1024 + c[5] * 1024 * 1025 / 2
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
