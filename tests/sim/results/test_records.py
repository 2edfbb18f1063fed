"""Streamed runs: the Parquet records, summary and fleet peak equal the in-memory run's; row
groups written as soon as they are final, and kept if the run stops."""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

import sim.engine.spans
import sim.results.records
import sim.serving.run
import traces
from sim.config import ServerConfig, SloConfig
from sim.engine.costs import StepCosts
from sim.engine.jobs import DONE, PENDING, REJECTED, Counts, JobTable
from sim.policies import PolicyContext, build_policy
from sim.policies.base import Decision, Policy
from sim.results.metrics import fleet_peak_power_w, run_summary
from sim.results.records import RecordsWriter, Requests, partial
from sim.serving.fleet_config import FleetConfig, build_fleet
from sim.serving.run import simulate_fleet
from tests.sim.conftest import toy_oracle


def _load(name, key):
    raise AssertionError("no other oracle")


def _same_summary(streamed, memory):
    """Every summary figure equal; busy time, step energy and clock time summed by chunks, to 1e-12."""
    a, b = streamed.to_dict(), memory.to_dict()
    for key in ("active_energy_j", "idle_energy_j", "energy_j", "energy_per_request_j",
                "energy_per_output_token_j", "output_tokens_per_j", "avg_power_w", "mean_clock_mhz"):  # fmt: skip
        assert a.pop(key) == pytest.approx(b.pop(key), rel=1e-12), key
    for key in ("sim_wall_s", "sim_requests_per_s"):
        a.pop(key), b.pop(key)
    assert a == b


def _check(requests, fleet, policy, tmp_path, monkeypatch):
    monkeypatch.setattr(sim.results.records, "CHUNK_ROWS", 4096)  # several row groups
    monkeypatch.setattr(sim.serving.run, "DRAIN_SPANS", 600)  # span logs handed over many times
    monkeypatch.setattr(sim.serving.run, "HAND_OVER_MIN", 100)
    monkeypatch.setattr(sim.serving.run, "REPLAY_EVENTS", 37)  # servers fed alone take turns often
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
    assert streamed.servers[0].span_s.size <= sim.engine.spans.BINS


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
    from sim.serving.windows import clip

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


class _StopAt(Policy):
    """Serves every request as it is, but raises `error` when request `at` arrives."""

    name, dynamic = "stop_at", True

    def __init__(self, at_s: float, error: BaseException | None) -> None:
        self.at_s, self.error = at_s, error

    def decide(self, request, state=None):
        if self.error is not None and request.arrival_s >= self.at_s:
            raise self.error
        return Decision(request.n_in, request.n_out)


@pytest.mark.parametrize("error", [RuntimeError("policy failed"), KeyboardInterrupt()])
def test_a_run_that_stops_keeps_the_row_groups_written_in_a_valid_file(error, llama, tmp_path, monkeypatch):
    monkeypatch.setattr(sim.results.records, "CHUNK_ROWS", 512)
    monkeypatch.setattr(sim.serving.run, "DRAIN_SPANS", 600)
    monkeypatch.setattr(sim.serving.run, "HAND_OVER_MIN", 100)
    requests = traces.load("azure_chat", max_requests=6000)
    fleet = build_fleet(FleetConfig(replicas=2, router="least_tokens"), llama, ServerConfig(), SloConfig(), _load)
    at_s = float(requests["arrival_s"].iloc[5000])
    path = tmp_path / "requests.parquet"
    with pytest.raises(type(error)) as stopped:
        simulate_fleet(requests, fleet, _StopAt(at_s, error), records_path=path)
    kept_at = partial(path)
    assert [p.name for p in tmp_path.iterdir()] == [kept_at.name]  # never a part of the records under `path`
    kept = pd.read_parquet(kept_at)
    assert 0 < len(kept) < 5000 and len(kept) % 512 == 0
    assert pq.ParquetFile(kept_at).metadata.num_row_groups == len(kept) // 512
    assert f"records of the first {len(kept):,} of 6,000 requests were kept in {kept_at}" in stopped.value.__notes__[0]
    whole = simulate_fleet(requests, fleet, _StopAt(at_s, None)).requests
    pd.testing.assert_frame_equal(kept, whole.iloc[: len(kept)], check_exact=True)


def test_a_streamed_run_writes_row_groups_before_its_loop_ends(llama, tmp_path, monkeypatch):
    monkeypatch.setattr(sim.results.records, "CHUNK_ROWS", 1024)
    monkeypatch.setattr(sim.serving.run, "DRAIN_SPANS", 600)
    written, close = [], RecordsWriter.close

    def closing(self):
        written.append(self.written)
        return close(self)

    monkeypatch.setattr(RecordsWriter, "close", closing)
    fleet = build_fleet(FleetConfig(), llama, ServerConfig(), SloConfig(), _load)
    simulate_fleet(traces.load("azure_chat", max_requests=6000), fleet, records_path=tmp_path / "r.parquet")
    assert written[0] >= 4096  # the first row groups went out while the server still ran


@given(
    rows=st.lists(st.tuples(st.sampled_from(["done", "rejected", "pending", "unstamped"]), st.booleans()), max_size=30),
    summaries=st.lists(st.sampled_from(["done", "rejected", "pending", "unstamped"]), max_size=30),
    chunk=st.integers(1, 8),
    close=st.booleans(),
)
def test_a_flush_writes_each_whole_row_group_before_the_first_request_not_final(rows, summaries, chunk, close):
    """A request is final when its job, and its summarization job if any, is rejected or done with
    its finish time stamped; a flush writes the row groups before the first one that is not; the
    file, closed or aborted, holds exactly the records of the rows written."""
    parents = np.array([i for i, (_, p) in enumerate(rows) if p][: len(summaries)], dtype=np.int64)
    states = [state for state, _ in rows] + summaries[: parents.size]
    jobs = JobTable([5] * len(states), [3] * len(states))
    for j, state in enumerate(states):
        jobs.status[j] = {"done": DONE, "rejected": REJECTED, "pending": PENDING, "unstamped": DONE}[state]
        jobs.finish_s[j] = 2.0 if state == "done" else np.nan
    n = len(rows)
    made = Requests(np.arange(n, dtype=float), np.full(n, 5), np.full(n, 3), parents, jobs,
                    [StepCosts.from_oracle(toy_oracle())], False)  # fmt: skip
    final = [states[j] in ("done", "rejected") for j in range(n)]
    for k, p in enumerate(parents):
        final[p] = final[p] and states[n + k] in ("done", "rejected")
    first_not_final = final.index(False) if False in final else n
    expected = n if first_not_final == n else first_not_final // chunk * chunk
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "r.parquet"
        writer = RecordsWriter(made, path, chunk)
        writer.flush()
        assert writer.written == expected
        if close:
            writer.close()
        else:
            said = writer.abort()
            assert f"first {expected:,} of {n:,} requests" in said if expected else "no records were written" in said
            assert not path.exists() and partial(path).exists() == bool(expected)
        kept, at = (n, path) if close else (expected, partial(path))
        assert [p.name for p in Path(folder).iterdir()] == [at.name] * (close or bool(kept))  # no temporary file left
        if kept:  # (an empty file does not keep the categories of reject_reason: Arrow writes no dictionary)
            pd.testing.assert_frame_equal(pd.read_parquet(at), made.records(0, kept), check_exact=True)
        if at.exists():
            back = pd.read_parquet(at)
            assert back.columns.tolist() == made.records(0, 0).columns.tolist() and len(back) == kept
