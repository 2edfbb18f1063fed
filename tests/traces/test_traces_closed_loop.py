"""trace=closed_loop: its config checks, its lengths and think times, its Hydra file."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import traces
from traces.config import TraceConfig

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.mark.parametrize(
    "key, value",
    [("concurrency", 0), ("concurrency", True), ("concurrency", 2.5), ("think_s", -1.0), ("think_s", float("inf")),
     ("think", "gauss")],
)  # fmt: skip
def test_bad_closed_loop_values_are_named(key, value):
    with pytest.raises(ValueError, match=f"trace config: {key}={value!r} is invalid"):
        TraceConfig(name="closed_loop", n_in=8, n_out=8, **{key: value})


@pytest.mark.parametrize("key, value", [("rate_scale", 2.0), ("max_requests", 5), ("start_s", 1.0)])
def test_options_that_reshape_arrivals_are_refused_for_a_closed_loop(key, value):
    with pytest.raises(ValueError, match=f"{key}={value!r} is invalid, expected .*arrivals come from its clients"):
        TraceConfig(name="closed_loop", n_in=8, n_out=8, **{key: value})


def test_fixed_lengths_fixed_think_and_the_client_count():
    df = traces.load("closed_loop", concurrency=3, num_requests=7, n_in=1024, n_out=128, think_s=0.25)
    assert len(df) == 7 and df.attrs["clients"] == 3
    assert (df["n_in"] == 1024).all() and (df["n_out"] == 128).all() and (df["think_s"] == 0.25).all()
    assert (df["arrival_s"] == 0.0).all()
    assert df.attrs["load_summary"].startswith("closed loop (3 clients, think fixed 0.25 s)")


def test_drawn_lengths_and_exponential_think_are_seeded():
    def load(seed):
        return traces.load("closed_loop", num_requests=3000, n_out=64, think_s=2.0, think="exponential", seed=seed)

    a, b, c = load(1), load(1), load(2)
    assert a.equals(b) and not a.equals(c)
    assert a["n_in"].nunique() > 100 and (a["n_out"] == 64).all()  # prompts drawn from azure_chat's fit
    assert a["think_s"].mean() == pytest.approx(2.0, rel=0.1) and a["think_s"].std() == pytest.approx(2.0, rel=0.1)


def test_hydra_composes_closed_loop_with_overrides(tmp_path):
    (tmp_path / "root.yaml").write_text(
        f"defaults:\n  - trace: azure_chat\n  - _self_\nhydra:\n  searchpath:\n    - file://{CONF}\n"
    )
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        cfg = compose("root", overrides=["trace=closed_loop", "trace.concurrency=16", "trace.think_s=0.5"])
    tc = TraceConfig.from_mapping(OmegaConf.to_object(cfg.trace))
    assert (tc.name, tc.concurrency, tc.think_s, tc.n_in, tc.n_out) == ("closed_loop", 16, 0.5, 1024, 128)
    df = traces.load_config(dataclasses.replace(tc, num_requests=4))
    assert np.array_equal(df["n_in"], [1024] * 4) and df.attrs["clients"] == 16
