"""Hugging Face transformers + torch: static batches of exact lengths, CPU or GPU.

The model comes from a local directory: a checkpoint if it holds weights, else random weights built
from its config.json (seeded). Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from calibrate.backends.base import BackendNotInstalledError, EngineLimits, GenerationResult
from calibrate.models import has_weights, read_model_info

INSTALL_HINT = "pip install 'sweetspot-sim[hf]' (torch and transformers)"
DTYPES = ("auto", "float32", "float16", "bfloat16")


def _import_torch_transformers() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as e:
        raise BackendNotInstalledError(
            f"backend=transformers needs torch and transformers ({e}); {INSTALL_HINT}"
        ) from e
    return torch, transformers


class TransformersBackend:
    """`model.generate` over static batches of `max_batch_size` prompts, EOS suppressed."""

    name = "transformers"

    def __init__(self, model_dir: Path, dtype: str = "auto", device: str = "auto", seed: int = 0):
        if dtype not in DTYPES:
            raise ValueError(f"engine.dtype={dtype!r} is not one of {DTYPES}")
        self.model_dir, self.dtype, self.seed = Path(model_dir), dtype, seed
        self.model_info = read_model_info(self.model_dir)
        self._torch, self._transformers = _import_torch_transformers()
        self.device = self._pick_device(device)
        self._model: Any = None
        self._batch_size = 1

    def _pick_device(self, device: str) -> str:
        if device == "auto":
            return "cuda" if self._torch.cuda.is_available() else "cpu"
        return device

    def _torch_dtype(self) -> Any:
        if self.dtype == "auto":
            return self._torch.bfloat16 if self.device.startswith("cuda") else self._torch.float32
        return getattr(self._torch, self.dtype)

    def _load(self) -> Any:
        auto = self._transformers.AutoModelForCausalLM
        if has_weights(self.model_dir):
            model = auto.from_pretrained(self.model_dir, local_files_only=True)
        else:
            config = self._transformers.AutoConfig.from_pretrained(self.model_dir, local_files_only=True)
            self._torch.manual_seed(self.seed)
            model = auto.from_config(config)
        return model.to(device=self.device, dtype=self._torch_dtype()).eval()

    def start(self, limits: EngineLimits) -> None:
        if self._model is None:
            self._model = self._load()
        self._batch_size = limits.max_batch_size

    def generate(self, prompts: Sequence[Sequence[int]], n_out: int) -> GenerationResult:
        if self._model is None:
            raise RuntimeError("TransformersBackend.generate before start()")
        lengths: list[int] = []
        for i in range(0, len(prompts), self._batch_size):
            lengths += self._generate_batch(prompts[i : i + self._batch_size], n_out)
        return GenerationResult(output_lengths=tuple(lengths))

    def _generate_batch(self, prompts: Sequence[Sequence[int]], n_out: int) -> list[int]:
        torch = self._torch
        input_ids = torch.tensor([list(p) for p in prompts], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            out = self._model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                generation_config=self._generation_config(n_out),
            )
        return new_token_counts(out[:, input_ids.shape[1] :].tolist(), self.model_info.eos_token_ids, self._pad_id())

    def _pad_id(self) -> int:
        info = self.model_info
        return info.pad_token_id if info.pad_token_id is not None else 0

    def _generation_config(self, n_out: int) -> Any:
        """Greedy, exactly n_out new tokens: min = max, so EOS is masked until the end."""
        eos = list(self.model_info.eos_token_ids) or None
        return self._transformers.GenerationConfig(
            max_new_tokens=n_out,
            min_new_tokens=n_out,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=self._pad_id(),
        )

    def device_name(self) -> str:
        torch = self._torch
        if self.device.startswith("cuda"):
            return str(torch.cuda.get_device_name(torch.device(self.device)))
        return "cpu"

    def close(self) -> None:
        self._model = None


def new_token_counts(new_tokens: list[list[int]], eos_ids: Sequence[int], pad_id: int) -> list[int]:
    """Generated tokens per row: a row that hit EOS early is padded after it, so count to that EOS."""
    counts = []
    for row in new_tokens:
        ends = [k for k, t in enumerate(row) if t in eos_ids]
        if ends and all(t == pad_id for t in row[ends[0] + 1 :]) and ends[0] < len(row) - 1:
            counts.append(ends[0] + 1)
        else:
            counts.append(len(row))
    return counts
