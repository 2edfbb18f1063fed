"""Shared helpers: small oracles with hand-picked coefficients, tiny traces."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import numpy as np
import pandas as pd
import pytest

from oracle.model import MemorySpec, Oracle, OracleRangeWarning
from sim.engine.kv import KvLayout
from sim.serving.run_warnings import RejectedRequestsWarning

# For property tests: their random requests and servers may make requests no server can ever hold,
# which the servers reject and warn about (test_every_request_finishes_once_or_is_rejected checks
# the rejections; `rejecting` asserts the warning where a test rejects requests on purpose).
random_rejections = pytest.mark.filterwarnings("ignore::sim.serving.run_warnings.RejectedRequestsWarning")


def toy_oracle(
    time_coef=(1.0, 0.0, 0.0, 0.0, 0.0, 0.0),
    energy_coef=(6.0, 1.0, 0.5, 2.0, 0.25, 0.125),
    idle_power_w: float = 10.0,
    kv_tokens: int | None = 1_000_000,
    name: str = "toy",
) -> Oracle:
    """An oracle whose steps are easy to add up by hand (default: every step takes 1 s)."""
    memory = None
    if kv_tokens is not None:
        memory = MemorySpec(weight_bytes=0.0, kv_bytes_per_token=1.0, gpu_memory_bytes=float(kv_tokens))
    return Oracle(
        name,
        "toy-model",
        "toy-gpu",
        "toy",
        energy_coef_j=np.array(energy_coef),
        time_coef_s=np.array(time_coef),
        idle_power_w=idle_power_w,
        memory=memory,
    )


def flat_kv(tokens: int, block_size: int = 1) -> KvLayout:
    """A KV cache of `tokens` tokens with no sliding-window layers."""
    return KvLayout(block_size, 1, 0, 0, tokens // block_size)


def trace(rows) -> pd.DataFrame:
    """A trace from (arrival_s, n_in, n_out) rows."""
    return pd.DataFrame(rows, columns=["arrival_s", "n_in", "n_out"])


def rejecting(match: str | None) -> AbstractContextManager[object]:
    """Expect the run's RejectedRequestsWarning to match `match` (a regex); None: expect none
    (one is then an error)."""
    return pytest.warns(RejectedRequestsWarning, match=match) if match is not None else _no_rejections()


@contextmanager
def _no_rejections() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", RejectedRequestsWarning)
        yield


@pytest.fixture
def toy() -> Oracle:
    return toy_oracle()


@pytest.fixture(scope="session")
def llama() -> Oracle:
    o = Oracle.load("llama-3.1-8b_h100")
    return o


@pytest.fixture(autouse=True)
def _quiet_range_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OracleRangeWarning)
        yield
