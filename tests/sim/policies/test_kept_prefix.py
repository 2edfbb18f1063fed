"""How much of each prompt's original start a policy keeps (`kept_prefix`), for the prefix cache."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.engine.jobs import ServerState
from sim.policies import Decision, Policy, PolicyContext, Request, build_policy, policy_config, unshaped
from sim.policies.base import Summarizer
from sim.policies.summarization import Summarization
from sim.policies.truncation import KEEPS, Truncation
from sim.schema import ConfigError
from tests.sim.conftest import toy_oracle

N_IN = np.array([1, 10, 511, 512, 513, 900, 5000])
N_OUT = np.array([1, 5, 60, 700, 20, 3000, 400])


def per_request(policy: Policy, n_in, n_out) -> list[Decision]:
    return [
        policy.decide(Request(0.0, i, o))
        for i, o in zip(np.asarray(n_in).tolist(), np.asarray(n_out).tolist(), strict=True)
    ]


def assert_shape_equals_decide(policy: Policy, n_in, n_out) -> None:
    shaped = policy.shape(n_in, n_out)
    decisions = per_request(policy, n_in, n_out)
    assert shaped.kept_prefix is not None and shaped.kept_prefix.dtype == np.int64
    columns = (shaped.n_in, shaped.n_out, shaped.summary_tokens, shaped.kept_prefix)
    vectorised = list(zip(*(c.tolist() for c in columns), strict=True))
    assert [(d.n_in, d.n_out, d.summary_tokens, d.kept_prefix) for d in decisions] == vectorised


@pytest.mark.parametrize(
    "keep, kept",
    [
        ("suffix", [1, 10, 511, 512, 0, 0, 0]),
        ("prefix", [1, 10, 511, 512, 512, 512, 512]),
        ("middle", [1, 10, 511, 512, 256, 256, 256]),
    ],
)
def test_truncation_keeps_the_prefix_its_mode_names(keep, kept):
    policy = build_policy(
        "truncation", {"max_input_tokens": 512, "keep": keep}, PolicyContext(toy_oracle(), N_IN, N_OUT)
    )
    assert isinstance(policy, Truncation) and policy.keep == keep
    shaped = policy.shape(N_IN, N_OUT)
    assert shaped.n_in.tolist() == [1, 10, 511, 512, 512, 512, 512]  # every mode serves the cap
    assert shaped.kept_prefix is not None and shaped.kept_prefix.tolist() == kept
    assert shaped.n_out.tolist() == N_OUT.tolist() and not shaped.summary_tokens.any()
    assert_shape_equals_decide(policy, N_IN, N_OUT)
    assert f"keep={keep}" in policy.describe()


def test_truncation_middle_keeps_the_smaller_half_in_front():
    assert Truncation(7, "middle").decide(Request(0.0, 100, 3)) == Decision(7, 3, kept_prefix=3)


def test_truncation_keeps_the_suffix_by_default():
    assert policy_config("truncation").keep == "suffix"
    assert Truncation(64).decide(Request(0.0, 100, 3)).kept_prefix == 0


@settings(max_examples=200, deadline=None)
@given(
    cap=st.integers(1, 5000),
    keep=st.sampled_from(KEEPS),
    lengths=st.lists(st.tuples(st.integers(1, 20_000), st.integers(1, 5000)), min_size=1, max_size=30),
)
def test_truncation_vectorised_equals_per_request(cap, keep, lengths):
    n_in, n_out = (np.array(c, dtype=np.int64) for c in zip(*lengths, strict=True))
    policy = Truncation(cap, keep)
    assert_shape_equals_decide(policy, n_in, n_out)
    shaped = policy.shape(n_in, n_out)
    assert shaped.kept_prefix is not None
    assert (shaped.n_in == np.minimum(n_in, cap)).all()
    assert (0 <= shaped.kept_prefix).all() and (shaped.kept_prefix <= shaped.n_in).all()
    whole = n_in <= cap
    assert (shaped.kept_prefix[whole] == n_in[whole]).all()  # prompts not cut keep all of them


@pytest.mark.parametrize("bad", ["start", "Prefix", ""])
def test_bad_keep_names_the_key_and_the_choices(bad):
    with pytest.raises(ConfigError, match=r"policy\.keep must be one of \('prefix', 'suffix', 'middle'\)"):
        policy_config("truncation", {"keep": bad})


def test_summarised_requests_keep_no_prefix_and_the_others_keep_all():
    policy = Summarization(1000, 100, Summarizer(toy_oracle()))
    n_in = np.array([10, 999, 1000, 1001, 5000])
    shaped = policy.shape(n_in, np.full(n_in.size, 50))
    assert shaped.kept_prefix is not None and shaped.kept_prefix.tolist() == [10, 999, 1000, 0, 0]
    assert shaped.summary_tokens.tolist() == [0, 0, 0, 100, 100]
    assert_shape_equals_decide(policy, n_in, np.full(n_in.size, 50))


def test_summarization_built_from_its_config_reports_kept_prefix(llama):
    params = {"min_input_tokens": 1000, "summary_tokens": 100, "summarizer_oracle": None}
    policy = build_policy("summarization", params, PolicyContext(llama, N_IN, N_OUT))
    assert policy.shape(N_IN, N_OUT).kept_prefix.tolist() == [1, 10, 511, 512, 513, 900, 0]


def test_policies_that_keep_the_prompt_leave_kept_prefix_unset(llama):
    assert unshaped(N_IN, N_OUT).kept_prefix is None
    assert Decision(5, 6).kept_prefix is None
    context = PolicyContext(llama, N_IN, N_OUT)
    for name, params in (("none", {}), ("adaptive_gen", {}), ("adaptive_gen", {"queue_threshold": 2})):
        policy = build_policy(name, params, context)
        assert policy.shape(N_IN, N_OUT).kept_prefix is None
        assert policy.decide(Request(0.0, 900, 3000), ServerState(5, 1, 10)).kept_prefix is None
    assert Policy().shape(N_IN, N_OUT).kept_prefix is None


class _FrontCut(Policy):
    """Drops the first 100 tokens of prompts over 1000; says nothing about the others."""

    name = "front_cut"

    def decide(self, request: Request, state: ServerState | None = None) -> Decision:
        if request.n_in > 1000:
            return Decision(request.n_in - 100, request.n_out, kept_prefix=0)
        return Decision(request.n_in, request.n_out)


class _OutputCap(Policy):
    name = "output_cap"

    def decide(self, request: Request, state: ServerState | None = None) -> Decision:
        return Decision(request.n_in, min(request.n_out, 10))


def test_default_shape_carries_the_decisions_kept_prefix():
    shaped = _FrontCut().shape(N_IN, N_OUT)
    assert shaped.kept_prefix is not None and shaped.kept_prefix.dtype == np.int64
    assert shaped.kept_prefix.tolist() == [1, 10, 511, 512, 513, 900, 0]  # unset: all of the served n_in
    assert _OutputCap().shape(N_IN, N_OUT).kept_prefix is None
