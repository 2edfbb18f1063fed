"""The printed summary of a validation: grouped mean errors, the measurements' scatter beside them."""

from __future__ import annotations

import pandas as pd

from oracle import screen
from sim.validation.summary import format_errors


def test_format_errors_groups_and_counts_rows():
    def line(gpu, n, kind, task, model, err, constants="refined", why="", cap=8, measured=100.0):
        return (
            {"gpu_model": gpu, "num_gpus": n, "kind": kind, "task": task, "model_id": model, "max_num_seqs": cap}
            | {f"{m}_err_pct": err for m in ("batch", "throughput", "energy_per_token", "power", "itl_median")}
            | {f"{m}_measured": measured for m in ("batch", "throughput", "energy_per_token", "power", "itl_median")}
            | {"constants": constants, "screen": why}
        )

    df = pd.DataFrame(
        [line("H100", 1, "dense", "gpqa", "a/A", 10.0, "family"), line("H100", 8, "moe", "gpqa", "b/B", -30.0)]
        + [line("B200", 8, "moe", "lm-arena-chat", "b/B", 20.0), line("H100", 1, "hybrid", "gpqa", "c/C", 5.0)]
        + [line("B200", 1, "moe", "lm-arena-chat", "b/B", 60.0, why=screen.NOT_GPU_BOUND)]
    )
    text = format_errors(df)
    groups = text.split("per GPU × GPUs per replica × dense/MoE/hybrid:")[1].split("per GPU × oracle constants")[0]
    assert "H100 dense" in groups and "8×H100 moe" in groups and "8×B200 moe" in groups and "H100 hybrid" in groups
    constants = text.split("per GPU × oracle constants")[1].split("per task:")[0]
    assert "H100 family" in constants and "H100 refined" in constants and "B200 refined" in constants
    fitted = text.split("the calibration's screen")[1].split("per task:")[0].splitlines()[2:]
    rows_and_batch = {" ".join(f[:2]): (f[2], f[3]) for f in map(str.split, fitted)}
    assert rows_and_batch == {
        "B200 fitted": ("1", "20.0"),
        "B200 screened": ("1", "60.0"),
        "H100 fitted": ("3", "15.0"),
    }
    per_model = text.split("per model:")[1]
    assert "B  " in per_model and "36.7" in per_model  # (30 + 20 + 60) / 3, three rows
    assert "own scatter" not in text  # no sweep has a run with a cap on each side

    sweep = [line("B200", 8, "moe", "lm-arena-chat", "b/B", e, cap=c, measured=v) for c, v, e in _SWEEP]
    own = format_errors(pd.DataFrame(sweep)).split("own scatter")[1].splitlines()[2].split()
    assert own[:4] == ["B200", "fitted", "1", "8.1"]  # the run at cap 16, 10 % off its neighbours' line: its batch
    assert own[4] == "4.0"  # the simulator's absolute error on that run alone


_SWEEP = ((8, 100.0, 2.0), (16, 110.0, -4.0), (32, 100.0, 6.0))
"""Cap, every measured metric, every error (%): a sweep of three runs, the middle one 10 % high."""
