"""Sweeps: the launchers (stacked.py, what its workers preload); Hydra finds them through
the adapters in hydra_plugins/."""
