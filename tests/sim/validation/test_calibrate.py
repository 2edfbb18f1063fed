"""The replay behind the calibration: shipped features are reproducible, refused models are left
out, and expert shares are recorded for mixtures of experts only."""

from __future__ import annotations

import numpy as np
import pytest

from oracle import arch, hwcal
from oracle.overlap import KNEE_COLUMNS, KNEES
from sim.validation import calibrate


@pytest.mark.slow  # three replays with recorded features
def test_shipped_features_come_from_a_fresh_replay():
    """A one-GPU dense run, a multi-GPU MoE run and an fp8 MoE run replayed again give the shipped
    features."""
    shipped = hwcal.load_replay_features()
    picked = set()
    for query in (
        "num_gpus == 1 and model_id == 'meta-llama/Llama-3.1-8B-Instruct' and max_num_seqs == 8",
        "num_gpus == 8 and model_id == 'Qwen/Qwen3-235B-A22B-Instruct-2507' and max_num_seqs == 64",
        "model_id == 'Qwen/Qwen3-235B-A22B-Instruct-2507-FP8' and gpu_model == 'H100' and max_num_seqs == 32",
    ):
        picked |= set(shipped.query(query)["config_id"].iloc[:1])
    assert len(picked) == 3
    fresh = calibrate.replay_features(progress=False, only=picked).set_index("config_id").sort_index()
    kept = shipped.set_index("config_id").loc[fresh.index]
    columns = [*hwcal.X_COLUMNS, *hwcal.M_COLUMNS, hwcal.X_EXPERTS, hwcal.M_EXPERTS, *KNEE_COLUMNS]
    np.testing.assert_allclose(fresh[columns].to_numpy(), kept[columns].to_numpy(), rtol=1e-8)


def test_every_modelled_run_is_replayed_and_expert_shares_belong_to_moe():
    feats = hwcal.load_replay_features()
    assert len(feats) == len(hwcal.load_mlenergy()) and feats["model_id"].str.contains("Nemotron").any()
    kinds = {m: bool(arch.find_model(m).experts) for m in feats["model_id"].unique()}
    moe = feats["model_id"].map(kinds).to_numpy(bool)
    assert (feats.loc[moe, hwcal.X_EXPERTS] > 0).all() and (feats.loc[~moe, hwcal.X_EXPERTS] == 0).all()
    # a step touches at most every expert: per output token, at most one full read per decode step
    assert (feats[hwcal.M_EXPERTS] <= 1.0).all()


def test_the_prompt_tokens_below_each_knee_add_up():
    """Per output token, the window's prompt tokens below a knee: all of them past the largest
    prompt step, none at 0, more with a higher knee but never more per knee token (min(n, k) is
    concave in k)."""
    feats = hwcal.load_replay_features()
    s = feats[KNEE_COLUMNS].to_numpy()
    np.testing.assert_allclose(s[:, -1], feats["x_prefill_tokens"], rtol=1e-8)
    per_knee = s / KNEES
    assert (np.diff(s, axis=1) >= -1e-8 * s[:, 1:]).all()  # the file keeps 10 significant digits
    assert (np.diff(per_knee, axis=1) <= 1e-8 * per_knee[:, :-1]).all()
    # at a knee of 1 token, one token a prefill step: at most one a prefilling sequence
    assert (s[:, 0] > 0).all() and (s[:, 0] <= feats["x_prefill_seqs"] * (1 + 1e-8)).all()


@pytest.mark.parametrize("argv", [["seeed=1"], ["out"], ["seed=x"], ["progress=yes"]])
def test_bad_arguments_are_refused_before_any_replay(argv, capsys):
    assert calibrate.main(argv) == 2
    assert "sim.validation.calibrate: error:" in capsys.readouterr().err
