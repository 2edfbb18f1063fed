"""The console's table says what the prefix cache found, in one line, only when a run found some."""

from __future__ import annotations

from dataclasses import replace

import pytest

import traces
from sim.config import ServerConfig, SloConfig
from sim.console.table import brief, prefix_cache, table
from sim.results.metrics import run_summary
from sim.results.summary import SAME_RUN, RunSummary, Summary
from sim.serving.run import simulate


@pytest.fixture
def azure(llama) -> RunSummary:
    """A run of a trace without prefix blocks: no hits."""
    return run_summary(simulate(traces.load("azure_chat").iloc[:300], llama, ServerConfig()), SloConfig())


def _hits(run: RunSummary, policy: str, cached: int, rate: float, saved_j: float) -> RunSummary:
    return replace(run, policy=policy, cached_tokens=cached, prefix_hit_rate=rate, cache_saved_j=saved_j)


def test_a_line_gives_each_runs_hit_rate_cached_tokens_and_prefill_spared(azure):
    run = _hits(azure, "truncation", 4_500_000, 0.373, 812_000.0)
    base = _hits(azure, "none", 46_592, 0.0341, 677.4)
    lines = table(Summary(run, {}, {}, base, "simulated")).splitlines()
    at = [i for i, x in enumerate(lines) if x.startswith("prefix cache")]
    assert at == [1 + next(i for i, x in enumerate(lines) if x.startswith("quality cost"))]  # one line, after it
    assert lines[at[0]] == (
        "prefix cache: truncation 37.3% of prompt tokens found cached (4,500,000 tokens), 812 kJ of prefill "
        "spared; none 3.4% (46,592 tokens), 677 J"
    )
    assert "prefix hits 37.3%" in brief(Summary(run, {}, {}, base, "simulated"))


def test_a_baseline_that_found_none_still_shows_beside_a_policy_that_did(azure):
    base = _hits(azure, "none", 1_234_567, 0.5, 2.5e6)
    line = prefix_cache(Summary(replace(azure, policy="truncation"), {}, {}, base, "cached"))
    assert line == (
        "prefix cache: truncation 0.0% of prompt tokens found cached (0 tokens), 0 J of prefill spared; "
        "none 50.0% (1,234,567 tokens), 2.5 MJ"
    )


def test_a_run_that_is_its_own_baseline_is_named_once(azure):
    run = _hits(azure, "none", 1_000, 0.25, 1_500.0)
    assert prefix_cache(Summary(run, {}, {}, run, SAME_RUN)) == (
        "prefix cache: 25.0% of prompt tokens found cached (1,000 tokens), 1.5 kJ of prefill spared"
    )


def test_no_hits_no_line(azure):
    assert (azure.cached_tokens, azure.prefix_hit_rate, azure.cache_saved_j) == (0, 0.0, 0.0)
    summary = Summary(replace(azure, policy="truncation"), {}, {}, azure, "simulated")
    assert prefix_cache(summary) is None
    assert "prefix" not in table(summary) and "prefix" not in brief(summary)
