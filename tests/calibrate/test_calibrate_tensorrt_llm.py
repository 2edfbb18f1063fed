"""The TensorRT-LLM backend up to the engine call, against fakes shaped like its real types.

Recorded shapes (tensorrt_llm.llmapi, PyTorch backend): `LLM.generate(inputs, sampling_params,
use_tqdm=...)` returns a list of `RequestOutput`; `RequestOutput.outputs` is a list of
`CompletionOutput` with `token_ids: list[int]` and `request_perf_metrics: RequestPerfMetrics | None`
(`return_perf_metrics=True`); `RequestPerfMetrics.timing_metrics` has `arrival_time`,
`first_scheduled_time`, `first_token_time`, `last_token_time` as `datetime.timedelta`.
"""

import sys
from dataclasses import dataclass, field
from datetime import timedelta
from types import SimpleNamespace

import pytest

from calibrate.backends.base import BackendNotInstalledError, EngineLimits
from calibrate.backends.tensorrt_llm_backend import (
    TensorRtLlmBackend,
    TrtllmOptions,
    import_tensorrt_llm,
    kv_cache_kwargs,
    llm_kwargs,
    parse_outputs,
    sampling_kwargs,
)
from calibrate.models import ModelInfo, resolve_model


@dataclass
class TimingMetrics:
    arrival_time: timedelta
    first_scheduled_time: timedelta
    first_token_time: timedelta
    last_token_time: timedelta


@dataclass
class RequestPerfMetrics:
    timing_metrics: TimingMetrics


@dataclass
class CompletionOutput:
    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = "length"
    request_perf_metrics: RequestPerfMetrics | None = None


@dataclass
class RequestOutput:
    request_id: int
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = True


def ms(x: float) -> timedelta:
    return timedelta(milliseconds=x)


def output(n_in: int, n_out: int, timing: tuple[float, float, float] | None = None) -> RequestOutput:
    perf = None
    if timing:
        arrival, first, last = timing
        perf = RequestPerfMetrics(TimingMetrics(ms(arrival), ms(arrival + 1), ms(first), ms(last)))
    completion = CompletionOutput(0, token_ids=list(range(n_out)), request_perf_metrics=perf)
    return RequestOutput(0, [1] * n_in, [completion])


def test_llm_kwargs_dummy_weights_for_a_config_only_directory():
    limits = EngineLimits(max_batch_size=64, max_seq_len=8192, max_num_tokens=8192)
    kw = llm_kwargs(resolve_model("tiny"), limits, TrtllmOptions())
    assert kw["load_format"] == "dummy" and kw["backend"] == "pytorch"
    assert kw["skip_tokenizer_init"] is True
    assert (kw["max_batch_size"], kw["max_seq_len"], kw["max_num_tokens"]) == (64, 8192, 8192)
    assert "max_num_tokens" not in llm_kwargs(resolve_model("tiny"), EngineLimits(1, 8), TrtllmOptions())


def test_llm_kwargs_loads_a_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text('{"vocab_size": 10}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert llm_kwargs(tmp_path, EngineLimits(1, 8), TrtllmOptions())["load_format"] == "auto"


def test_kv_cache_block_reuse_off():
    assert kv_cache_kwargs(TrtllmOptions())["enable_block_reuse"] is False


def test_sampling_exact_length_eos_ignored():
    kw = sampling_kwargs(128, ModelInfo(vocab_size=512, eos_token_ids=(2,), pad_token_id=0))
    assert kw["max_tokens"] == 128 and kw["ignore_eos"] is True
    assert (kw["end_id"], kw["pad_id"]) == (2, 0)
    assert kw["return_perf_metrics"] is True and kw["detokenize"] is False
    assert sampling_kwargs(1, ModelInfo(vocab_size=512))["end_id"] == 511


def test_parse_outputs_lengths_and_timing():
    outs = [output(16, 5, (0, 40, 80)), output(16, 5, (0, 60, 80))]
    r = parse_outputs(outs)
    assert r.output_lengths == (5, 5)
    assert r.ttft_s == pytest.approx(0.050)
    assert r.tpot_s == pytest.approx((0.010 + 0.005) / 2)


def test_parse_outputs_without_metrics():
    r = parse_outputs([output(4, 3), output(4, 2)])
    assert r.output_lengths == (3, 2) and r.ttft_s is None and r.tpot_s is None


class FakeLLM:
    instances: list["FakeLLM"] = []

    def __init__(self, **kwargs):
        self.kwargs, self.calls, self.closed = kwargs, [], False
        FakeLLM.instances.append(self)

    def generate(self, inputs, sampling_params=None, use_tqdm=True):
        self.calls.append((inputs, sampling_params, use_tqdm))
        n = sampling_params.kwargs["max_tokens"]
        return [output(len(p), n, (0, 10, 10 + n)) for p in inputs]

    def shutdown(self):
        self.closed = True


def fake_module() -> SimpleNamespace:
    FakeLLM.instances = []
    return SimpleNamespace(
        LLM=FakeLLM,
        SamplingParams=lambda **kw: SimpleNamespace(kwargs=kw),
        llmapi=SimpleNamespace(KvCacheConfig=lambda **kw: SimpleNamespace(kwargs=kw)),
    )


def test_backend_builds_engine_per_limits_and_passes_token_ids():
    backend = TensorRtLlmBackend(resolve_model("tiny"), module=fake_module())
    backend.start(EngineLimits(4, 64))
    backend.start(EngineLimits(4, 64))  # unchanged: no rebuild
    assert len(FakeLLM.instances) == 1
    llm = FakeLLM.instances[0]
    assert llm.kwargs["kv_cache_config"].kwargs["enable_block_reuse"] is False
    result = backend.generate([(5, 6, 7), (8, 9, 10)], n_out=3)
    inputs, params, use_tqdm = llm.calls[0]
    assert inputs == [[5, 6, 7], [8, 9, 10]] and params.kwargs["ignore_eos"] and not use_tqdm
    assert result.output_lengths == (3, 3)
    backend.start(EngineLimits(8, 64))
    assert llm.closed and len(FakeLLM.instances) == 2
    backend.close()
    assert FakeLLM.instances[1].closed


def test_missing_tensorrt_llm_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    with pytest.raises(BackendNotInstalledError, match=r"sweetspot-sim\[trtllm\]"):
        import_tensorrt_llm()
    with pytest.raises(BackendNotInstalledError, match="backend=transformers"):
        TensorRtLlmBackend(resolve_model("tiny"))
