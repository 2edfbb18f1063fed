import os
import signal

import pytest

from calibrate.gpu_settings import GpuSettingsController, GpuSettingsError
from calibrate.grid import GpuSettings
from calibrate.nvml import NvmlPermissionError
from calibrate.signals import Terminated, sigterm_raises

CAPPED = GpuSettings(clock_mhz=1410, power_limit_w=400.0)


def assert_default(nvml):
    gpu = nvml.gpus[0]
    assert gpu.locked_clocks is None and gpu.power_limit_mw == 700_000


def test_applies_and_restores(session, nvml):
    ctl = GpuSettingsController(session)
    with ctl.applied(CAPPED):
        assert nvml.gpus[0].locked_clocks == (1410, 1410)
        assert nvml.gpus[0].power_limit_mw == 400_000
    assert_default(nvml)


def test_restores_previous_custom_power_limit(session, nvml):
    nvml.gpus[0].power_limit_mw = 550_000
    with GpuSettingsController(session).applied(GpuSettings(power_limit_w=300.0)):
        assert nvml.gpus[0].power_limit_mw == 300_000
    assert nvml.gpus[0].power_limit_mw == 550_000


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_restores_on_exception_and_ctrl_c(session, nvml, error):
    with pytest.raises(error), GpuSettingsController(session).applied(CAPPED):
        raise error("boom")
    assert_default(nvml)


def test_restores_on_sigterm(session, nvml):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated) as e, sigterm_raises(), GpuSettingsController(session).applied(CAPPED):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes
            pass
    assert e.value.code == 128 + signal.SIGTERM
    assert_default(nvml)
    assert signal.getsignal(signal.SIGTERM) is before


def test_partial_apply_is_undone(session, nvml):
    def refuse(*args):
        import pynvml

        raise pynvml.NVMLError_NotSupported()

    nvml.nvmlDeviceSetGpuLockedClocks = refuse
    with pytest.raises(Exception, match="locking GPU 0's SM clock at 1410 MHz: not supported"):
        with GpuSettingsController(session).applied(CAPPED):
            pass
    assert nvml.gpus[0].power_limit_mw == 700_000


def test_check_without_root_fails_before_changing_anything(session, nvml):
    nvml.root = False
    with pytest.raises(NvmlPermissionError, match="needs root"):
        GpuSettingsController(session).check([CAPPED])
    assert_default(nvml)


def test_check_default_settings_needs_nothing(session, nvml):
    nvml.root = False
    GpuSettingsController(session).check([GpuSettings()])
    assert nvml.calls == []


def test_check_power_limit_out_of_range(session):
    with pytest.raises(GpuSettingsError, match=r"\[900.0\] outside GPU 0's range 200-700 W"):
        GpuSettingsController(session).check([GpuSettings(power_limit_w=900.0)])
