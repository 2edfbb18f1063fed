"""Invariants on random traces and servers: conservation, one outcome per request, modes agree."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.config import ServerConfig, SloConfig
from sim.engine.jobs import JobTable
from sim.engine.simple import SimpleEngine
from sim.results.metrics import idle_energy_j, summarize
from sim.schedulers import SCHEDULERS
from sim.serving.run import simulate
from tests.sim.conftest import flat_kv, random_rejections, toy_oracle, trace

pytestmark = random_rejections

COEF_T = (0.01, 0.001, 1e-5, 0.002, 1e-4, 1e-7)
COEF_E = (3.0, 0.01, 3e-5, 0.001, 0.01, 4e-7)

requests = st.lists(st.tuples(st.floats(0.0, 5.0), st.integers(1, 400), st.integers(1, 60)), min_size=1, max_size=25)
servers = st.builds(
    ServerConfig,
    scheduler=st.sampled_from(sorted(SCHEDULERS)),
    block_size=st.sampled_from([1, 4, 16]),
    mode=st.sampled_from(["continuous", "static"]),
    max_batch_size=st.integers(1, 6),
    max_num_tokens=st.sampled_from([None, 64, 256]),
    chunked_prefill=st.sampled_from([None, True, False]),
    kv_capacity_tokens=st.sampled_from([None, 150, 480, 600]),
)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(rows, server, exact=False, limit_w=None):
    rows = sorted(rows)
    oracle = toy_oracle(COEF_T, COEF_E, idle_power_w=60.0, kv_tokens=None)
    oracle.power_limit_w = limit_w
    if server.kv_capacity_tokens is None:
        server = ServerConfig(**{**server.__dict__, "kv_capacity_tokens": 10_000})
    server = ServerConfig(**{**server.__dict__, "exact_steps": exact})
    return simulate(trace(rows), oracle, server)


@SETTINGS
@given(requests, servers)
def test_energy_is_conserved(rows, server):
    r = run(rows, server)
    s = summarize(r, SloConfig())
    total = r.requests["energy_j"].sum() + idle_energy_j(r)
    assert np.isclose(total, s["energy_j"], rtol=1e-12)
    assert np.isclose(s["active_energy_j"], r.requests["energy_j"].sum(), rtol=1e-12)


@SETTINGS
@given(requests, servers)
def test_every_request_finishes_once_or_is_rejected(rows, server):
    r = run(rows, server).requests
    done = r["completed"].to_numpy()
    assert np.isfinite(r.loc[done, ["start_s", "first_token_s", "finish_s"]].to_numpy()).all()
    assert np.isnan(r.loc[~done, "finish_s"]).all()
    assert (r.loc[done, "arrival_s"] <= r.loc[done, "start_s"]).all()
    assert (r.loc[done, "start_s"] < r.loc[done, "first_token_s"]).all()
    assert (r.loc[done, "first_token_s"] <= r.loc[done, "finish_s"]).all()
    cap = run(rows, server).servers[0].kv_capacity_tokens
    peak = r["n_in"] + r["n_out"] - (0 if SCHEDULERS[server.scheduler].reserve_full else 1)
    blocks = -(-peak // server.block_size)
    too_big = blocks * server.block_size > cap
    chunked = (
        server.chunked_prefill if server.chunked_prefill is not None else SCHEDULERS[server.scheduler].chunked_prefill
    )
    if server.max_num_tokens is not None and not chunked:
        # a paged engine's preempted request re-prefills its prompt and up to n_out − 1 tokens
        too_big |= (r["n_in"] if SCHEDULERS[server.scheduler].reserve_full else peak) > server.max_num_tokens
    engine = SimpleEngine(JobTable([1], [1]), server, flat_kv(cap, server.block_size))
    too_big |= engine.scheduler.never_admitted(engine, r["n_in"].to_numpy(), r["n_out"].to_numpy())  # its own rule
    assert (~done == too_big).all()  # only requests that can never fit are rejected
    assert (r.loc[~done, "reject_reason"] != "").all() and (r.loc[done, "reject_reason"] == "").all()


@SETTINGS
@given(requests, servers)
def test_kv_use_never_exceeds_the_cache(rows, server):
    stats = run(rows, server, exact=True).servers[0]  # exact mode also checks the count sequence by sequence
    assert (stats.span_kv_used <= 1.0 + 1e-12).all() and (stats.span_kv_used >= 0.0).all()


@SETTINGS
@given(requests, servers, st.sampled_from([None, 60.0, 150.0, 250.0]))
def test_closed_form_spans_match_exact_steps(rows, server, limit_w):
    """Also under a power limit that throttles some steps (spans cross it where power falls with
    the context)."""
    fast, exact = run(rows, server, limit_w=limit_w), run(rows, server, exact=True, limit_w=limit_w)
    if limit_w is not None:
        assert all(s.peak_power_w <= limit_w * (1 + 1e-9) for s in fast.servers + exact.servers)
    fast, exact = fast.requests, exact.requests
    for col in ("energy_j", "ttft_s", "tpot_s", "e2e_s", "start_s"):
        np.testing.assert_allclose(fast[col], exact[col], rtol=1e-9, atol=1e-12)
    assert fast["preemptions"].tolist() == exact["preemptions"].tolist()
