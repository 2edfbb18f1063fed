"""sim.validation.prefill: which Splitwise rows are replayed, and the replay against a hand count."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from oracle.features import StepCoef
from oracle.model import Oracle
from sim.validate import main
from sim.validation import prefill


@pytest.fixture(scope="module")
def compared() -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    return prefill.compare()


def test_the_rows_left_out_are_said_and_the_rest_replayed(compared):
    df, err, why = compared
    assert any("bloom-176b" in w for w in why) and any("pcap" in w for w in why) and any("a100" in w for w in why)
    assert any("TP 2, batch 64" in w for w in why)
    assert not ((df["tensor_parallel"] == 2) & (df["batch_size"] == 64)).any()
    assert len(df) == 38 and set(df["tensor_parallel"]) == {2, 4, 8}  # 3 × (7 prompts + 6 batches), less one
    assert (df.loc[df["prompt_size"] == 512, "repeats"] >= 5).all()
    overall = err[(err["rows"] == "all")]
    assert overall["n"].sum() == len(df) and np.isfinite(overall["mae_pct"]).all()


def test_a_batch_1_prompt_time_is_one_prefill_step_of_the_oracle(compared, monkeypatch):
    """Without the board's power cap, the replay's time to first token is the oracle's single
    prefill step of that many tokens (its weights' read overlapped), counted by hand; the cap only
    slows it."""
    df = compared[0]
    row = df[(df["tensor_parallel"] == 4) & (df["batch_size"] == 1) & (df["prompt_size"] == 2048)]
    uncapped = dataclasses.replace(Oracle.load("llama-3.1-70b_h100_tp4"), power_limit_w=None)
    monkeypatch.setattr(prefill.Oracle, "load", lambda name: uncapped)
    again = prefill.replay(row.drop(columns=["simulated_ms", "error_pct"]))
    c, n, hide = StepCoef.of(uncapped.time_coef_s), 2048, uncapped.overlap
    assert hide is not None  # its weights' read hidden behind its GEMMs, or the other way round
    linear = c.const + c.prefill_seqs + c.prefill_tokens * n + c.prefill_attn * n * (n + 1) / 2
    step_s = linear - min(hide.weights_s, hide.per_token_s * n)
    assert again["simulated_ms"].iloc[0] == pytest.approx(1e3 * step_s, rel=1e-9)
    shipped = row.iloc[0]
    assert shipped["simulated_ms"] >= again["simulated_ms"].iloc[0]
    assert shipped["error_pct"] == pytest.approx(100 * (shipped["simulated_ms"] / shipped["measured_ms"] - 1))


def test_sim_validate_prints_and_writes_the_prefill_section(tmp_path, capsys):
    small = tmp_path / "one.csv"
    rows = pd.read_csv("oracle/data/mlenergy_v3_lm_arena_chat.csv").iloc[:1]
    rows.to_csv(small, index=False)
    assert main([f"benchmark={small}", f"out={tmp_path / 'v'}", "plot=false", "progress=false"]) == 0
    out = capsys.readouterr().out
    assert "prefill: Splitwise's measured prompt times" in out and (tmp_path / "v" / "prefill.csv").exists()
