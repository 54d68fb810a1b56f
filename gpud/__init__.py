"""gpud: keeps deep-learning GPUs fast and alive."""

__version__ = "0.1.0"
