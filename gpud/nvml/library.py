"""Opening NVML: the official binding, the real driver or the simulated library, and clear failures."""

from __future__ import annotations

from typing import Any

import pynvml as N

from gpud.errors import NvmlUnavailable

_HINTS = {
    N.NVML_ERROR_LIBRARY_NOT_FOUND: "no NVIDIA driver found (libnvidia-ml.so.1 is missing)",
    N.NVML_ERROR_DRIVER_NOT_LOADED: "the NVIDIA kernel driver is not loaded",
    N.NVML_ERROR_LIB_RM_VERSION_MISMATCH: "driver library and kernel module differ; reboot after the driver upgrade",
    N.NVML_ERROR_NO_PERMISSION: "no permission to open the GPUs (/dev/nvidia*)",
}


def check_binding() -> None:
    """Refuse an old ``pynvml`` fork shadowing nvidia-ml-py (NVML.md §1)."""
    if not N.__file__.endswith("pynvml.py") or not hasattr(N, "_nvmlGetFunctionPointer"):
        raise NvmlUnavailable("a non-official 'pynvml' shadows nvidia-ml-py; run: pip uninstall pynvml")


def open_nvml(simulated_library: Any | None = None) -> None:
    """Initialise NVML, on ``simulated_library`` when given (it then stands in for the driver).

    Raises :class:`NvmlUnavailable` with a one-line reason when NVML cannot be used.
    """
    check_binding()
    if simulated_library is not None:
        N.nvmlLib = simulated_library
        N._nvmlGetFunctionPointer_cache.clear()
    try:
        N.nvmlInitWithFlags(N.NVML_INIT_FLAG_NO_GPUS)
    except N.NVMLError as error:
        reason = _HINTS.get(error.value, str(error))
        raise NvmlUnavailable(f"cannot use NVML: {reason}") from error


def close_nvml() -> None:
    """Shut NVML down; harmless when it was never opened."""
    try:
        N.nvmlShutdown()
    except N.NVMLError:
        pass
