"""sim.console.progress: a bar draws on a terminal only, and never in a sweep's job (a Hydra multirun's)."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr

import pytest
from hydra.conf import HydraConf
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from sim.console.progress import in_parallel_job, progress_bar


@contextmanager
def terminal() -> Iterator[None]:
    """stderr on a real pseudo-terminal, inside the test (pytest sets its own stderr for each phase)."""
    main, side = os.openpty()
    with os.fdopen(side, "w") as tty, redirect_stderr(tty):
        yield
    os.close(main)


@pytest.fixture
def hydra_mode(monkeypatch):
    """Set Hydra's runtime config as a job of that mode sees it; unset after the test."""
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)

    def set_mode(mode: RunMode) -> None:
        hydra = OmegaConf.structured(HydraConf)
        hydra.mode = mode
        HydraConfig.instance().set_config(OmegaConf.create({"hydra": hydra}))

    return set_mode


def drawn(**kwargs) -> bool:
    with progress_bar(total=3, **kwargs) as bar:
        return not bar.disable


def test_a_bar_draws_on_a_terminal_unless_turned_off() -> None:
    with terminal():
        assert sys.stderr.isatty() and drawn()
        assert not drawn(enabled=False)


def test_no_bar_when_stderr_is_not_a_terminal(monkeypatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not drawn()


def test_no_bar_in_a_job_of_a_multirun_even_on_a_terminal(hydra_mode) -> None:
    with terminal():
        hydra_mode(RunMode.RUN)
        assert not in_parallel_job() and drawn()
        hydra_mode(RunMode.MULTIRUN)
        assert in_parallel_job() and not drawn()
