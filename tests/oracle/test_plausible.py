"""Oracle files whose numbers no GPU can produce are refused on load, naming the problem."""

from __future__ import annotations

import json

import numpy as np
import pytest

from oracle.arch import load_gpu
from oracle.model import Oracle, OracleFormatError, representative_steps, shipped_oracles
from oracle.plausible import POWER_SLACK, implausible

H100 = "llama-3.1-8b_h100"


def _shipped(name: str = H100) -> dict:
    return Oracle.load(name).to_dict()


def _scaled(d: dict, key: str, factor: float) -> None:
    d[key] = {k: v * factor for k, v in d[key].items()}


def _load(tmp_path, d: dict) -> Oracle:
    path = tmp_path / "o.json"
    path.write_text(json.dumps(d))
    return Oracle.load(path)


def test_every_shipped_oracle_is_plausible_with_room_to_spare():
    """All shipped oracles load; their largest steps stay under POWER_SLACK × the board limit."""
    for name in shipped_oracles():
        o = Oracle.load(name)
        steps = representative_steps(o.calibrated)
        assert implausible(o, steps) == [], name
        peak = (o.step_energy(steps) / o.step_time(steps)).max()
        assert peak < 0.9 * POWER_SLACK * load_gpu(name.split("_")[1]).power_limit_w * o.gpus, name


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda d: _scaled(d, "energy_coef_j", 1e30),
            r"step power up to [\d.]+e\+33 W, over 2× the NVIDIA H100.* 700 W",
        ),
        (lambda d: _scaled(d, "energy_coef_j", 1 / 3.6e6), r"step power down to .* W, under 0.5× .* idle power .*kWh"),
        (lambda d: d.update(gpu=load_gpu("a100").full_name), r"for 'NVIDIA A100.*over 2× the NVIDIA A100.* 400 W"),
        (lambda d: d.update(power_limit_w=5000.0), r"power_limit_w 5000 W is over 2× the NVIDIA H100"),
        (lambda d: d["memory"].update(gpu_memory_bytes=1e12), r"KV cache would be larger than the GPU's memory"),
        (lambda d: d["memory"].update(weight_bytes=1e11), r"the model does not fit"),
    ],
)
def test_an_impossible_oracle_is_refused_in_one_line(tmp_path, mutate, message):
    d = _shipped()
    mutate(d)
    with pytest.raises(OracleFormatError, match=message) as e:
        _load(tmp_path, d)
    assert str(tmp_path / "o.json") in str(e.value) and "\n" not in str(e.value)


def test_an_unknown_gpu_is_bounded_by_its_own_limit_or_the_largest_known(tmp_path):
    d = _shipped()
    d["gpu"] = "Imaginary X1"
    assert _load(tmp_path, d).gpu == "Imaginary X1"  # plausible numbers: loads
    _scaled(d, "energy_coef_j", 1e30)
    with pytest.raises(OracleFormatError, match="over 2× the power limit of 700 W"):
        _load(tmp_path, d)
    d["power_limit_w"] = None
    with pytest.raises(OracleFormatError, match="over 2× the power limit of 1000 W"):
        _load(tmp_path, d)


def test_checks_read_the_steps_given():
    """A batch-1 decode step at 300 W is plausible on an H100; the same oracle at 3 kW is not."""
    o = Oracle.load(H100)
    step = np.array([[1.0, 1.0, 100.0, 0.0, 0.0, 0.0]])
    o.energy_coef_j = 300.0 * o.time_coef_s
    assert implausible(o, step) == []
    o.energy_coef_j = 3000.0 * o.time_coef_s
    assert "over 2×" in implausible(o, step)[0]
