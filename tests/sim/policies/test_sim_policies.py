"""Policies as plain objects: decisions, vectorised shaping, quality cost, the registry."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from oracle.model import OracleRangeWarning
from sim.config import ServerConfig
from sim.engine.jobs import ServerState
from sim.policies import PolicyContext, Request, build_policy, known_policies, policy_config
from sim.policies.truncation import efficiency_cap
from sim.schema import ConfigError
from sim.serving.run import simulate
from tests.sim.conftest import trace

N_IN = np.array([1, 10, 300, 900, 1500, 5000, 12000])
N_OUT = np.array([1, 5, 60, 700, 20, 3000, 400])


def context(oracle):
    return PolicyContext(oracle, N_IN, N_OUT)


def test_registry_lists_the_shipped_policies():
    assert set(known_policies()) >= {"none", "truncation", "summarization", "adaptive_gen"}
    with pytest.raises(ConfigError, match=r"policy.name 'nope'.*known: \[.*'truncation'"):
        policy_config("nope")


@pytest.mark.parametrize(
    "name, params",
    [
        ("none", {}),
        ("truncation", {"max_input_tokens": 512}),
        ("truncation", {}),
        ("summarization", {"min_input_tokens": 1000, "summary_tokens": 100}),
        ("adaptive_gen", {"factor": 0.5}),
    ],
)
def test_vectorised_shaping_equals_per_request_decisions(llama, name, params):
    policy = build_policy(name, params, context(llama))
    shaped = policy.shape(N_IN, N_OUT)
    for k, (i, o) in enumerate(zip(N_IN.tolist(), N_OUT.tolist(), strict=True)):
        d = policy.decide(Request(0.0, i, o))
        assert (d.n_in, d.n_out, d.summary_tokens) == (
            shaped.n_in[k], shaped.n_out[k], shaped.summary_tokens[k],
        )  # fmt: skip


def test_truncation_keeps_short_prompts_and_caps_long_ones(llama):
    policy = build_policy("truncation", {"max_input_tokens": 512}, context(llama))
    assert policy.shape(N_IN, N_OUT).n_in.tolist() == [1, 10, 300, 512, 512, 512, 512]


def test_truncation_default_cap_is_where_efficiency_falls_below_the_fraction(llama):
    cap = efficiency_cap(llama, 129, 8, 0.8)
    best = llama.efficiency(np.arange(1, cap + 2), 129, 8).max()
    assert llama.efficiency(cap, 129, 8) >= 0.8 * best > llama.efficiency(cap + 1, 129, 8)
    policy = build_policy("truncation", {"output_tokens": 129}, context(llama))
    assert policy.max_input_tokens == cap
    assert build_policy("truncation", {"efficiency_fraction": 0.5}, context(llama)).max_input_tokens > cap


def test_adaptive_gen_caps_at_the_sweet_spot(llama):
    policy = build_policy("adaptive_gen", {"factor": 1.0, "min_output_tokens": 8}, context(llama))
    star = llama.optimal_output(N_IN, 1)
    expected = np.minimum(N_OUT, np.floor(np.clip(star, 8, 4096)))
    assert policy.shape(N_IN, N_OUT).n_out.tolist() == expected.astype(int).tolist()


@pytest.mark.parametrize("factor", [0.25, 0.5])
def test_adaptive_gen_tightens_when_the_queue_grows(llama, factor):
    policy = build_policy("adaptive_gen", {"queue_threshold": 4, "queue_factor": factor}, context(llama))
    assert policy.dynamic
    request = Request(0.0, 1000, 4000)
    loose, at, above = (policy.decide(request, ServerState(q, 10, 1000)).n_out for q in (3, 4, 40))
    assert loose < request.n_out  # the sweet-spot cap binds for this request
    assert at == above < loose  # tightened from the threshold on, not further with a longer queue
    assert abs(at - factor * loose) <= 1  # by queue_factor, up to rounding to whole tokens


def test_policy_scans_outside_the_range_do_not_warn_but_a_run_outside_it_does(llama):
    requests = trace([(0.0, 200, 100), (1.0, 300, 300_000), (2.0, 100, 50), (3.0, 400, 80)])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        truncation = build_policy("truncation", {}, context(llama))  # scans n_in from 1 token
        adaptive = build_policy("adaptive_gen", {}, context(llama))
        adaptive.caps([1, 10**6])
        assert not [w for w in caught if w.category is OracleRangeWarning]
        simulate(requests, llama, ServerConfig(), truncation)
    ranged = [str(w.message) for w in caught if w.category is OracleRangeWarning]
    assert len(ranged) == 1
    assert "1 of 4 requests of this run (25.0 % of requests, 99.7 % of tokens)" in ranged[0]
    assert "n_out 300000" in ranged[0] and llama.name in ranged[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        simulate(requests, llama, ServerConfig(), adaptive)  # caps n_out at n_out*: back in range
    assert not [w for w in caught if w.category is OracleRangeWarning]


def test_dynamic_dispatch_without_tightening_equals_static_shaping(llama):
    requests = trace([(0.1 * i, 200 + 50 * i, 2000) for i in range(30)])
    static = build_policy("adaptive_gen", {}, context(llama))
    dynamic = build_policy("adaptive_gen", {"queue_threshold": 10**6}, context(llama))
    a = simulate(requests, llama, ServerConfig(), static).requests
    b = simulate(requests, llama, ServerConfig(), dynamic).requests
    for col in ("n_out_served", "energy_j", "ttft_s", "e2e_s"):
        np.testing.assert_allclose(a[col], b[col], rtol=1e-12)


@pytest.mark.parametrize("placement", ["separate", "same"])
def test_summarization_charges_the_summary_and_runs_on_it(llama, placement):
    params = {"min_input_tokens": 1000, "summary_tokens": 100, "placement": placement}
    if placement == "same":
        params["summarizer_oracle"] = None
    policy = build_policy("summarization", params, context(llama))
    requests = trace([(0.0, 3000, 50), (0.5, 500, 50)])
    r = simulate(requests, llama, ServerConfig(), policy)
    assert len(r.servers) == (2 if placement == "separate" else 1)
    long, short = r.requests.iloc[0], r.requests.iloc[1]
    assert long["n_in_served"] == 100 and long["summary_tokens"] == 100
    assert long["input_tokens_dropped"] == 2900 and short["input_tokens_dropped"] == 0
    assert long["summary_energy_j"] > 0 and short["summary_energy_j"] == 0
    assert long["start_s"] == 0.0 and long["first_token_s"] > 100 * 0.001  # waited for its summary
    active = sum(s.active_energy_j for s in r.servers)
    assert np.isclose(r.requests["energy_j"].sum(), active, rtol=1e-12)


def test_summarizer_oracle_that_does_not_exist_names_the_key(llama):
    with pytest.raises(ConfigError, match="policy.summarizer_oracle"):
        build_policy("summarization", {"summarizer_oracle": "no-such-model_h100"}, context(llama))


@pytest.mark.parametrize(
    "name, params, key",
    [
        ("truncation", {"max_input_tokens": -5}, "policy.max_input_tokens"),
        ("adaptive_gen", {"min_output_tokens": 0}, "policy.min_output_tokens"),
        ("adaptive_gen", {"factor": -1.0}, "policy.factor"),
        ("summarization", {"summary_tokens": 4000}, "policy.min_input_tokens"),
        ("summarization", {"placement": "moon"}, "policy.placement"),
        ("truncation", {"max_input": 5}, "policy.max_input"),
    ],
)
def test_bad_policy_parameters_name_the_key(name, params, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        policy_config(name, params)
