"""The NVML device adapter: opening GPUs and turning pynvml errors into errors that say what to do.

`nvml` is the `pynvml` module (from nvidia-ml-py) or a stand-in with the same functions (tests use
a fake that raises the real `pynvml.NVMLError` subclasses).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pynvml

T = TypeVar("T")

NO_DRIVER = (
    "no NVIDIA driver found ({detail}): energy is read from NVML, which needs an NVIDIA GPU and its "
    "driver. On a machine without one, measure timing only with meter=none (energy stays empty and "
    "cannot be fitted)."
)


class NvmlError(RuntimeError):
    """An NVML failure, with what to do about it."""


class NvmlUnavailableError(NvmlError):
    """No NVML library or no loaded driver."""


class NvmlNotSupportedError(NvmlError):
    """The GPU does not support the queried or set feature."""


class NvmlPermissionError(NvmlError):
    """The call needs more privilege (root, or an admin-enabled setting)."""


def map_error(e: pynvml.NVMLError, action: str) -> NvmlError:
    """The typed error for a pynvml error raised while doing `action`."""
    if isinstance(e, (pynvml.NVMLError_LibraryNotFound, pynvml.NVMLError_DriverNotLoaded)):
        return NvmlUnavailableError(NO_DRIVER.format(detail=f"{action}: {e}"))
    if isinstance(e, pynvml.NVMLError_NotSupported):
        return NvmlNotSupportedError(f"{action}: not supported by this GPU or driver ({e})")
    if isinstance(e, pynvml.NVMLError_NoPermission):
        return NvmlPermissionError(
            f"{action}: no permission ({e}). Changing clocks or power limits needs root: run the "
            "sweep with sudo (or as an administrator), or drop clocks_mhz / power_limits_w from the grid."
        )
    return NvmlError(f"{action}: {type(e).__name__}: {e}")


def call(action: str, fn: Callable[..., T], *args: Any) -> T:
    """Call an NVML function; raise the mapped typed error on failure."""
    try:
        return fn(*args)
    except pynvml.NVMLError as e:
        raise map_error(e, action) from e


@dataclass
class NvmlSession:
    """Initialised NVML and handles of the GPUs in use (indices as NVML numbers them)."""

    nvml: Any
    indices: tuple[int, ...]
    handles: tuple[Any, ...]

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def open_session(indices: Sequence[int], nvml: Any = pynvml) -> NvmlSession:
    """Initialise NVML and open the GPUs `indices`; errors name a missing GPU and the count."""
    call("initialising NVML", nvml.nvmlInit)
    count = call("counting GPUs", nvml.nvmlDeviceGetCount)
    missing = [i for i in indices if not 0 <= i < count]
    if missing or not indices:
        nvml.nvmlShutdown()
        raise NvmlError(f"gpus={list(indices)}: GPU(s) {missing} do not exist; NVML sees {count} GPU(s)")
    handles = tuple(call(f"opening GPU {i}", nvml.nvmlDeviceGetHandleByIndex, i) for i in indices)
    return NvmlSession(nvml=nvml, indices=tuple(indices), handles=handles)
