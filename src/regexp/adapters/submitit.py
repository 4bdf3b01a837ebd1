"""submitit's private parts (checked by tests/test_slurm.py): the sbatch script its Slurm
executor would submit, which `sbatch --test-only` checks before a sweep writes anything."""

from __future__ import annotations


def sbatch_script(executor) -> str:
    """The script submitit's AutoExecutor `executor` (of Slurm) would submit for one task."""
    return executor._executor._make_submission_file_text("true", "check")  # noqa: SLF001
