import pytest

from calibrate.meter import NullMeter, NvmlMeter, WindowError
from calibrate.nvml import NvmlError, NvmlNotSupportedError, NvmlUnavailableError, open_session


def test_window_energy_is_counter_difference_in_joules(session, nvml, clock):
    meter = NvmlMeter(session, min_window_s=1.0, clock=clock, sleep=clock.sleep)
    meter.begin_window("w")
    clock.advance(2.0)
    m = meter.end_window("w")
    assert m.duration_s == pytest.approx(2.0)
    assert m.energy_j == pytest.approx(200.0)  # 100 W for 2 s, counter ticks aligned
    assert not m.short


def test_counter_steps_every_100ms_and_short_windows_are_flagged(session, nvml, clock):
    meter = NvmlMeter(session, min_window_s=1.0, clock=clock, sleep=clock.sleep)
    clock.advance(0.01)
    meter.begin_window("w")
    clock.advance(0.05)  # inside one counter update period: no tick
    m = meter.end_window("w")
    assert m.energy_j == 0.0 and m.short
    meter.begin_window("w")
    clock.advance(0.5)
    m = meter.end_window("w")
    assert m.short and m.energy_j == pytest.approx(50.0)


def test_energy_sums_gpus_and_follows_power_changes(clock):
    from fake_nvml import FakeNvml

    nvml = FakeNvml(clock, gpus=2)
    meter = NvmlMeter(open_session([0, 1], nvml=nvml), clock=clock, sleep=clock.sleep)
    meter.begin_window("w")
    clock.advance(1.0)
    nvml.set_power(300.0, gpu=1)
    clock.advance(1.0)
    assert meter.end_window("w").energy_j == pytest.approx(100 * 2 + 100 + 300)


def test_idle_power_after_settle(session, nvml, clock):
    meter = NvmlMeter(session, idle_settle_s=5.0, idle_window_s=2.0, clock=clock, sleep=clock.sleep)
    t0 = clock()
    assert meter.idle_power_w() == pytest.approx(100.0)
    assert clock() - t0 == pytest.approx(7.0)


def test_device_info(session, nvml, clock):
    nvml.gpus[0].temperature_c = 57
    info = NvmlMeter(session, clock=clock).device_info()
    assert info.gpu_name == "NVIDIA H100 80GB HBM3"
    assert info.driver == "550.54.15"
    assert (info.sm_clock_mhz, info.temperature_c, info.power_limit_w) == (1980, 57, 700.0)


def test_end_without_begin(session, clock):
    with pytest.raises(WindowError, match="without begin_window"):
        NvmlMeter(session, clock=clock).end_window("x")


def test_no_driver_says_how_to_run_timing_only(clock):
    from fake_nvml import FakeNvml

    with pytest.raises(NvmlUnavailableError, match="meter=none"):
        open_session([0], nvml=FakeNvml(clock, library=False))


def test_real_pynvml_without_driver_is_mapped():
    """On this CPU machine the real library is missing: the same typed error."""
    pytest.importorskip("pynvml")
    try:
        s = open_session([0])
    except NvmlUnavailableError as e:
        assert "meter=none" in str(e)
    else:  # a machine with a GPU
        s.close()


def test_missing_gpu_index_names_the_count(nvml):
    with pytest.raises(NvmlError, match=r"GPU\(s\) \[3\] do not exist; NVML sees 1"):
        open_session([0, 3], nvml=nvml)


def test_energy_counter_not_supported_fails_at_construction(session, nvml, clock):
    nvml.gpus[0].energy_supported = False
    with pytest.raises(NvmlNotSupportedError, match="energy counter of GPU 0"):
        NvmlMeter(session, clock=clock)


def test_null_meter_times_only(clock):
    m = NullMeter(clock=clock)
    m.begin_window("w")
    clock.advance(0.3)
    got = m.end_window("w")
    assert got.energy_j is None and got.duration_s == pytest.approx(0.3)
    assert m.idle_power_w() is None and m.device_info() is None and not m.measures_energy
