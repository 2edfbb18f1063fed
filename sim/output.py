"""A run's output folder: checked before any work, claimed by one run only, filled with its files.

`check_output` runs before the inputs load (a folder that cannot be written, or that already holds
a run, fails at once); `claim_output` creates run.json exclusively, so of two runs given the same
folder the second refuses instead of overwriting the first. The files hold URIs without their
credentials (tracking.safe_text).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from sim.config import ConfigError
from sim.plots import RECORDS_FILES, write_timelines
from sim.records import RecordsFile
from sim.run import SimResult
from sim.summary import Summary, split_wall_clock
from tracking.folder import PARAMS_FILE, RUN_FILE, SUMMARY_FILE
from tracking.folder import write_json as write_redacted_json
from tracking.safe_text import redact_tree

TAKEN = (RUN_FILE, SUMMARY_FILE)


def check_output(folder: Path) -> None:
    """ConfigError naming output_dir if the folder cannot be created or written, or holds a run."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise ConfigError(f"output_dir {str(folder)!r} is not writable ({e.strerror or e}); choose another") from e
    taken = [name for name in TAKEN if (folder / name).exists()]
    if taken:
        raise ConfigError(
            f"output_dir {str(folder)!r} already holds a run ({taken[0]}); runs never share a folder: "
            "choose an empty one, or leave output_dir to Hydra (a new folder per run)"
        )


def claim_output(folder: Path) -> None:
    """Create run.json exclusively (the folder is this run's); ConfigError if another run has it."""
    check_output(folder)
    try:
        fd = os.open(folder / RUN_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError as e:
        raise ConfigError(f"output_dir {str(folder)!r} was just claimed by another run; choose another") from e
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps({"status": "running", "pid": os.getpid()}) + "\n")


def write_json(path: Path, value: Any) -> Path:
    """`value` as JSON at `path`, NaN and inf as null."""
    return write_redacted_json(path, finite(value))


def finite(value: Any) -> Any:
    """JSON-safe copy: NaN and inf become null."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_outputs(out: Path, raw: dict[str, Any], summary: Summary, runs: list[SimResult]) -> list[str]:
    """Write summary.json, resolved_config.yaml, the per-request records and the timelines the
    plots draw into the run's folder; the names written (its artifacts)."""
    data, _ = split_wall_clock(summary.to_dict())  # wall-clock figures go to run.json: same seed, same file
    write_json(out / SUMMARY_FILE, data)
    (out / PARAMS_FILE).write_text(yaml.safe_dump(redact_tree(raw), sort_keys=False))
    names = [SUMMARY_FILE, PARAMS_FILE]
    for run, name in zip(runs, RECORDS_FILES, strict=False):
        write_records(run, out / name)
        names.append(name)
    names.append(write_timelines(out, runs).name)
    return names


def write_records(run: SimResult, path: Path) -> None:
    """The run's per-request records at `path`: already there for a run streamed to it, copied
    from the file a streamed run wrote elsewhere (a baseline cached in a sweep), else written."""
    records = run.records
    if isinstance(records, RecordsFile):
        if records.path.resolve() != path.resolve():
            shutil.copyfile(records.path, path)
    else:
        records.to_parquet(path, index=False)
