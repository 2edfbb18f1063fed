"""oracle.screen: which measured runs the calibration leaves out, and that it does."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oracle import hwcal
from oracle.arch import load_gpu
from oracle.screen import DATA_PARALLEL, NOT_GPU_BOUND, THROUGHPUT, TWIN, screen, weaker


def run(gpu: str, tok_s: float, cap: int = 8, task: str = "gpqa", dp: int = 1) -> dict[str, object]:
    return {
        "model_id": "org/M",
        "weight_precision": "bfloat16",
        "task": task,
        "num_gpus": 1,
        "expert_parallel": 1,
        "data_parallel": dp,
        "max_num_seqs": cap,
        "gpu_model": gpu,
        THROUGHPUT: tok_s,
    }


def test_b200_is_stronger_than_h100_on_both_and_a100_weaker_still():
    h100, b200, a100 = (load_gpu(g) for g in ("h100", "b200", "a100"))
    assert weaker(h100, b200) and weaker(a100, h100) and not weaker(b200, h100) and not weaker(h100, h100)


def test_a_run_slower_than_its_twin_on_a_weaker_gpu_is_screened_and_only_it():
    table = pd.DataFrame(
        [
            run("H100", 500.0),
            run("B200", 250.0),  # slower than on H100: screened
            run("H100", 900.0, cap=16),
            run("B200", 1400.0, cap=16),  # faster: kept
            run("B200", 100.0, cap=32),  # no H100 twin at this cap: kept
            run("B200", 100.0, task="lm-arena-chat"),  # no twin on this task: kept
        ]
    )
    assert screen(table).tolist() == ["", NOT_GPU_BOUND, "", "", "", ""]


def test_data_parallel_runs_are_screened_for_their_layout():
    table = pd.DataFrame([run("B200", 100.0, dp=4), run("B200", 100.0)])
    assert screen(table).tolist() == [DATA_PARALLEL, ""]


def test_a_gpu_label_with_no_spec_is_compared_with_nothing():
    table = pd.DataFrame([run("H100", 500.0), run("X9", 1.0)])
    assert screen(table).tolist() == ["", ""]


def test_a_table_without_the_twin_columns_is_refused_with_their_names():
    with pytest.raises(ValueError, match="without the columns \\['task'\\]"):
        screen(pd.DataFrame([run("H100", 1.0)]).drop(columns="task"))


@given(st.lists(st.floats(1.0, 1e4), min_size=1, max_size=6), st.floats(1.0, 3.0))
def test_the_weaker_gpu_is_never_screened_and_a_run_as_fast_as_its_twin_is_kept(tok_s, faster):
    """Whatever the throughputs: no H100 run is screened as not GPU-bound, and B200 runs at
    least as fast as their H100 twins are all kept."""
    h100 = [run("H100", t, cap=8 * (i + 1)) for i, t in enumerate(tok_s)]
    b200 = [run("B200", t * faster, cap=8 * (i + 1)) for i, t in enumerate(tok_s)]
    assert (screen(pd.DataFrame(h100 + b200)) == "").all()


def test_the_shipped_screen_names_the_b200_runs_slower_than_h100_and_the_calibration_leaves_them_out():
    table = hwcal.load_mlenergy()
    reason = screen(table)
    slow = table[reason == NOT_GPU_BOUND]
    assert set(slow["gpu_model"]) == {"B200"}
    qwen14 = slow[slow["model_id"] == "Qwen/Qwen3-14B"]
    assert sorted(qwen14["max_num_seqs"]) == [8, 16, 32, 64] and set(qwen14["task"]) == {"gpqa"}
    for _, r in slow.iterrows():  # each has a faster H100 twin
        twin = table[(table[TWIN] == r[TWIN]).all(axis=1) & (table["gpu_model"] == "H100")]
        assert (twin[THROUGHPUT] > r[THROUGHPUT]).any()
    assert (table.loc[reason == DATA_PARALLEL, "data_parallel"] > 1).all()
    fitted = set(hwcal.measured_rows("B200", None, None)["config_id"])
    assert fitted and not fitted & set(table.loc[reason != "", "config_id"])
