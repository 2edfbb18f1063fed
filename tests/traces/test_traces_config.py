"""TraceConfig validation, and Hydra composition of every conf/trace/*.yaml."""

import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import traces
from traces.config import TraceConfig

CONF = Path(__file__).resolve().parents[2] / "conf"
FIELDS = [f.name for f in dataclasses.fields(TraceConfig)]


@pytest.mark.parametrize(
    "key, value",
    [
        ("sample_frac", 0.0),
        ("rate_scale", -1.0),
        ("arrival", "weibull"),
        ("cv", 0.0),
        ("file", 3),
        ("model", "gpt4"),
        ("max_requests", 0),
        ("name", "azure"),
        ("lengths_from", "synthetic"),
        ("duration_s", 0.0),
        ("turns", 0.5),
        ("turns", float("nan")),
        ("open_conversations", 0),
        ("shared_prefix_tokens", -1),
        ("shared_prefix_tokens", 10.5),
        ("hash_block_tokens", 0),
    ],
)
def test_bad_values_are_named(key, value):
    with pytest.raises(ValueError, match=f"trace config: {key}={value!r} is invalid"):
        TraceConfig(**{key: value})


def test_path_goes_with_name_file():
    with pytest.raises(ValueError, match="path=None is invalid"):
        TraceConfig(name="file")
    with pytest.raises(ValueError, match="lengths_from=None is invalid"):
        TraceConfig(name="synthetic", lengths_from=None, n_in=5)


def test_unknown_keys_are_named():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['rate'\]"):
        traces.load_config({"name": "synthetic", "rate": 3})


@pytest.mark.parametrize("yaml_file", sorted((CONF / "trace").glob("*.yaml")))
def test_every_yaml_fully_specifies_a_trace_config(yaml_file):
    cfg = OmegaConf.load(yaml_file)
    assert list(cfg.keys()) == FIELDS and cfg.name == yaml_file.stem
    if yaml_file.stem != "file":
        assert TraceConfig.from_mapping(OmegaConf.to_container(cfg)).name == yaml_file.stem


def _compose(tmp_path, overrides):
    (tmp_path / "root.yaml").write_text(
        f"defaults:\n  - trace: azure_chat\n  - _self_\nhydra:\n  searchpath:\n    - file://{CONF}\n"
    )
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        return compose("root", overrides=overrides)


def test_hydra_default_and_synthetic_override(tmp_path):
    assert _compose(tmp_path, []).trace.name == "azure_chat"
    cfg = _compose(tmp_path, ["trace=synthetic", "trace.rate_per_s=8", "trace.num_requests=100000"])
    tc = TraceConfig.from_mapping(OmegaConf.to_object(cfg.trace))
    assert (tc.name, tc.rate_per_s, tc.num_requests) == ("synthetic", 8, 100_000)


def test_hydra_fixed_shapes_and_gamma_load(tmp_path):
    cfg = _compose(
        tmp_path,
        [
            "trace=synthetic",
            "trace.n_in=512",
            "trace.n_out=128",
            "trace.arrival=gamma",
            "trace.cv=2",
            "trace.num_requests=500",
        ],
    )
    df = traces.load_config(OmegaConf.to_object(cfg.trace))
    assert len(df) == 500 and set(df["n_in"]) == {512} and set(df["n_out"]) == {128}


def test_hydra_burstgpt_and_file(tmp_path, fixtures):
    cfg = _compose(tmp_path, ["trace=burstgpt", "trace.file=2", "trace.model=GPT-4"])
    assert (cfg.trace.file, cfg.trace.model) == (2, "GPT-4")
    cfg = _compose(tmp_path, ["trace=file", f"trace.path={fixtures / 'burstgpt_head.csv'}"])
    assert len(traces.load_config(OmegaConf.to_object(cfg.trace))) == 8


def test_each_trace_reads_its_own_options_only():
    assert set(TraceConfig().unused_keys()) == {
        "rate_per_s", "num_requests", "arrival", "cv", "n_in", "n_out", "lengths_from", "file", "keep_failed",
        "concurrency", "think_s", "think", "turns", "open_conversations", "shared_prefix_tokens", "hash_block_tokens",
    }  # fmt: skip
    assert set(TraceConfig(name="synthetic").unused_keys()) == {
        "file",
        "keep_failed",
        "concurrency",
        "think_s",
        "think",
    }
    closed = set(TraceConfig(name="closed_loop").unused_keys())
    prefixes = {"turns", "open_conversations", "shared_prefix_tokens", "hash_block_tokens"}
    assert closed == {"rate_per_s", "arrival", "cv", "file", "keep_failed", *prefixes}
    assert "rate_per_s" in TraceConfig(name="burstgpt").unused_keys()
    assert "file" not in TraceConfig(name="burstgpt").unused_keys()
