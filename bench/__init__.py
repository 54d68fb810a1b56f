"""gpud benchmarks: ``python -m bench`` (performance), ``bench/soak.py`` (reliability), ``bench/thermal_model.py``."""
