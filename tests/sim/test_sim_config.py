"""Every shipped config composes and validates; bad ones fail at start-up naming the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from sim.app import prepare
from sim.config import ServerConfig
from sim.run_config import app_config
from sim.schema import ConfigError

CONF = Path(__file__).parents[2] / "conf"
POLICIES = sorted(p.stem for p in (CONF / "policy").glob("*.yaml"))
SERVERS = sorted(p.stem for p in (CONF / "server").glob("*.yaml"))
SCHEDULERS_SHIPPED = sorted(p.stem for p in (CONF / "server" / "scheduler").glob("*.yaml"))


def composed(*overrides: str, tmp: str = "/tmp/sim-test") -> dict:
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose("sim", overrides=[f"output_dir={tmp}", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)


def test_all_policies_and_servers_ship():
    assert set(POLICIES) == {"none", "truncation", "summarization", "adaptive_gen"}
    assert set(SERVERS) == {"continuous", "static"}


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("server", SERVERS)
def test_every_shipped_config_composes_and_validates(policy, server):
    cfg = app_config(composed(f"policy={policy}", f"server={server}"))
    assert cfg.policy == policy and cfg.server.mode == server
    assert cfg.trace.name == "azure_chat" and cfg.oracle == "llama-3.1-8b_h100"
    assert cfg.gpu.clock_mhz is None  # the maximum clock, where the oracles were calibrated


def test_every_engine_scheduler_is_a_server_scheduler_option():
    from sim.schedulers import SCHEDULERS

    assert set(SCHEDULERS_SHIPPED) == set(SCHEDULERS)


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("scheduler", SCHEDULERS_SHIPPED)
def test_the_scheduler_group_sets_the_engine_and_its_defaults_on_either_server(server, scheduler):
    cfg = app_config(composed(f"server={server}", f"server/scheduler={scheduler}")).server
    assert cfg.scheduler == scheduler and cfg.mode == server
    shipped = yaml.safe_load((CONF / "server" / "scheduler" / f"{scheduler}.yaml").read_text())
    assert (cfg.block_size, cfg.chunked_prefill) == (shipped["block_size"], shipped["chunked_prefill"])
    assert cfg.scheduler_options == shipped["scheduler_options"]


def test_the_default_engine_is_the_one_the_oracles_are_calibrated_on():
    cfg = app_config(composed()).server
    assert (cfg.scheduler, cfg.block_size, cfg.chunked_prefill) == ("vllm", 16, True)
    static = app_config(composed("server=static")).server
    assert static.scheduler == "trtllm_no_evict"


@pytest.mark.parametrize("policy", POLICIES)
def test_every_shipped_policy_prepares_on_a_small_trace(policy):
    prepared = prepare(app_config(composed(f"policy={policy}", "trace.max_requests=50")))
    assert len(prepared.requests) == 50 and prepared.policy.name == policy


def test_root_seed_reaches_the_trace():
    assert app_config(composed("seed=7")).trace.seed == 7


@pytest.mark.parametrize(
    "override, key",
    [
        ("policy.name=nope", "policy.name"),
        ("server.max_batch_size=-3", "server.max_batch_size"),
        ("server.max_num_tokens=-1", "server.max_num_tokens"),
        ("server.mode=dynamic", "server.mode"),
        ("slo.ttft_s=0", "slo.ttft_s"),
        ("gpu.clock_mhz=-5", "gpu.clock_mhz"),
        ("gpu.clock_mhz=fast", "gpu.clock_mhz"),
        ("+gpu.memory_mhz=2619", "gpu.memory_mhz"),
        ("+server.max_batch=3", "server.max_batch"),
        ("policy=truncation policy.max_input_tokens=-10", "policy.max_input_tokens"),
        ("policy=adaptive_gen policy.factor=-1", "policy.factor"),
        ("tracking=none", "tracking is a section of keys"),
        ("slo=7", "slo is a section of keys"),
    ],
)
def test_bad_values_fail_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        app_config(composed(*override.split()))


def test_unknown_policy_lists_the_known_ones():
    with pytest.raises(ConfigError, match="known: .*adaptive_gen.*none.*summarization.*truncation"):
        app_config(composed("policy.name=nope"))


def test_missing_oracles_fail_at_start_up_naming_the_key():
    with pytest.raises(ConfigError, match="^oracle: "):
        prepare(app_config(composed("oracle=no-such_h100", "trace.max_requests=5")))
    bad = ["policy=summarization", "policy.summarizer_oracle=no-such_h100", "trace.max_requests=5"]
    with pytest.raises(ConfigError, match="policy.summarizer_oracle"):
        prepare(app_config(composed(*bad)))


@pytest.mark.parametrize(
    "fleet, clock, key",
    [((), 1000, "oracle"), (("fleet=mixed_gpus",), 1500, "fleet.pools[1].oracle")],  # 1500: H100's, not A100's
)
def test_a_clock_the_gpu_does_not_support_fails_at_start_up_naming_the_key_and_the_range(fleet, clock, key):
    with pytest.raises(ConfigError, match=r"gpu\.clock_mhz \(" + re.escape(key)) as e:
        prepare(app_config(composed(*fleet, f"gpu.clock_mhz={clock}", "trace.max_requests=5")))
    assert f"{clock} MHz is not a supported SM clock" in str(e.value) and "in steps of 15 MHz" in str(e.value)


def test_server_config_errors_read_like_the_issue():
    with pytest.raises(ConfigError, match=r"^server.max_batch_size must be ≥ 1, got -3$"):
        ServerConfig(max_batch_size=-3)


@pytest.mark.parametrize("trace", sorted(p.stem for p in (CONF / "trace").glob("*.yaml")))
def test_every_trace_group_composes_into_the_sim_config(trace):
    extra = ["trace.path=/tmp/trace.csv"] if trace == "file" else []
    cfg = app_config(composed(f"trace={trace}", *extra))
    assert cfg.trace.name == trace
