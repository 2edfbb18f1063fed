"""TensorRT-LLM through its LLM API (PyTorch backend by default).

Token-id prompts (no tokenizer), `SamplingParams(max_tokens=n_out, ignore_eos=True)`, random weights
from a local config.json with `load_format="dummy"` (no downloads), KV-cache block reuse off (a
repeated prompt must really prefill), and per-request timing from `request_perf_metrics` when the
engine returns it. `tensorrt_llm` is imported only when the backend is built, so this module imports
without it; the pure functions below (argument mapping, result parsing) are unit-tested against
fakes shaped like TensorRT-LLM's `RequestOutput` / `CompletionOutput` / `RequestPerfMetrics`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from calibrate.backends.base import BackendNotInstalledError, EngineLimits, GenerationResult
from calibrate.models import ModelInfo, has_weights, read_model_info

INSTALL_HINT = (
    "pip install 'sweetspot-sim[trtllm]' on a Linux x86_64/aarch64 machine with CUDA and "
    "CPython 3.10 or 3.12 (or use NVIDIA's TensorRT-LLM container)"
)


def import_tensorrt_llm() -> Any:
    """The `tensorrt_llm` module, or an error that says how to install it."""
    try:
        import tensorrt_llm
    except ImportError as e:
        raise BackendNotInstalledError(
            f"backend=tensorrt_llm needs TensorRT-LLM, which is not installed ({e}); {INSTALL_HINT}. "
            "Without it, use backend=transformers."
        ) from e
    return tensorrt_llm


@dataclass(frozen=True)
class TrtllmOptions:
    """Engine options beyond the grid's limits. `engine_backend` is TensorRT-LLM's own `backend`."""

    engine_backend: str = "pytorch"
    dtype: str = "auto"
    tensor_parallel_size: int = 1
    free_gpu_memory_fraction: float = 0.9
    load_format: str | None = None  # None: "dummy" for a config-only directory, else "auto"


def llm_kwargs(model_dir: Path, limits: EngineLimits, options: TrtllmOptions) -> dict[str, Any]:
    """Keyword arguments of `tensorrt_llm.LLM` (without `kv_cache_config`)."""
    load_format = options.load_format or ("auto" if has_weights(model_dir) else "dummy")
    kwargs: dict[str, Any] = {
        "model": str(model_dir),
        "backend": options.engine_backend,
        "skip_tokenizer_init": True,
        "dtype": options.dtype,
        "tensor_parallel_size": options.tensor_parallel_size,
        "max_batch_size": limits.max_batch_size,
        "max_seq_len": limits.max_seq_len,
        "load_format": load_format,
    }
    if limits.max_num_tokens is not None:
        kwargs["max_num_tokens"] = limits.max_num_tokens
    return kwargs


def kv_cache_kwargs(options: TrtllmOptions) -> dict[str, Any]:
    """Keyword arguments of `KvCacheConfig`: block reuse off, so repeated prompts really prefill."""
    return {"enable_block_reuse": False, "free_gpu_memory_fraction": options.free_gpu_memory_fraction}


def sampling_kwargs(n_out: int, info: ModelInfo) -> dict[str, Any]:
    """Keyword arguments of `SamplingParams`: default (greedy) decoding, exactly `n_out` tokens, EOS ignored.

    Without a tokenizer TensorRT-LLM cannot look up end and pad ids, so they are given here.
    """
    end_id = info.eos_token_ids[0] if info.eos_token_ids else info.vocab_size - 1
    pad_id = info.pad_token_id if info.pad_token_id is not None else end_id
    return {
        "max_tokens": n_out,
        "ignore_eos": True,
        "end_id": end_id,
        "pad_id": pad_id,
        "detokenize": False,
        "return_perf_metrics": True,
    }


def parse_outputs(outputs: Sequence[Any]) -> GenerationResult:
    """Output lengths and mean TTFT / TPOT from a list of `RequestOutput`."""
    completions = [o.outputs[0] for o in outputs]
    lengths = tuple(len(c.token_ids) for c in completions)
    timings = [t for t in (_timing(c) for c in completions) if t is not None]
    ttfts = [t[0] for t in timings]
    tpots = [t[1] for t in timings if t[1] is not None]
    return GenerationResult(
        output_lengths=lengths,
        ttft_s=statistics.fmean(ttfts) if ttfts else None,
        tpot_s=statistics.fmean(tpots) if tpots else None,
    )


def _timing(completion: Any) -> tuple[float, float | None] | None:
    """(TTFT, TPOT) in s from `completion.request_perf_metrics.timing_metrics`, if returned."""
    metrics = getattr(completion, "request_perf_metrics", None)
    timing = getattr(metrics, "timing_metrics", None)
    if timing is None:
        return None
    arrival, first, last = (
        _seconds(getattr(timing, k)) for k in ("arrival_time", "first_token_time", "last_token_time")
    )
    if first <= 0:  # not recorded
        return None
    n = len(completion.token_ids)
    return first - arrival, (last - first) / (n - 1) if n > 1 else None


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class TensorRtLlmBackend:
    """One `tensorrt_llm.LLM` per set of engine limits (rebuilt only when the limits change)."""

    name = "tensorrt_llm"

    def __init__(self, model_dir: Path, options: TrtllmOptions = TrtllmOptions(), module: Any = None):
        self.model_dir, self.options = Path(model_dir), options
        self.model_info = read_model_info(self.model_dir)
        self._trt = module if module is not None else import_tensorrt_llm()
        self._llm: Any = None
        self._limits: EngineLimits | None = None

    def start(self, limits: EngineLimits) -> None:
        if self._llm is not None and limits == self._limits:
            return
        self.close()
        kv_cache = self._trt.llmapi.KvCacheConfig(**kv_cache_kwargs(self.options))
        self._llm = self._trt.LLM(**llm_kwargs(self.model_dir, limits, self.options), kv_cache_config=kv_cache)
        self._limits = limits

    def generate(self, prompts: Sequence[Sequence[int]], n_out: int) -> GenerationResult:
        if self._llm is None:
            raise RuntimeError("TensorRtLlmBackend.generate before start()")
        params = self._trt.SamplingParams(**sampling_kwargs(n_out, self.model_info))
        outputs = self._llm.generate([list(p) for p in prompts], sampling_params=params, use_tqdm=False)
        return parse_outputs(outputs)

    def device_name(self) -> str:
        import torch  # a dependency of TensorRT-LLM

        return str(torch.cuda.get_device_name(0))

    def close(self) -> None:
        if self._llm is not None:
            self._llm.shutdown()
        self._llm, self._limits = None, None
