"""Savings against the baseline compare the requests both runs served, and say what they left out;
the prefix cache's figures add up from the records."""

from __future__ import annotations

import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import traces
from oracle.model import Oracle
from sim.app import execute, prepare
from sim.config import ServerConfig, SloConfig
from sim.policies.base import Summarizer
from sim.policies.summarization import Summarization
from sim.results.metrics import run_summary, saving_pct
from sim.run_config import app_config
from sim.serving.run import simulate
from tests.sim.conftest import rejecting


def _run(tmp_path, rows, *overrides):
    path = tmp_path / "trace.csv"
    pd.DataFrame(rows, columns=["arrival_s", "n_in", "n_out"]).to_csv(path, index=False)
    over = [f"output_dir={tmp_path / 'out'}", "trace=file", f"trace.path={path}", "progress=false", "plots=false",
            "tracking.enabled=false", "policy=adaptive_gen", *overrides]  # fmt: skip
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose("sim", overrides=over)
    return execute(prepare(app_config(OmegaConf.to_container(cfg, resolve=True))))


def _records(tmp_path):
    return (pd.read_parquet(tmp_path / "out" / f) for f in ("requests.parquet", "requests_baseline.parquet"))


def test_a_request_only_the_policy_serves_is_left_out_of_the_savings(tmp_path, capsys):
    """n_out 10⁹ is longer than the baseline's KV cache; adaptive_gen cuts it and serves it."""
    rows = [(0.5 * i, 200, 150) for i in range(10)] + [(5.0, 200, 10**9)]
    with rejecting("1 of 11 requests were rejected, never served: 1 longer than the KV cache holds"):  # the baseline's
        summary = _run(tmp_path, rows)
    assert summary.baseline is not None
    assert (summary.run.completed, summary.baseline.completed, summary.compared_requests) == (11, 10, 10)
    policy, base = _records(tmp_path)
    both = policy["completed"] & base["completed"]
    expected = saving_pct(base["energy_j"][both].sum(), policy["energy_j"][both].sum())
    assert summary.energy_savings_pct == pytest.approx(expected, rel=1e-12)
    assert summary.energy_savings_pct != pytest.approx(saving_pct(summary.baseline.energy_j, summary.run.energy_j))
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("energy savings vs none")]
    assert (
        "on the step energy of the 10 requests both served; 1 left out (1 served only by the policy, "
        "the other rejected them: 1 longer than the KV cache holds)" in line
    )


def test_runs_that_served_the_same_requests_compare_their_totals(tmp_path, capsys):
    summary = _run(tmp_path, [(0.5 * i, 200, 150 + 50 * i) for i in range(10)], "policy.factor=0.3")
    assert summary.baseline is not None and summary.comparison_note == ""
    assert summary.compared_requests == summary.run.completed == summary.baseline.completed == 10
    assert summary.energy_savings_pct == saving_pct(summary.baseline.energy_j, summary.run.energy_j)
    assert "left out" not in capsys.readouterr().out


def _prompt_tokens(r: pd.DataFrame) -> int:
    """What the prefills needed, cached or computed: served prompts, re-prefills, summarised originals."""
    assert r["completed"].all()
    return int(r["n_in_served"].sum() + r["recomputed_tokens"].sum() + r.loc[r["summary_tokens"] > 0, "n_in"].sum())


@pytest.mark.parametrize("summarised", [False, True])
def test_the_prefix_cache_figures_add_up_from_the_records(llama, summarised):
    """Mooncake prompts share leading blocks: hits; long prompts preempt (re-prefills count as
    prompt tokens needed); summarization requests read the original prompts (and find them cached)."""
    summarizer = Summarizer(Oracle.load("llama-3.2-1b_h100"), "separate")
    policy = Summarization(8192, 256, summarizer) if summarised else None
    result = simulate(traces.load("mooncake_conversation").iloc[:300], llama, ServerConfig(), policy)
    s, r = run_summary(result, SloConfig()), result.requests
    assert s.cached_tokens == r["cached_tokens"].sum() > 0 and s.cache_saved_j == pytest.approx(
        r["cache_saved_j"].sum()
    )
    assert s.cache_saved_j > 0 and 0 < s.prefix_hit_rate < 1
    assert s.prefix_hit_rate == s.cached_tokens / _prompt_tokens(r)
    if summarised:
        assert (r["summary_tokens"] > 0).any() and r.loc[r["summary_tokens"] > 0, "cached_tokens"].sum() > 0
    else:
        assert r["recomputed_tokens"].sum() > 0


def test_a_trace_without_prefix_blocks_has_no_hits(llama):
    s = run_summary(simulate(traces.load("azure_chat").iloc[:300], llama, ServerConfig()), SloConfig())
    assert (s.cached_tokens, s.prefix_hit_rate, s.cache_saved_j) == (0, 0.0, 0.0)
