"""Oracle persistence, validation and warnings."""

import json
import os
import warnings

import numpy as np
import pytest

from oracle.model import (
    MAX_ORACLE_BYTES,
    CalibratedRange,
    MemorySpec,
    Oracle,
    OracleFormatError,
    OracleRangeWarning,
    Overlap,
    shipped_oracles,
)


def _oracle(**kw):
    args = dict(
        name="t",
        model="m",
        gpu="g",
        backend="b",
        energy_coef_j=[0.3, 1e-3, 1e-6, 1e-3, 1e-4, 1e-8],
        time_coef_s=[5e-3, 1e-6, 1e-9, 1e-5, 1e-7, 1e-11],
        idle_power_w=70.0,
        power_limit_w=700.0,
        calibrated=CalibratedRange((64, 4096), (64, 4096), (1, 64)),
    )
    args.update(kw)
    return Oracle(**args)


HIDE = {"weights_s": 4e-3, "per_token_s": 2e-5, "weights_j": 0.24, "per_token_j": 1.2e-3}
"""A prefill overlap (the weights' read of a step, one prompt token's GEMMs; s, and J at 60 W)."""


def test_a_prefill_step_costs_the_longer_of_its_weights_read_and_its_gemms(tmp_path):
    """With an overlap, a step prefilling n tokens costs its linear coefficients less
    min(weights, per_token · n), time and energy apart; decode steps are unchanged; the request
    polynomial's lockstep batch pays it once; it survives a save and load."""
    plain, o = _oracle(), _oracle(overlap=Overlap(**HIDE))
    for n in (0, 10, 200, 4000):  # the knee: 4e-3 / 2e-5 = 200 tokens
        x = np.array([1.0, 8, 8000, 1, n, n * (n + 1) / 2])
        hidden_s, hidden_j = min(4e-3, 2e-5 * n), min(0.24, 1.2e-3 * n)
        assert o.step_time(x) == pytest.approx(plain.step_time(x) - hidden_s, rel=1e-12)
        assert o.step_energy(x) == pytest.approx(plain.step_energy(x) - hidden_j, rel=1e-12)
    b, n_in, n_out = 8, 100, 50
    assert o.energy(n_in, n_out, b) == pytest.approx(plain.energy(n_in, n_out, b) - min(0.24, 1.2e-3 * b * n_in) / b)
    assert o.time(n_in, n_out, b) == pytest.approx(plain.time(n_in, n_out, b) - min(4e-3, 2e-5 * b * n_in))
    grid = np.arange(1, 5000)
    best = grid[np.argmin(o.energy(n_in, grid, b, check_range=False) / grid)]
    assert o.optimal_output(n_in, b, check_range=False) == pytest.approx(best, abs=1.0)
    back = Oracle.load(o.save(tmp_path / "o.json"))
    assert back.overlap == o.overlap and back.energy(n_in, n_out, b) == o.energy(n_in, n_out, b)


def test_save_load_roundtrip(tmp_path):
    o = _oracle(memory=MemorySpec(1e9, 1e5, 8e10), fit={"mape_pct": 1.0})
    back = Oracle.load(o.save(tmp_path / "o.json"))
    np.testing.assert_array_equal(back.energy_coef_j, o.energy_coef_j)
    np.testing.assert_array_equal(back.time_coef_s, o.time_coef_s)
    assert back.memory == o.memory and back.calibrated == o.calibrated and back.fit == o.fit
    assert back.energy(1000, 200, 8) == o.energy(1000, 200, 8)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(version=99), "version 99"),
        (lambda d: d.update(format="other"), "not a sweetspot oracle"),
        (lambda d: d.pop("idle_power_w"), "missing key 'idle_power_w'"),
        (lambda d: d["energy_coef_j"].update(bogus=1.0), "unknown feature"),
        (lambda d: d["energy_coef_j"].update(const=-1.0), "non-negative"),
        (lambda d: d.update(idle_power_w="70"), "'idle_power_w' must be a number.*without quotes"),
        (lambda d: d["time_coef_s"].update(decode_ctx="1e-9"), "'time_coef_s.decode_ctx' must be a number"),
        (lambda d: d["memory"].update(weight_bytes=-1e9), "memory.weight_bytes must be a finite non-negative"),
        (lambda d: d["memory"].update(gpu_memory_bytes="8e10"), "'memory.gpu_memory_bytes' must be a number"),
        (lambda d: d.update(time_coef_s=dict.fromkeys(d["time_coef_s"], 0.0)), "time_coef_s are all zero"),
        (
            lambda d: d.update(time_coef_s={**dict.fromkeys(d["time_coef_s"], 0.0), "prefill_tokens": 1e-7}),
            "every decode step 0 s",
        ),
        (lambda d: d["calibrated"].update(n_in=[4096, 64]), "calibrated.n_in .*reversed"),
        (lambda d: d["calibrated"].update(batch=[1]), "'calibrated.batch' must be a \\[low, high\\] pair"),
        (lambda d: d.update(power_limit_w=50.0), "power_limit_w .* at least idle_power_w"),
        (lambda d: d.update(name=7), "'name' must be a non-empty string"),
        (lambda d: d.update(overlap={"weights_s": 1e-3}), "overlap needs exactly"),
        (lambda d: d.update(overlap={**HIDE, "per_token_j": -1.0}), "overlap.per_token_j must be a finite number"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, mutate, message):
    d = _oracle(memory=MemorySpec(1e9, 1e5, 8e10)).to_dict()
    mutate(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(OracleFormatError, match=message) as e:
        Oracle.load(path)
    assert str(path) in str(e.value)


def test_malformed_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(OracleFormatError, match="not valid JSON"):
        Oracle.load(path)


def test_unknown_shipped_name_suggests_close_ones():
    with pytest.raises(FileNotFoundError, match="Did you mean llama-3.1-8b_h100"):
        Oracle.load("llama-3.1-8b_h10")


def test_range_warning_is_shown_once_per_oracle():
    o = _oracle()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        o.energy(1000, 200)
        assert not caught
        o.energy(20000, 200)
        o.energy(30000, 200)
        o.optimal_output(50000)
    assert [w.category for w in caught] == [OracleRangeWarning]
    assert "n_in in [20000, 20000]" in str(caught[0].message)


def test_power_violations_flag_impossible_coefficients():
    t = np.array([5e-3, 1e-6, 1e-9, 1e-5, 1e-7, 1e-11])
    assert _oracle(time_coef_s=t, energy_coef_j=300.0 * t).power_violations() == []
    hot = _oracle(time_coef_s=t, energy_coef_j=300.0 * t * [1, 1, 1, 1, 5, 1])
    assert any("above the power limit" in p for p in hot.power_violations())
    cold = _oracle(time_coef_s=t, energy_coef_j=10.0 * t)
    assert any("below idle power" in p for p in cold.power_violations())


def test_kv_capacity():
    m = MemorySpec(weight_bytes=16e9, kv_bytes_per_token=131072, gpu_memory_bytes=80e9)
    assert m.kv_capacity_tokens(0.9) == int((72e9 - 16e9) // 131072)


def test_every_shipped_oracle_loads_and_is_physical():
    names = shipped_oracles()
    assert len(names) >= 19 * 4
    for name in names:
        o = Oracle.load(name)
        problems = o.power_violations()
        assert not any("below idle power" in p for p in problems), name
        assert o.provenance.get("power_throttled", []) == [p for p in problems if "above the power limit" in p], name
        assert np.all(np.isfinite(o.optimal_output([64, 4096])))
        assert o.memory is not None and o.memory.kv_capacity_tokens() > 0, name


def test_load_refuses_a_fifo_without_blocking(tmp_path):
    from tests.oracle.test_files import raised_in_subprocess

    fifo = tmp_path / "o.json"
    os.mkfifo(fifo)
    assert raised_in_subprocess(f"oracle.model.Oracle.load({str(fifo)!r})") == (
        f"OracleFormatError: oracle file {fifo} is not a regular file (a FIFO)"
    )


def test_load_refuses_directories_and_oversized_files(tmp_path):
    with pytest.raises(OracleFormatError, match="is not a regular file \\(a directory\\)"):
        Oracle.load(tmp_path)
    big = tmp_path / "big.json"
    with big.open("wb") as f:
        f.truncate(MAX_ORACLE_BYTES + 1)  # sparse: no disk used
    with pytest.raises(OracleFormatError, match="big.json holds 16,777,217 bytes, more than the 16,777,216"):
        Oracle.load(big)
