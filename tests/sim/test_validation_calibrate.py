"""The replay calibration: shipped features are reproducible, and the kept prompt lengths fit best."""

from __future__ import annotations

import numpy as np
import pytest

from oracle import arch, hwcal
from sim.validation import calibrate
from sim.validation.table import default_benchmark, default_histograms, read_benchmark, read_histograms
from sim.validation.workload import PromptLengths


@pytest.fixture(scope="module")
def h100_rows():
    rows = [r for r in read_benchmark(default_benchmark()) if r.gpu_model == "H100"]
    return rows, read_histograms(default_histograms())


def shipped_prompts(gpu_model: str) -> PromptLengths:
    feats = hwcal.load_replay_features()
    row = feats[feats.gpu_model == gpu_model].iloc[0]
    return PromptLengths("lognormal", float(row.prompt_mean_tokens), float(row.prompt_sigma))


def test_shipped_features_come_from_a_fresh_replay(h100_rows):
    rows, hists = h100_rows
    picked = [r for r in rows if r.max_num_seqs in (8, 768)]
    fresh = calibrate.replay_features(picked, hists, shipped_prompts("H100"), seed=0)
    shipped = hwcal.load_replay_features().merge(fresh[hwcal.KEY], on=hwcal.KEY)
    assert len(shipped) == len(picked)
    np.testing.assert_allclose(fresh[hwcal.X_COLUMNS].to_numpy(), shipped[hwcal.X_COLUMNS].to_numpy(), rtol=1e-8)


def test_the_kept_prompt_lengths_score_better_than_long_prompts(h100_rows):
    rows, hists = h100_rows
    gpu = arch.load_gpu("h100")
    kept = calibrate.score(calibrate.replay_features(rows, hists, shipped_prompts("H100"), 0), gpu)
    long = calibrate.score(calibrate.replay_features(rows, hists, PromptLengths("lognormal", 880.0, 1.0), 0), gpu)
    assert kept < long


@pytest.mark.parametrize("argv", [["seeed=1"], ["out"], ["seed=x"], ["progress=yes"]])
def test_bad_arguments_are_refused_before_any_replay(argv, capsys):
    assert calibrate.main(argv) == 2
    assert "sim.validation.calibrate: error:" in capsys.readouterr().err
