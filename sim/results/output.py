"""A run's output folder: checked before any work, claimed by one run only, filled with its files.

`check_output` runs before the inputs load (a folder that cannot be written, or that already holds
a run, fails at once); `claim_output` creates run.json exclusively, so of two runs given the same
folder the second refuses instead of overwriting the first. Every file is written whole or not at
all (tracking.files): a run stopped by a signal or a full disk leaves no half-written file under
a final name, and `stopped` marks its run.json "interrupted" or "failed" and says what was kept.
The files hold URIs without their credentials (tracking.safe_text).
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

from sim.results.records import RECORDS_FILES, RecordsFile
from sim.results.summary import Summary, split_wall_clock
from sim.results.timelines import REPLICAS_FILE, TIMELINES_FILE, write_timelines
from sim.schema import ConfigError
from sim.serving.run import SimResult
from tracking.files import replacing, write_text
from tracking.folder import PARAMS_FILE, RUN_FILE, RUNNING, SUMMARY_FILE, retry_hint
from tracking.folder import write_json as write_redacted_json
from tracking.safe_text import redact_tree

TABLE_FILE = "table.txt"
"""The console's table of the run, as printed (by a single run; a sweep's job prints one line)."""
TAKEN = (RUN_FILE, SUMMARY_FILE)
OUTPUTS = (SUMMARY_FILE, TABLE_FILE, PARAMS_FILE, *RECORDS_FILES, TIMELINES_FILE, REPLICAS_FILE)


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
        f.write(json.dumps({"status": RUNNING, "pid": os.getpid()}) + "\n")


def write_json(path: Path, value: Any) -> Path:
    """`value` as JSON at `path`, NaN and inf as null, URIs without credentials, written whole."""
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


def write_outputs(out: Path, raw: dict[str, Any], summary: Summary, runs: list[SimResult], table: str) -> list[str]:
    """Write summary.json, the console's `table` (TABLE_FILE), resolved_config.yaml, the
    per-request records and the timelines the plots draw into the run's folder; the names written
    (its artifacts)."""
    data, _ = split_wall_clock(summary.to_dict())  # wall-clock figures go to run.json: same seed, same file
    write_json(out / SUMMARY_FILE, data)
    write_text(out / TABLE_FILE, table)
    write_text(out / PARAMS_FILE, yaml.safe_dump(redact_tree(raw), sort_keys=False))
    names = [SUMMARY_FILE, TABLE_FILE, PARAMS_FILE]
    for run, name in zip(runs, RECORDS_FILES, strict=False):
        write_records(run, out / name)
        names.append(name)
    names += write_timelines(out, runs)
    return names


def write_records(run: SimResult, path: Path) -> None:
    """The run's per-request records at `path`: already there for a run streamed to it, copied
    from the file a streamed run wrote elsewhere (a baseline cached in a sweep), else written."""
    records = run.records
    if isinstance(records, RecordsFile) and records.path.resolve() == path.resolve():
        return
    with replacing(path) as tmp:
        if isinstance(records, RecordsFile):
            shutil.copyfile(records.path, tmp)
        else:
            records.to_parquet(tmp, index=False)


def stopped(folder: Path, status: str, reason: str) -> str:
    """Mark this process's claim on `folder` (its run.json) `status` ("interrupted", "failed") for
    `reason`; what is kept in the folder, in words (one line's end)."""
    try:
        claim = json.loads((folder / RUN_FILE).read_text())
    except (OSError, ValueError):
        return f"nothing was written to {folder}"
    if "tracking" in claim:  # the run's files are complete: only its logging was cut short
        return f"the run's files are complete in {folder}; if it is not in MLflow, log it with: {retry_hint(folder)}"
    if claim.get("status") != RUNNING or claim.get("pid") != os.getpid():
        return f"nothing was written to {folder}"
    try:
        write_json(folder / RUN_FILE, {"status": status, "pid": os.getpid(), "reason": reason})
    except OSError:
        pass  # a full disk: the claim says "running", read as killed by `python -m tracking`
    kept = [name for name in sorted(p.name for p in folder.iterdir()) if name in OUTPUTS or ".partial." in name]
    what = f"kept in {folder}: {', '.join(kept)}" if kept else f"nothing was written to {folder}"
    return f"{what} ({RUN_FILE} says {status})"
