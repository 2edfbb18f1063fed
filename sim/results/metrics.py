"""Metrics of a simulation, as pure functions of its records: energy (J), power (W), latency (s).

Idle energy is charged over a horizon (default: the run's makespan; a paired comparison passes
the longer of the two so both runs cover the same wall-clock window): each server draws its idle
power whenever it runs no step. Per-request energies plus idle energy equal the total.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from sim.config import SloConfig
from sim.engine.jobs import REJECT_KV, REJECT_REASONS, REJECT_SUMMARY, REJECT_TOKEN_BUDGET
from sim.engine.ledger import ServerStats
from sim.engine.spans import PeakSweep
from sim.results.records import RecordsFile
from sim.results.summary import Latency, RunSummary, Summary
from sim.serving.fleet import Fleet
from sim.serving.run import SimResult

LATENCIES = ("ttft_s", "tpot_s", "e2e_s")


def percentiles(values: np.ndarray) -> dict[str, float]:
    """p50, p90, p99 and mean of the finite values (NaN when there are none)."""
    v = values[np.isfinite(values)]
    if not v.size:
        return {"p50": math.nan, "p90": math.nan, "p99": math.nan, "mean": math.nan}
    mean = float(v.mean())
    p50, p90, p99 = np.percentile(v, [50, 90, 99], overwrite_input=True)  # v is a copy: partitioned in place
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": mean}


def idle_energy_j(result: SimResult, horizon_s: float | None = None) -> float:
    """Idle energy (J) of all servers over [0, horizon] (default: the makespan)."""
    horizon = max(result.makespan_s, horizon_s or 0.0)
    return float(sum(server_idle_energy_j(s, horizon) for s in result.servers))


def server_idle_energy_j(server: ServerStats, horizon_s: float) -> float:
    """Idle energy (J) of one server over [0, horizon_s]: idle power whenever it runs no step."""
    return server.idle_power_w * max(horizon_s - server.busy_s, 0.0)


def mean_clock_mhz(servers: Sequence[ServerStats]) -> float:
    """The SM clock (MHz) averaged over all servers' busy time; NaN if any busy server's clock is
    unknown (`ServerStats.known_mhz_s`) or none was busy."""
    busy = [s for s in servers if s.busy_s > 0]
    logs = [s.known_mhz_s for s in busy]
    if not busy or any(m is None for m in logs):
        return math.nan
    return sum(float(np.sum(m)) for m in logs if m is not None) / sum(s.busy_s for s in busy)


def fleet_peak_power_w(servers: Sequence[ServerStats]) -> float:
    """Highest total power (W) of all servers at any instant, idle power included.

    Each server draws its idle power outside its spans and, within a span, the span's peak step
    power (a conservative bound: power varies little within a span). A sweep over span starts and
    ends sums the servers; an end is applied before a start at the same time.
    """
    binned = [s.name for s in servers if s.span_bin_s > 0]
    if binned:
        raise ValueError(
            f"server(s) {binned} keep their spans in time bins (a streamed run): their fleet peak is "
            "SimResult.peak_power_w, computed as the run went"
        )
    if len(servers) == 1:
        return lone_peak_power_w(servers[0])
    sweep = PeakSweep([s.idle_power_w for s in servers])  # the same sweep a streamed run does as it goes
    for i, s in enumerate(servers):
        sweep.add(i, s.span_start_s, s.span_s, s.span_peak_w)
    return sweep.finish()


def lone_peak_power_w(s: ServerStats) -> float:
    """`fleet_peak_power_w` of one server, without the sweep's sort: its spans never overlap, so its
    power peaks in its highest span that lasts (clipped to the next span's start), or at idle."""
    start = s.span_start_s
    end = np.minimum(start + s.span_s, np.append(start[1:], np.inf))
    lift = np.maximum(s.span_peak_w - s.idle_power_w, 0.0)[end > start]
    return float(s.idle_power_w) + (float(lift.max()) if lift.size else 0.0)


def slo_attainment(records: pd.DataFrame | RecordsFile, slo: SloConfig) -> float:
    """Share of all requests (rejected ones fail) with TTFT ≤ slo.ttft_s and TPOT ≤ slo.tpot_s."""
    if not len(records):
        return math.nan
    ok = records["completed"].to_numpy() & (records["ttft_s"].to_numpy() <= slo.ttft_s)
    tpot = records["tpot_s"].to_numpy()
    ok &= np.isnan(tpot) | (tpot <= slo.tpot_s)
    return float(ok.mean())


def prefill_tokens(records: pd.DataFrame | RecordsFile) -> int:
    """Prompt tokens the run's prefills needed, cached or computed: the served prompts of the
    completed requests (n_in_served), the original prompts (n_in) of the summarization requests
    served (those of requests with a summary not rejected) and the tokens preemptions made
    prefill again or threw away (recomputed_tokens). `prefix_hit_rate`'s denominator."""
    done = records["completed"].to_numpy()
    tokens = int(records["n_in_served"].to_numpy()[done].sum()) + int(records["recomputed_tokens"].sum())
    summarised = records["summary_tokens"].to_numpy() > 0
    if summarised.any():
        summarised &= (records["reject_reason"] != REJECT_REASONS[REJECT_SUMMARY]).to_numpy()
        tokens += int(records["n_in"].to_numpy()[summarised].sum())
    return tokens


def summarize(result: SimResult, slo: SloConfig, horizon_s: float | None = None) -> dict[str, Any]:
    """`run_summary` as a plain dict (the summary.json keys of one run)."""
    return run_summary(result, slo, horizon_s).to_dict()


def run_summary(result: SimResult, slo: SloConfig, horizon_s: float | None = None) -> RunSummary:
    """Energy (J), power (W), latency (s), SLO attainment, quality cost and speed of one run."""
    r = result.records  # read a column at a time: a streamed run's records stay on disk
    done = r["completed"].to_numpy()
    reasons = r["reject_reason"]
    active = float(sum(s.active_energy_j for s in result.servers))
    idle = idle_energy_j(result, horizon_s)
    energy = active + idle
    horizon = max(result.makespan_s, horizon_s or 0.0)
    out_tokens = int(r["n_out_served"].to_numpy()[done].sum())
    in_tokens = int(r["n_in_served"].to_numpy()[done].sum())
    n_done = int(done.sum())
    dropped, cut = int(r["input_tokens_dropped"].sum()), int(r["output_tokens_cut"].sum())
    asked = in_tokens + out_tokens + dropped + cut
    lat = {key: Latency(**percentiles(r[key].to_numpy()[done])) for key in LATENCIES}
    cached, prompts = int(r["cached_tokens"].sum()), prefill_tokens(r)
    return RunSummary(
        policy=result.policy,
        requests=len(r),
        completed=n_done,
        rejected=len(r) - n_done,
        rejected_kv_cache=int((reasons == REJECT_REASONS[REJECT_KV]).sum()),
        rejected_token_budget=int((reasons == REJECT_REASONS[REJECT_TOKEN_BUDGET]).sum()),
        rejected_summary=int((reasons == REJECT_REASONS[REJECT_SUMMARY]).sum()),
        preemptions=int(r["preemptions"].sum()),
        recomputed_tokens=int(r["recomputed_tokens"].sum()),
        cached_tokens=cached,
        prefix_hit_rate=cached / prompts if prompts else math.nan,
        cache_saved_j=float(r["cache_saved_j"].sum()),
        prefill_energy_j=float(r["prefill_energy_j"].sum()),
        input_tokens=in_tokens,
        output_tokens=out_tokens,
        energy_j=energy,
        active_energy_j=active,
        idle_energy_j=idle,
        energy_per_request_j=energy / n_done if n_done else math.nan,
        energy_per_output_token_j=energy / out_tokens if out_tokens else math.nan,
        output_tokens_per_j=out_tokens / energy if energy else math.nan,
        avg_power_w=energy / horizon if horizon else math.nan,
        peak_power_w=fleet_peak_power_w(result.servers) if result.peak_power_w is None else result.peak_power_w,
        mean_clock_mhz=mean_clock_mhz(result.servers),
        clock_budget_missed_steps=sum(s.missed_budget_steps for s in result.servers),
        makespan_s=result.makespan_s,
        ttft_s=lat["ttft_s"],
        tpot_s=lat["tpot_s"],
        e2e_s=lat["e2e_s"],
        slo_attainment=slo_attainment(r, slo),
        input_tokens_dropped=dropped,
        output_tokens_cut=cut,
        requests_shaped=int(r["shaped"].sum()),
        quality_cost_pct=100.0 * (dropped + cut) / asked if asked else math.nan,
        summary_energy_j=float(r["summary_energy_j"].sum()),
        sim_wall_s=result.wall_s,
        sim_requests_per_s=len(r) / result.wall_s if result.wall_s > 0 else math.nan,
    )


def fleet_summary(result: SimResult, fleet: Fleet, horizon_s: float | None = None) -> dict[str, Any]:
    """Router and per-pool activity (by pool name): replicas, requests served, energy (J), GPU
    utilisation. A summarizer on its own GPU appears as a pool named 'summarizer'.
    """
    horizon = max(result.makespan_s, horizon_s or 0.0)
    r = result.records
    served = np.bincount(r["server"].to_numpy()[r["completed"].to_numpy()], minlength=len(result.servers))
    oracles = {p.name: p.oracle.name for p in fleet.pools}
    per_replica = {p.name: p.oracle.gpus for p in fleet.pools}
    pools: dict[str, dict[str, Any]] = {}
    for index, s in enumerate(result.servers):
        p = pools.setdefault(
            s.pool,
            {"oracle": oracles.get(s.pool), "replicas": 0, "gpus": 0, "requests": 0,
             "active_energy_j": 0.0, "idle_energy_j": 0.0, "busy_s": 0.0},
        )  # fmt: skip
        p["replicas"] += 1
        p["gpus"] += per_replica.get(s.pool, 1)
        p["requests"] += int(served[index])
        p["active_energy_j"] += s.active_energy_j
        p["idle_energy_j"] += server_idle_energy_j(s, horizon)
        p["busy_s"] += s.busy_s
    for p in pools.values():
        p["utilization"] = p.pop("busy_s") / (p["replicas"] * horizon) if horizon > 0 else math.nan
    return {"router": fleet.router, "replicas": fleet.replicas, "gpus": fleet.gpus, "pools": pools}


def saving_pct(base: float, new: float) -> float:
    """Share (%) of `base` saved by `new`; NaN when base is 0."""
    return 100.0 * (base - new) / base if base else math.nan


@dataclass(frozen=True)
class Comparison:
    """What a policy's savings against its baseline compare: the requests both runs served.

    When one run served requests the other rejected (a policy may shorten a request the baseline
    cannot hold), totals would compare different work: the savings then compare the energy (J)
    of the requests both served, their share of the steps (`policy_j`, `baseline_j`; idle energy
    left out, since it depends on the whole schedule), and `note` says how many were left out and
    why. When both served the same requests, the totals (idle included) are compared.
    """

    both: int
    policy_j: float
    baseline_j: float
    note: str = ""

    def energy(self, run: RunSummary, baseline: bool = False) -> tuple[float, float, float]:
        """(energy, active energy, energy per request) in J of `run` over the compared requests."""
        if not self.note:
            return run.energy_j, run.active_energy_j, run.energy_per_request_j
        energy = self.baseline_j if baseline else self.policy_j
        return energy, energy, energy / self.both if self.both else math.nan


def compare(policy: SimResult, baseline: SimResult) -> Comparison:
    """The requests both runs served, their energy (J) in each, and those left out, in words."""
    a, b = policy.records, baseline.records
    done_a, done_b = a["completed"].to_numpy(), b["completed"].to_numpy()
    only_a, only_b = done_a & ~done_b, done_b & ~done_a
    parts = [_left_out(int(n), who, other["reject_reason"].to_numpy()[mask]) for n, who, other, mask in (
        (only_a.sum(), "the policy", b, only_a), (only_b.sum(), "the baseline", a, only_b)) if n]  # fmt: skip
    note = ""
    if parts:
        note = (f"{int((only_a | only_b).sum()):,} left out ({'; '.join(parts)}), and idle energy, "
                "which depends on the whole schedule")  # fmt: skip
    both = done_a & done_b
    energy_a, energy_b = a["energy_j"].to_numpy()[both].sum(), b["energy_j"].to_numpy()[both].sum()
    return Comparison(int(both.sum()), float(energy_a), float(energy_b), note)


def _left_out(n: int, served_by: str, reasons: np.ndarray) -> str:
    """'N served only by X (the other rejected them: K longer than the KV cache holds, …)'."""
    kinds, counts = np.unique(np.asarray(reasons, dtype=str), return_counts=True)
    why = ", ".join(f"{c:,} {k}" for k, c in zip(kinds, counts, strict=True))
    return f"{n:,} served only by {served_by}, the other rejected them: {why}"


def with_savings(summary: Summary, policy: SimResult, baseline: SimResult) -> Summary:
    """`summary` (its run and baseline figures set) with the savings (%) of `policy` against
    `baseline` on the requests both served, and how many that is."""
    assert summary.baseline is not None
    compared = compare(policy, baseline)
    energy, active, per_request = compared.energy(summary.run)
    b_energy, b_active, b_per_request = compared.energy(summary.baseline, baseline=True)
    return replace(
        summary,
        energy_savings_pct=saving_pct(b_energy, energy),
        energy_per_request_savings_pct=saving_pct(b_per_request, per_request),
        active_energy_savings_pct=saving_pct(b_active, active),
        compared_requests=compared.both,
        comparison_note=compared.note,
    )
