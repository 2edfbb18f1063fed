"""A sweep's identity, shared by its jobs: id, swept keys, parent run; and run names from overrides.

The launching process writes `sweep.json` into the sweep folder before any job starts
(tracking.callback); each job reads it to name its run after the overrides that differ within the
sweep and to nest under the sweep's parent run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

SWEEP_FILE = "sweep.json"


@dataclass(frozen=True)
class SweepInfo:
    """sweep_id: the sweep folder; swept: config keys that vary across its jobs; parent_run_id: MLflow."""

    sweep_id: str
    swept: tuple[str, ...] = ()
    parent_run_id: str | None = None

    def write(self, sweep_dir: Path) -> None:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / SWEEP_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, sweep_dir: Path) -> SweepInfo:
        """The sweep's info; a sweep started without the callback gets its folder as id."""
        path = sweep_dir / SWEEP_FILE
        if not path.exists():
            return cls(str(sweep_dir))
        data = json.loads(path.read_text())
        return cls(str(data["sweep_id"]), tuple(data.get("swept", ())), data.get("parent_run_id"))


def parse(overrides: Iterable[str]) -> list[tuple[str, str, bool]]:
    """(key, value text, is a sweep) of each Hydra override string."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return [(o.key_or_group, (o.input_line or "").partition("=")[2], o.is_sweep_override()) for o in parsed]


def swept_keys(task_overrides: Sequence[str], sweeper_params: Iterable[str] = ()) -> tuple[str, ...]:
    """Keys a multirun varies: command-line sweeps (a=1,2) and the sweeper's `params`."""
    keys = [key for key, _, sweep in parse(task_overrides) if sweep]
    return tuple(dict.fromkeys([*keys, *sweeper_params]))


SKIP = ("output_dir", "tracking.", "progress", "plots", "hydra.", "experiment")


def run_name(policy: str, overrides: Sequence[str], swept: Sequence[str] | None = None) -> str:
    """`policy key=value ...`: the overrides that vary in the sweep (all of a single run's settings
    overrides), keys shortened to their last part."""
    parts = [policy]
    for key, value, _ in parse(overrides):
        bare = key.lstrip("+~")
        if bare == "policy" or (swept is not None and bare not in swept) or bare.startswith(SKIP):
            continue
        parts.append(f"{bare.rsplit('.', 1)[-1]}={_short(value)}")
    return " ".join(parts)[:250]


def _short(value: str) -> str:
    """Numbers to 4 significant digits (Optuna's trial values are long floats)."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() and "." not in value else f"{number:.4g}"
