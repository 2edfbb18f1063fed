"""Local models for calibration: `tiny` (a 2-layer random Llama shipped for tests) or a directory.

Nothing is downloaded from the Hugging Face hub: a model is a local directory with a config.json,
with weights (a checkpoint) or without (random weights built from the config).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

TINY_DIR = Path(__file__).parent / "tiny"
BUILTIN = {"tiny": TINY_DIR}
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.safetensors.index.json")


class ModelNotFoundError(FileNotFoundError):
    """The model is neither a built-in name nor a local directory with a config.json."""


@dataclass(frozen=True)
class ModelInfo:
    """What prompt building and exact-length generation need from a model's config.json."""

    vocab_size: int
    eos_token_ids: tuple[int, ...] = ()
    bos_token_id: int | None = None
    pad_token_id: int | None = None

    @property
    def special_ids(self) -> frozenset[int]:
        ids = {*self.eos_token_ids, self.bos_token_id, self.pad_token_id}
        return frozenset(i for i in ids if i is not None)


def resolve_model(name: str) -> Path:
    """The local directory of a built-in model name or a path; an error that says what to do."""
    path = BUILTIN.get(name, Path(name).expanduser())
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"model={name!r} is not a built-in model ({sorted(BUILTIN)}) nor a local directory "
            "with a config.json. Calibration never downloads from the Hugging Face hub: download "
            "the model first (e.g. `huggingface-cli download ORG/NAME --local-dir DIR`) and pass "
            "model=DIR; a directory with only config.json runs with random weights."
        )
    return path.resolve()


def has_weights(model_dir: Path) -> bool:
    """Whether a model directory holds a checkpoint (else weights are random, from the config)."""
    return any(any(model_dir.glob(p)) for p in WEIGHT_PATTERNS)


def read_model_info(model_dir: Path) -> ModelInfo:
    """Vocabulary size and special token ids from `model_dir/config.json`."""
    config = json.loads((model_dir / "config.json").read_text())
    config = config.get("text_config", config)
    if "vocab_size" not in config:
        raise ValueError(f"{model_dir / 'config.json'} has no 'vocab_size'")
    eos = config.get("eos_token_id")
    eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (eos,))
    return ModelInfo(
        vocab_size=int(config["vocab_size"]),
        eos_token_ids=eos_ids,
        bos_token_id=config.get("bos_token_id"),
        pad_token_id=config.get("pad_token_id"),
    )


def model_label(name: str) -> str:
    """The `model` column of the table: the built-in name, else the directory's name."""
    return name if name in BUILTIN else Path(name).expanduser().resolve().name
