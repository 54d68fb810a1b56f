"""gpud's sub-commands: one module each, its options beside its handler, shared ones in ``shared``."""
