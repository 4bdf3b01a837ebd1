"""Hydra's side of `hydra/launcher=stacked_slurm` and `stacked_submitit_local` (Hydra takes
plugins from the hydra_plugins namespace package alone). The launchers are regexp.sweep.cluster,
which registers their configs as it is imported."""

from regexp.sweep import cluster


class StackedSlurmLauncher(cluster.SubmititLauncher):
    """Populations as the tasks of Slurm job arrays."""

    EXECUTOR = "slurm"


class StackedSubmititLocalLauncher(cluster.SubmititLauncher):
    """Populations as submitit's local processes."""

    EXECUTOR = "local"
