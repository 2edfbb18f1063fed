import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fake_nvml import FakeClock, FakeNvml  # noqa: E402

from calibrate.nvml import open_session  # noqa: E402


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def nvml(clock: FakeClock) -> FakeNvml:
    return FakeNvml(clock)


@pytest.fixture
def session(nvml: FakeNvml):
    s = open_session([0], nvml=nvml)
    yield s
    s.close()
