"""Sweeps: what the launchers need besides Hydra's adapter in hydra_plugins/."""
