"""gpud's own small error hierarchy: vendor errors are translated into these once, at the boundary."""


class GpudError(Exception):
    """Base of every error gpud reports to a person (a message, never a traceback)."""


class ConfigError(GpudError):
    """The configuration is invalid; the message names the file, the field and the fix."""


class NvmlUnavailable(GpudError):
    """NVML cannot be used at all on this machine (no driver, driver not loaded, mismatch)."""


class GpuLost(GpudError):
    """One GPU stopped answering (fell off the bus, needs a reset); the others go on.

    ``error`` names the driver's answer (``GpuIsLost``, ``LibRmVersionMismatch`` ...).
    """

    def __init__(self, message: str, error: str = "") -> None:
        super().__init__(message)
        self.error = error
