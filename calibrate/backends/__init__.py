"""Inference backends behind one interface (`base.Backend`), chosen by name; engines import lazily."""

from __future__ import annotations

from pathlib import Path

from calibrate.backends.base import Backend, BackendNotInstalledError, EngineLimits, GenerationResult

NAMES = ("transformers", "tensorrt_llm")

__all__ = ["NAMES", "Backend", "BackendNotInstalledError", "EngineLimits", "GenerationResult", "make_backend"]


def make_backend(
    name: str,
    model_dir: Path,
    dtype: str = "auto",
    device: str = "auto",
    seed: int = 0,
    tensor_parallel_size: int = 1,
    free_gpu_memory_fraction: float = 0.9,
) -> Backend:
    """The backend `name` for the local model directory `model_dir`."""
    if name == "transformers":
        from calibrate.backends.transformers_backend import TransformersBackend

        return TransformersBackend(model_dir, dtype=dtype, device=device, seed=seed)
    if name == "tensorrt_llm":
        from calibrate.backends.tensorrt_llm_backend import TensorRtLlmBackend, TrtllmOptions

        options = TrtllmOptions(
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            free_gpu_memory_fraction=free_gpu_memory_fraction,
        )
        return TensorRtLlmBackend(model_dir, options)
    raise ValueError(f"backend={name!r} is unknown; choose one of {list(NAMES)}")
