"""Hydra's side of `hydra/launcher=stacked`: Hydra takes plugins from the hydra_plugins
namespace package alone, by the module their class is defined in. The launcher itself is
regexp.sweep.stacked, which registers its config as it is imported."""

from regexp.sweep import stacked


class StackedLauncher(stacked.StackedLauncher):
    """regexp.sweep.stacked.StackedLauncher, where Hydra looks for it."""
