"""How a job ended, carried as values: the task function returns an `Outcome`, and the Hydra
callback `SweepReport` turns the outcomes of a run or a sweep into the command's exit; a job
that failed before it trained leaves its `failure` as its summary.json (rundir.write_summary).

Nothing here imports torch: a sweep's launcher process loads it to unpickle the outcomes of
jobs that ran elsewhere.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from regexp.errors import Ended, UserError
from regexp.run import rundir

log = logging.getLogger("regexp")


class Outcome(float):
    """A job's best valid loss (NaN without one), which sweepers such as Optuna minimize, with
    its `status` (completed, diverged, failed) and, for a user's mistake, the `error`."""

    status: str
    error: Exception | None

    def __new__(cls, value: float, status: str, error: Exception | None = None):
        outcome = super().__new__(cls, value)
        outcome.status, outcome.error = status, error
        return outcome

    def __reduce__(self):  # pickled by value for the processes of a parallel launcher
        return (Outcome, (float(self), self.status, self.error))


class SweepReport(Callback):
    """At the end of a single run that did not complete, raise `Ended` with its outcome. At
    the end of a sweep, count its jobs by status from their summary.json files (which works
    whatever launcher ran them), say which did not complete, and raise `Ended` if any."""

    def __init__(self) -> None:
        self._failed: dict[Path, str] = {}  # job dir: why, of the jobs that failed here

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        """A job that fails where this process sees it end (the basic and stacked launchers):
        what it says outranks its dir's summary.json, which a refused resume leaves as it
        was (a job of a resumed sweep refused for another run's checkpoint said completed)."""
        from regexp.adapters import hydra as hydra_adapter

        outcome = job_return.return_value if job_return.status == JobStatus.COMPLETED else None
        if job_return.status != JobStatus.COMPLETED:
            why = one_line(hydra_adapter.failure_of(job_return))
        elif isinstance(outcome, Outcome) and outcome.status == "failed":
            why = one_line(outcome.error) if outcome.error else "see its log"
        else:
            return
        self._failed[Path(config.hydra.runtime.output_dir).resolve()] = why

    def on_run_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        outcome = job_return.return_value if job_return.status == JobStatus.COMPLETED else None
        if not isinstance(outcome, Outcome):
            return  # a job that raised: Hydra raises it next
        if outcome.status != "completed":
            raise Ended(outcome.status, outcome.error)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        # Every job Hydra set up has its .hydra/; one that left no summary.json never ran.
        jobs = sorted(p.parent.parent for p in sweep.glob("**/.hydra/overrides.yaml"))
        summaries = {job.relative_to(sweep): _summary(job) for job in jobs}
        for job in jobs:  # (a summary.json that says failed says more)
            why, name = self._failed.get(job.resolve()), job.relative_to(sweep)
            if why is not None and summaries[name]["status"] != "failed":
                summaries[name] = {"status": "failed", "error": why}
        counts = Counter(s["status"] for s in summaries.values())
        bad = {k: s for k, s in summaries.items() if s["status"] not in ("completed",)}
        order = ["completed", "diverged", "interrupted", "failed", *counts]
        tally = ", ".join(f"{counts[k]} {k}" for k in dict.fromkeys(order) if counts[k])
        log.info("sweep %s: %d jobs: %s", sweep, len(summaries), tally or "none")
        _write_settings(sweep)
        for name, s in bad.items():
            log.info("  %s: %s%s", name, s["status"], f": {s['error']}" if s.get("error") else "")
        if bad:
            raise Ended(f"{len(bad)} of {len(summaries)} jobs did not complete")


def _write_settings(sweep: Path) -> None:
    """A line and a band per setting in TensorBoard, where the sweep replicates settings; a
    sweep whose runs cannot be read for it still ends as its jobs did."""
    from regexp.analysis import report
    from regexp.errors import UserError

    try:
        written = report.write_settings(sweep)
    except (OSError, ValueError, UserError) as exc:
        log.warning("no setting runs for TensorBoard: %s", exc)
        return
    if written:
        log.info("  TensorBoard: each setting's mean and band in %s/settings", sweep)


def _summary(job: Path) -> dict:
    """A sweep job's summary.json, or what stands for one where it is missing or unreadable."""
    try:
        summary = json.loads(rundir.summary_file(job).read_text())
    except FileNotFoundError:
        return {"status": "failed", "error": "it left no summary.json: it never trained"}
    except (OSError, ValueError) as exc:
        return {"status": "failed", "error": f"its summary.json is unreadable ({exc})"}
    if not isinstance(summary, dict) or not isinstance(summary.get("status"), str):
        return {"status": "failed", "error": "its summary.json holds no status"}
    return summary


def failure(exc: BaseException, overrides: list[str]) -> dict:
    """The summary of a run that failed before its tracker started."""
    return {"status": "failed", "epochs": 0, "error": one_line(exc), "overrides": overrides}


def one_line(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return str(exc)
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
