"""No record is lost at any kill point: a run, a resume and a sweep (basic and stacked
launchers) are killed at each of their write points in turn (tests/crashpoints.py: injected,
not timed), then resumed until they complete, resumes themselves killed too; every run dir
then holds what an uninterrupted run's holds, byte for byte.

What is compared: metrics.csv, model.txt, predictions.npz byte for byte; checkpoint.pt's
tensors byte for byte (torch.save may lay out equal states apart); summary.json but its
`seconds` (time spent, which a crash changes) and the `resume=` among its overrides;
.hydra/config.yaml and overrides.yaml but what names the resume; no temp file left.
TensorBoard's event files are append-only logs, and a killed run may leave records past its
checkpoint that its resume writes again: they are compared as TensorBoard shows them
(EventAccumulator, which drops what a resume's restart event supersedes), every scalar and
histogram at every step.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import crashpoints
import pytest
import torch
import yaml
from conftest import jobs_of, read_events

EPOCHS = 3
# Every write point of a scenario, 60 to 144 of them: 10 to 30 minutes each on 2 cores, so
# asked for (the suite runs named points of each scenario, and the exhaustive run before a
# change to what a run writes): REGEXP_CRASH_POINTS=all pytest tests/test_crash_points.py
# Each point is a run killed and resumed, a second or more: the whole suite's, not the edit tier's.
pytestmark = pytest.mark.slow
EXHAUSTIVE = pytest.mark.skipif(
    os.environ.get("REGEXP_CRASH_POINTS") != "all",
    reason="every write point: REGEXP_CRASH_POINTS=all (10 to 30 minutes a scenario)",
)
# Mini-batches and dropout: a resume must restore the batch order and the masks.
RUN = [
    f"train.epochs={EPOCHS}",
    "train.checkpoint_every=1",
    "train.batch_size=4",
    "model.hidden=[8]",
    "model.dropout=0.2",
    "log.figure_every=0",
    "log.hist_every=1",
]
# The run's live figure too: drawn in a process of its own, read back by a resume.
FIGURES = [*RUN[:-2], "log.figure_every=1", "log.hist_every=0"]
SWEEPS = {
    "basic": ["hydra/launcher=basic", "seed=0,1"],
    # two populations (of one member each), in two worker processes
    "stacked": ["hydra/launcher=stacked", "hydra.launcher.n_jobs=2", "model.hidden=[4],[8]"],
}  # fmt: skip


@pytest.fixture(scope="module")
def commands(tmp_path_factory):
    runner = crashpoints.Commands(tmp_path_factory.mktemp("commands"))
    yield runner
    runner.close()


# --- what must equal -----------------------------------------------------------------------


def record(run_dir: Path) -> dict:
    """What an uninterrupted run leaves in `run_dir`, as the comparison sees it."""
    got = {}
    for name in ("metrics.csv", "model.txt", "predictions.npz"):
        got[name] = (run_dir / name).read_bytes() if (run_dir / name).exists() else None
    got["checkpoint.pt"] = plain(torch.load(run_dir / "checkpoint.pt", weights_only=True))
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.pop("seconds")
    summary["overrides"] = [o for o in summary["overrides"] if not o.startswith("resume=")]
    got["summary.json"] = summary
    config = yaml.safe_load((run_dir / ".hydra/config.yaml").read_text())
    config.pop("resume")
    got["config.yaml"] = config
    overrides = yaml.safe_load((run_dir / ".hydra/overrides.yaml").read_text())
    got["overrides.yaml"] = [o for o in overrides if not o.startswith(("resume=", "hydra."))]
    if (run_dir / "fit.png").exists():  # (a run with figures: the last one, as it was drawn)
        got["fit.png"] = (run_dir / "fit.png").read_bytes()
    got["temp files"] = sorted(p.name for p in run_dir.rglob("*.tmp*"))
    events = read_events(run_dir)
    tags = events.Tags()
    got["tags"] = {k: sorted(v) for k, v in tags.items() if isinstance(v, list)}
    got["scalars"] = {t: [(e.step, e.value) for e in events.Scalars(t)] for t in tags["scalars"]}
    got["histograms"] = {
        t: [(e.step, e.histogram_value) for e in events.Histograms(t)] for t in tags["histograms"]
    }
    return got


def plain(state):
    """A checkpoint's state with each tensor as its dtype, shape and bytes (torch.save may lay
    out equal states apart: a resumed run's storages are shared otherwise)."""
    if isinstance(state, dict):
        return {k: plain(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return [plain(v) for v in state]
    if isinstance(state, torch.Tensor):
        return str(state.dtype), tuple(state.shape), state.cpu().contiguous().numpy().tobytes()
    return state


def differences(run_dir: Path, reference: Path) -> list[str]:
    """What differs between the record in `run_dir` and the one in `reference`."""
    got, want = record(run_dir), record(reference)
    return [key for key in want if got[key] != want[key]]


def completed(run_dir: Path) -> bool:
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return summary.get("status") == "completed" and summary.get("epochs") == EPOCHS


def point(points: list[str], pattern: str, nth: int = 1) -> int:
    """The number of the `nth` of `points` (`N PID what` each) whose `what` matches
    `pattern`; -1: the last point."""
    import re

    if pattern == "last":
        return len(points)
    found = [k for k, p in enumerate(points, 1) if re.search(pattern, p.split(" ", 2)[2])]
    assert len(found) >= nth, f"no point {pattern} (nth {nth}) in {points}"
    return found[nth - 1]


# --- a run, and its resume -----------------------------------------------------------------


def train(commands, cwd: Path, at: int = 0, run: list[str] = RUN):
    """`regexp train` of `run` in cwd/run, killed (the command, whichever of its processes
    writes) at its point `at`."""
    args = ["train", *run, "hydra.run.dir=run"]
    return commands.run(args, cwd, cwd / "run", at, launcher=bool(at))


def finish(commands, cwd: Path, at: int = 0, crashed: int = 0, args: list[str] = RUN) -> None:
    """Resume the run in cwd/run until it completes (started again with `args` where it left
    no checkpoint); the first `crashed` resumes are killed at their point `at`."""
    run = cwd / "run"
    for attempt in range(crashed + 3):
        if completed(run):
            return
        kill = at if attempt < crashed else 0
        if (run / "checkpoint.pt").exists():
            done = commands.run(["train", "resume=run"], cwd, run, kill, launcher=bool(kill))
        else:  # nothing to resume: a run starts again in its dir
            refused = commands.run(["train", "resume=run"], cwd, run)
            assert refused.code == 2 and refused.output.count("\n") == 1, refused.output
            done = train(commands, cwd, kill, args)
        assert not done.left, f"processes left running: {done.left}"
        assert done.code == 0 or (kill and done.killed), done.output
    assert completed(run), f"not completed after {attempt + 1} resumes"


@pytest.fixture(scope="module")
def reference(commands, tmp_path_factory):
    """An uninterrupted run (its dir) and its write points."""
    cwd = tmp_path_factory.mktemp("reference")
    done = train(commands, cwd)
    assert done.code == 0, done.output
    return cwd / "run", done.points


def run_killed_at(commands, reference, cwd: Path, k: int, args: list[str] = RUN) -> str | None:
    """A run of `args` killed at its point `k`, then resumed to its end: what differs."""
    run, points = reference
    cwd.mkdir()
    done = train(commands, cwd, k, args)
    assert done.killed and not done.left, (points[k - 1], done.left, done.output)
    finishing = lambda: finish(commands, cwd, args=args)  # noqa: E731
    return outcome(finishing, cwd / "run", run, f"killed at {points[k - 1]}")


def outcome(finishing, run_dir: Path, reference: Path, what: str) -> str | None:
    """`what` and how it ended, where `finishing` it did not end in `reference`'s record."""
    try:
        finishing()
    except AssertionError as exc:
        return f"{what}: {' '.join(str(exc).splitlines()[-3:])}"
    wrong = differences(run_dir, reference)
    return f"{what}: {', '.join(wrong)} differ" if wrong else None


@pytest.mark.slow
@EXHAUSTIVE
def test_a_run_killed_at_any_write_point_resumes_to_an_uninterrupted_runs_record(
    commands, reference, tmp_path
):
    ks = range(1, len(reference[1]) + 1)
    failed = [run_killed_at(commands, reference, tmp_path / str(k), k) for k in ks]
    assert not any(failed), "\n".join(filter(None, failed))


@pytest.mark.parametrize(
    "pattern, nth",
    [
        (r"^write .*events", 1),  # a TensorBoard record torn before the first checkpoint
        (r"^replace checkpoint.pt.tmp", 2),  # records of epoch 2 past the checkpoint of 1
        (r"^write .*metrics.csv", 3),  # a row torn
        (r"^replace summary.json.tmp", 1),  # every epoch done, the summary not yet written
        ("last", 1),  # all but the end of TensorBoard's file
    ],
)
def test_a_run_killed_at_a_write_point_resumes_to_an_uninterrupted_runs_record(
    commands, reference, tmp_path, pattern, nth
):
    k = point(reference[1], pattern, nth)
    assert run_killed_at(commands, reference, tmp_path / "k", k) is None


@pytest.fixture(scope="module")
def figures_reference(commands, tmp_path_factory):
    """An uninterrupted run that draws its figure (its dir), and its write points."""
    cwd = tmp_path_factory.mktemp("figures")
    done = train(commands, cwd, run=FIGURES)
    assert done.code == 0, done.output
    return cwd / "run", done.points


@pytest.mark.slow
@EXHAUSTIVE
def test_a_run_with_figures_killed_at_any_write_point_resumes_to_the_same_record(
    commands, figures_reference, tmp_path
):
    ks = range(1, len(figures_reference[1]) + 1)
    failed = [run_killed_at(commands, figures_reference, tmp_path / str(k), k, FIGURES) for k in ks]
    assert not any(failed), "\n".join(filter(None, failed))


def test_a_run_with_figures_killed_as_its_drawing_process_writes_resumes_to_the_same_record(
    commands, figures_reference, tmp_path
):
    k = point(figures_reference[1], r"^replace fit.gif.tmp")
    assert run_killed_at(commands, figures_reference, tmp_path / "k", k, FIGURES) is None


@pytest.fixture(scope="module")
def interrupted(commands, reference, tmp_path_factory):
    """A run killed right after its first checkpoint (its dir), and its resume's points."""
    _, points = reference
    first = next(i for i, p in enumerate(points, 1) if p.endswith(" checkpoint.pt"))
    cwd = tmp_path_factory.mktemp("interrupted")
    assert train(commands, cwd, first + 1).killed
    counted = tmp_path_factory.mktemp("resumed")
    shutil.copytree(cwd / "run", counted / "run")
    done = commands.run(["train", "resume=run"], counted, counted / "run")
    assert done.code == 0, done.output
    return cwd / "run", done.points


def resume_killed_at(commands, reference, interrupted, cwd: Path, k: int) -> str | None:
    """A resume killed at its point `k`, twice, then resumed to the end: what differs."""
    run, points = interrupted
    shutil.copytree(run, cwd / "run")
    finishing = lambda: finish(commands, cwd, at=k, crashed=2)  # noqa: E731
    return outcome(finishing, cwd / "run", reference[0], f"killed at {points[k - 1]}")


@pytest.mark.slow
@EXHAUSTIVE
def test_a_resume_killed_at_any_write_point_and_again_ends_as_an_uninterrupted_run(
    commands, reference, interrupted, tmp_path
):
    ks = range(1, len(interrupted[1]) + 1)
    failed = [resume_killed_at(commands, reference, interrupted, tmp_path / str(k), k) for k in ks]
    assert not any(failed), "\n".join(filter(None, failed))


@pytest.mark.parametrize(
    "pattern",
    [
        r"^write .*\.hydra/overrides.yaml",  # Hydra's record of the run, rewritten
        r"^write .*metrics.csv.tmp",  # metrics.csv cut back to the checkpoint: its temp file
        r"^replace metrics.csv.tmp",  # and its rename
        r"^open wb events",  # the resume's own TensorBoard file
        r"^write .*metrics.csv$",  # the first row after the cut, torn
    ],
)
def test_a_resume_killed_at_a_write_point_and_again_ends_as_an_uninterrupted_run(
    commands, reference, interrupted, tmp_path, pattern
):
    k = point(interrupted[1], pattern)
    assert resume_killed_at(commands, reference, interrupted, tmp_path, k) is None


# --- a sweep -------------------------------------------------------------------------------


def sweep(commands, cwd: Path, launcher: str, at: int = 0, kill_launcher: bool = False):
    args = ["train", "-m", *RUN, *SWEEPS[launcher], "hydra.sweep.dir=sweep"]
    return commands.run(args, cwd, cwd / "sweep", at, launcher=kill_launcher)


def finish_sweep(commands, cwd: Path, launcher: str, jobs: int, at: int = 0) -> None:
    """Resume the sweep in cwd/sweep until its `jobs` complete (started again where it left
    no multirun.yaml); with `at`, the first resume is killed at its point `at`."""
    where = cwd / "sweep"
    for attempt in range(4 if at else 3):
        if len(jobs_of(where)) == jobs and all(completed(j) for j in jobs_of(where)):
            return
        kill = at if attempt == 0 else 0
        if (where / "multirun.yaml").exists():
            done = commands.run(["train", "-m", "resume=sweep"], cwd, where, kill, launcher=True)
        else:
            done = sweep(commands, cwd, launcher, kill, kill_launcher=True)
        assert not done.left, f"processes left running: {done.left}"
        assert done.killed if kill else done.code == 0, done.output
    raise AssertionError("not completed after 3 resumes")


@pytest.fixture(scope="module", params=list(SWEEPS))
def sweep_reference(request, commands, tmp_path_factory):
    launcher = request.param
    cwd = tmp_path_factory.mktemp(f"sweep-{launcher}")
    done = sweep(commands, cwd, launcher)
    assert done.code == 0, done.output
    return launcher, jobs_of(cwd / "sweep"), done.points


def sweep_killed_at(
    commands, sweep_reference, cwd: Path, k: int, kill_launcher: bool = False, resume_at: int = 0
) -> list[str]:
    """A sweep killed at its point `k` (the process writing, or with `kill_launcher` the
    command's own), then resumed to its end (the first resume killed at its point
    `resume_at`): what differs, job by job."""
    launcher, reference_jobs, points = sweep_reference
    cwd.mkdir()
    done = sweep(commands, cwd, launcher, k, kill_launcher)
    what = f"{'launcher ' if kill_launcher else ''}killed at {points[k - 1]}"
    assert not done.left, f"{what}: processes left running: {done.left}"
    try:
        finish_sweep(commands, cwd, launcher, len(reference_jobs), resume_at)
    except AssertionError as exc:
        return [f"{what}: {' '.join(str(exc).splitlines()[-3:])}"]
    jobs = zip(jobs_of(cwd / "sweep"), reference_jobs, strict=True)
    return [
        f"{what}: {job.name}: {', '.join(w)}" for job, want in jobs if (w := differences(job, want))
    ]


@pytest.mark.slow
@EXHAUSTIVE
def test_a_sweep_killed_at_any_write_point_resumes_to_an_uninterrupted_sweeps_record(
    commands, sweep_reference, tmp_path
):
    ks = range(1, len(sweep_reference[2]) + 1)
    failed = [
        f for k in ks for f in sweep_killed_at(commands, sweep_reference, tmp_path / str(k), k)
    ]
    assert not failed, "\n".join(failed)


@pytest.mark.slow
@EXHAUSTIVE
def test_a_stacked_sweeps_launcher_killed_at_any_write_point_resumes_to_the_same_record(
    commands, sweep_reference, tmp_path
):
    if sweep_reference[0] != "stacked":
        pytest.skip("the basic launcher writes in its own process: killed where it writes")
    ks = range(1, len(sweep_reference[2]) + 1)
    failed = [
        f
        for k in ks
        for f in sweep_killed_at(commands, sweep_reference, tmp_path / str(k), k, True)
    ]
    assert not failed, "\n".join(failed)


def test_a_sweep_killed_and_its_resume_killed_too_resume_to_an_uninterrupted_sweeps_record(
    commands, sweep_reference, tmp_path
):
    # The command killed as a job's first checkpoint is renamed into place: in the stacked
    # launcher, a worker's (its workers must end with it); then its resume, past its set-up,
    # where its jobs train.
    k = point(sweep_reference[2], r"^replace .*checkpoint.pt.tmp", 2)
    killed = sweep_killed_at(commands, sweep_reference, tmp_path / "k", k, True, resume_at=40)
    assert killed == []


# --- a full disk ---------------------------------------------------------------------------


def resume_on_full_disk(commands, reference, interrupted, cwd: Path, k: int) -> str | None:
    """A resume on a disk full from its point `k` on: it must fail in one line and leave
    metrics.csv whole; once space is freed, the next resume must end the run as an
    uninterrupted one. What went otherwise, if anything."""
    run, points = interrupted
    shutil.copytree(run, cwd / "run")
    before = (cwd / "run/metrics.csv").read_bytes()
    done = commands.run(["train", "resume=run"], cwd, cwd / "run", full=k)
    what = f"full from {points[k - 1]}"
    if not (cwd / "run/metrics.csv").read_bytes().startswith(before):
        return f"{what}: metrics.csv cut"
    if done.code == 0 or "Traceback" in done.output:
        return f"{what}: exit {done.code}: {done.output[-500:]}"
    return outcome(lambda: finish(commands, cwd), cwd / "run", reference[0], what)


def writes(points: list[str]) -> list[int]:
    return [k for k, p in enumerate(points, 1) if p.split()[2] in ("write", "fsync")]


@pytest.mark.slow
@EXHAUSTIVE
def test_a_resume_on_a_disk_full_from_any_write_on_cuts_nothing_and_the_next_completes(
    commands, reference, interrupted, tmp_path
):
    failed = [
        resume_on_full_disk(commands, reference, interrupted, tmp_path / str(k), k)
        for k in writes(interrupted[1])
    ]
    assert not any(failed), "\n".join(filter(None, failed))


@pytest.mark.parametrize(
    "pattern, nth",
    [
        (r"^write .*metrics.csv.tmp", 1),  # metrics.csv cut back to the checkpoint: its temp file
        (r"^write .*metrics.csv$", 1),  # the rows after the cut
        (r"^write .*checkpoint.pt.tmp", 1),  # the resume's first checkpoint
        (r"^write .*train.log", 2),  # its log: a line lost is said in one line, not a traceback
    ],
)
def test_a_resume_on_a_full_disk_cuts_nothing_and_the_next_completes(
    commands, reference, interrupted, tmp_path, pattern, nth
):
    k = point(interrupted[1], pattern, nth)
    assert resume_on_full_disk(commands, reference, interrupted, tmp_path, k) is None


# --- TensorBoard's order of a run's files --------------------------------------------------


def test_resumes_started_in_the_same_second_keep_their_order_in_tensorboard(tmp_path, compose):
    """TensorBoard reads a run's event files in the order of their names, which start with
    the second each was made: those of resumes from epochs 3 and 10 made in the same second
    must sort as their epochs do, or the earlier one's restart hides the later one's epochs."""
    import time
    from unittest import mock

    from regexp.run import population

    quiet = ["model.hidden=[4]", "log.figure_every=0", "log.hist_every=0"]
    population.execute(compose(*quiet, "train.epochs=12"), tmp_path / "reference")
    run = tmp_path / "run"
    with mock.patch.object(time, "time", return_value=1_800_000_000.0):
        for epochs, resumed in ((3, []), (10, [f"resume={run}"]), (12, [f"resume={run}"])):
            population.execute(compose(*quiet, f"train.epochs={epochs}", *resumed), run)
    assert len(list(run.glob("events.out.tfevents.1800000000.*"))) == 3
    got, want = read_events(run), read_events(tmp_path / "reference")
    for tag in ("loss/train", "loss/valid"):
        assert [(e.step, e.value) for e in got.Scalars(tag)] == [
            (e.step, e.value) for e in want.Scalars(tag)
        ]


def test_a_stacked_worker_that_dies_each_time_it_builds_its_population_ends_it_interrupted(
    commands, sweep_reference, tmp_path
):
    """Its population ends interrupted, as one whose worker dies while it trains, rather
    than being handed to a new worker again and again; the rest of the sweep completes, and
    `-m resume=` then completes it to an uninterrupted sweep's record."""
    launcher, reference_jobs, _ = sweep_reference
    if launcher != "stacked":
        pytest.skip("the stacked launcher's workers")
    args = ["train", "-m", *RUN, *SWEEPS[launcher], "hydra.sweep.dir=sweep"]
    dies = r"hidden=\[4\]/model\.txt"  # (written as the population is set up)
    done = commands.run(args, tmp_path, tmp_path / "sweep", dies=dies)
    assert done.code == 1 and not done.left, done.output
    assert "Traceback" not in done.output and "BrokenProcessPool" not in done.output
    statuses = {j.name: json.loads((j / "summary.json").read_text())["status"]
                for j in jobs_of(tmp_path / "sweep")}  # fmt: skip
    assert statuses == {"hidden=[4]": "interrupted", "hidden=[8]": "completed"}, done.output
    finish_sweep(commands, tmp_path, launcher, len(reference_jobs))
    for job, want in zip(jobs_of(tmp_path / "sweep"), reference_jobs, strict=True):
        assert not differences(job, want), job.name
