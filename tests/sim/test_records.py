"""Streamed runs: the Parquet records, summary and fleet peak equal the in-memory run's."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import sim.records
import sim.run
import sim.spans
import traces
from sim.config import ServerConfig, SloConfig
from sim.fleet import FleetConfig, build_fleet
from sim.jobs import Counts, JobTable
from sim.metrics import fleet_peak_power_w, run_summary
from sim.policies import PolicyContext, build_policy
from sim.run import simulate_fleet


def _load(name, key):
    raise AssertionError("no other oracle")


def _same_summary(streamed, memory):
    """Every summary figure equal; busy time and step energy summed by chunks, to 1e-12."""
    a, b = streamed.to_dict(), memory.to_dict()
    for key in ("active_energy_j", "idle_energy_j", "energy_j", "energy_per_request_j",
                "energy_per_output_token_j", "output_tokens_per_j", "avg_power_w"):  # fmt: skip
        assert a.pop(key) == pytest.approx(b.pop(key), rel=1e-12), key
    for key in ("sim_wall_s", "sim_requests_per_s"):
        a.pop(key), b.pop(key)
    assert a == b


def _check(requests, fleet, policy, tmp_path, monkeypatch):
    monkeypatch.setattr(sim.records, "CHUNK_ROWS", 4096)  # several row groups
    monkeypatch.setattr(sim.run, "DRAIN_SPANS", 600)  # span logs handed over many times
    monkeypatch.setattr(sim.run, "HAND_OVER_MIN", 100)
    memory = simulate_fleet(requests, fleet, policy)
    path = tmp_path / "requests.parquet"
    streamed = simulate_fleet(requests, fleet, policy, records_path=path)
    assert pq.ParquetFile(path).metadata.num_row_groups == math.ceil(len(requests) / 4096)
    memory.requests.to_parquet(tmp_path / "memory.parquet", index=False)
    pd.testing.assert_frame_equal(pd.read_parquet(path), pd.read_parquet(tmp_path / "memory.parquet"))
    pd.testing.assert_frame_equal(streamed.requests, memory.requests)
    assert streamed.peak_power_w == fleet_peak_power_w(memory.servers)  # exact, not a bound
    for s, m in zip(streamed.servers, memory.servers, strict=True):
        assert s.span_bin_s > 0 and m.span_bin_s == 0
        assert (s.steps, s.peak_power_w, s.preemptions) == (m.steps, m.peak_power_w, m.preemptions)
        assert s.busy_s == pytest.approx(m.busy_s, rel=1e-12)
        assert s.span_energy_j.sum() == pytest.approx(m.active_energy_j, rel=1e-9)
    _same_summary(run_summary(streamed, SloConfig()), run_summary(memory, SloConfig()))
    return streamed


def test_a_streamed_azure_chat_run_writes_the_records_of_the_in_memory_run(llama, tmp_path, monkeypatch):
    requests = traces.load("azure_chat")
    fleet = build_fleet(FleetConfig(), llama, ServerConfig(), SloConfig(), _load)
    streamed = _check(requests, fleet, None, tmp_path, monkeypatch)
    assert streamed.servers[0].span_s.size <= sim.spans.BINS


def test_a_streamed_fleet_run_with_summaries_matches_too(llama, tmp_path, monkeypatch):
    requests = traces.load("azure_chat", rate_scale=10.0, max_requests=6000)
    fleet = build_fleet(FleetConfig(replicas=3, router="least_tokens"), llama, ServerConfig(), SloConfig(), _load)
    context = PolicyContext(llama, requests["n_in"].to_numpy(), requests["n_out"].to_numpy())
    params = {"min_input_tokens": 2000, "summary_tokens": 200, "placement": "same", "summarizer_oracle": None}
    policy = build_policy("summarization", params, context)
    streamed = _check(requests, fleet, policy, tmp_path, monkeypatch)
    assert (streamed.records["summary_tokens"] > 0).sum() > 10


def test_features_need_the_whole_span_log(llama, tmp_path):
    fleet = build_fleet(FleetConfig(), llama, ServerConfig(record_features=True), SloConfig(), _load)
    with pytest.raises(ValueError, match="record_features"):
        simulate_fleet(traces.load("azure_chat", max_requests=10), fleet, records_path=tmp_path / "r.parquet")


def test_the_job_table_keeps_lengths_in_four_bytes_and_rare_counters_sparse():
    jobs = JobTable([3, 70_000], [5, 1])
    assert jobs.n_in.itemsize == 4 and jobs.n_in[1] + jobs.n_out[1] == 70_001
    jobs.preemptions[1] += 1
    jobs.extra_prefill_pairs[1] += 2.5
    assert jobs.preemptions.dense(np.array([0, 1]), np.int32).tolist() == [0, 1]
    assert jobs.extra_prefill_pairs.dense(np.array([1, 0])).tolist() == [2.5, 0.0]
    assert Counts().dense(np.array([4])).tolist() == [0.0]
    with pytest.raises(ValueError, match="at most 2,147,483,647"):
        JobTable([2**31], [1])


def test_streamed_spans_cannot_be_clipped_into_windows(llama, tmp_path):
    from sim.windows import clip

    fleet = build_fleet(FleetConfig(), llama, ServerConfig(), SloConfig(), _load)
    r = simulate_fleet(traces.load("azure_chat", max_requests=50), fleet, records_path=tmp_path / "r.parquet")
    with pytest.raises(ValueError, match="time bins"):
        clip(r.servers[0], 0.0, 10.0)
    assert dataclasses.replace(r.servers[0], span_bin_s=0.0).span_s.size > 0


def test_the_main_command_streams_the_records_the_in_memory_run_has(tmp_path):
    from sim.app import execute, prepare
    from tests.sim.test_sim_app import config

    prepared = prepare(config(tmp_path, "policy=truncation", "tracking.enabled=false", "plots=false"))
    summary = execute(prepared)
    out = tmp_path / "out"
    runs = [simulate_fleet(prepared.requests, prepared.fleet, p) for p in (prepared.policy, None)]
    for name, memory in zip(("requests.parquet", "requests_baseline.parquet"), runs, strict=True):
        pd.testing.assert_frame_equal(pd.read_parquet(out / name), memory.requests)
    horizon = max(r.makespan_s for r in runs)
    _same_summary(summary.run, run_summary(runs[0], prepared.config.slo, horizon))
    assert summary.baseline is not None
    _same_summary(summary.baseline, run_summary(runs[1], prepared.config.slo, horizon))
