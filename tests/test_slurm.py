"""`hydra/launcher=stacked_slurm` and `stacked_submitit_local`: a sweep's populations as the
tasks of submitit job arrays. The `slurm` tests run real sweeps through a real Slurm
(scripts/slurm_local.sh start) and are skipped where none answers."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import jobs_of, read_json, regexp

TINY = ["train.epochs=8", "model.hidden=[8]", "log.figure_every=0"]
# Long enough to be stopped mid-training (a few seconds), with checkpoints along the way.
LONG = ["train.epochs=3000", "train.checkpoint_every=100", "log.figure_every=0"]
LONG += ["log.hist_every=0"]


@functools.cache
def slurm_answers() -> str | None:
    """Why the Slurm tests cannot run here (None: a Slurm node answers, idle or at work)."""
    if shutil.which("sinfo") is None:
        return "no Slurm here (scripts/slurm_local.sh start runs one on a Debian machine as root)"
    try:
        states = subprocess.run(
            ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10
        ).stdout.split()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"sinfo does not answer ({exc}): scripts/slurm_local.sh start"
    if not {"idle", "mixed", "allocated"} & set(states):
        return f"no Slurm node is up (sinfo: {' '.join(states) or 'nothing'})"
    return None


def slurm_test(test):
    """A test of a real Slurm: marked `slurm` (and slow), skipped, saying why, where none runs."""
    for mark in (
        pytest.mark.skipif(slurm_answers() is not None, reason=str(slurm_answers())),
        pytest.mark.slow,
        pytest.mark.slurm,
    ):
        test = mark(test)
    return test


def named() -> tuple[str, str]:
    """A Slurm job name of this test's own (tests run side by side), and its override."""
    name = f"regexp-{uuid.uuid4().hex[:8]}"
    return name, f"hydra.launcher.name={name}"


def same_record(a: Path, b: Path) -> None:
    for name in ("metrics.csv", "predictions.npz"):  # byte for byte
        assert (a / name).read_bytes() == (b / name).read_bytes(), a / name


def files_of(run: Path) -> list[str]:
    """The names of a run dir's files, its event file's as `events`."""
    return sorted("events" if p.name.startswith("events.") else p.name for p in run.iterdir())


def tasks_of(sweep: Path) -> list[str]:
    """The array tasks submitit ran for a sweep (their logs: JOB_TASK_log.out)."""
    return sorted(p.name.removesuffix("_log.out") for p in sweep.glob(".submitit/*/*_log.out"))


@pytest.mark.slow
def test_stacked_submitit_local_trains_each_population_as_a_task_each_member_as_alone(tmp_path):
    sweep = [*TINY, "seed=0,1,2,3", "hydra.launcher.max_members=2"]
    done = regexp(
        "train", "-m", "hydra/launcher=stacked_submitit_local", *sweep, "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )  # fmt: skip
    said = done.stdout + done.stderr
    assert "4 jobs in 2 populations of 2" in said and "2 populations submitted as local" in said
    assert len(tasks_of(tmp_path / "sweep")) == 2
    members = jobs_of(tmp_path / "sweep")
    assert [m.name for m in members] == ["seed=0", "seed=1", "seed=2", "seed=3"]
    assert all(read_json(m / "summary.json")["status"] == "completed" for m in members)
    regexp("train", *TINY, "seed=3", "hydra.run.dir=alone", cwd=tmp_path)
    same_record(members[3], tmp_path / "alone")
    assert files_of(members[3]) == files_of(tmp_path / "alone")  # TensorBoard's events too
    assert "4 runs" in regexp("report", "sweep", cwd=tmp_path).stdout


@slurm_test
def test_a_sweep_packs_into_fewer_array_tasks_than_jobs_each_member_as_alone(tmp_path):
    name, naming = named()
    sweep = [*TINY, "seed=0,1,2", "model.dropout=0,0.5", "hydra.launcher.max_members=3"]
    done = regexp(
        "train", "-m", "hydra/launcher=stacked_slurm", *sweep, naming, "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )  # fmt: skip
    said = done.stdout + done.stderr
    assert "6 jobs in 2 populations of 3" in said and "2 populations submitted as slurm" in said
    tasks = tasks_of(tmp_path / "sweep")
    assert len(tasks) == 2 and len({t.split("_")[0] for t in tasks}) == 1, tasks  # one array
    members = jobs_of(tmp_path / "sweep")
    assert len(members) == 6
    assert all(read_json(m / "summary.json")["status"] == "completed" for m in members)
    member = tmp_path / "sweep" / "dropout=0.5,seed=2"
    regexp("train", *TINY, "seed=2", "model.dropout=0.5", "hydra.run.dir=alone", cwd=tmp_path)
    same_record(member, tmp_path / "alone")
    assert "6 runs" in regexp("report", "sweep", cwd=tmp_path).stdout


@slurm_test
def test_a_sweep_larger_than_an_array_goes_as_several_arrays(tmp_path, monkeypatch):
    from regexp.sweep import cluster

    monkeypatch.setattr(cluster, "max_array_size", lambda: 2)
    name, naming = named()
    sweep = [*TINY, "seed=0,1,2", "hydra.launcher.max_members=1"]
    regexp(
        "train", "-m", "hydra/launcher=stacked_slurm", *sweep, naming, "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )  # fmt: skip
    tasks = tasks_of(tmp_path / "sweep")
    assert len(tasks) == 3 and len({t.split("_")[0] for t in tasks}) == 2, tasks
    members = jobs_of(tmp_path / "sweep")
    assert all(read_json(m / "summary.json")["status"] == "completed" for m in members)


def launched(tmp_path: Path, *args: str, launcher: str = "stacked_slurm") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "regexp", "train", "-m", f"hydra/launcher={launcher}", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def training(sweep: Path, members: int, name: str = "", epochs: int = 50) -> list[str]:
    """Wait until `members` run dirs of `sweep` have recorded `epochs` epochs; returns the
    Slurm job ids of the tasks named `name` then running."""
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline:
        csvs = list(sweep.glob("*/metrics.csv"))
        if len(csvs) >= members and all(len(p.read_text().splitlines()) > epochs for p in csvs):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"{sweep}: no {members} members in training after 200 s")
    if not name:
        return []
    listed = subprocess.run(
        ["squeue", "-h", "-n", name, "-t", "R", "-o", "%i"], capture_output=True, text=True
    )
    return listed.stdout.split()


@slurm_test
@pytest.mark.parametrize(
    "stop",
    [["scontrol", "requeue"], ["scancel", "--signal=USR2"]],
    ids=["requeued", "preempted"],
)
def test_a_task_stopped_mid_training_goes_on_requeued_to_an_uninterrupted_record(tmp_path, stop):
    name, naming = named()
    sweep = [*LONG, "seed=0,1", naming, "hydra.sweep.dir=sweep"]
    process = launched(tmp_path, *sweep)
    (task,) = training(tmp_path / "sweep", 2, name)
    subprocess.run([*stop, task], check=True)
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out
    logs = "".join(p.read_text() for p in (tmp_path / "sweep").glob(".submitit/*/*_log.*"))
    assert "requeued: 2 of 2 members go on" in logs, logs
    same_as_uninterrupted(tmp_path, [*LONG, "seed=0,1"])


def same_as_uninterrupted(tmp_path: Path, sweep: list[str]) -> None:
    """Each member of tmp_path/sweep completed, its record that of the sweep uninterrupted."""
    regexp("train", "-m", "hydra/launcher=stacked", *sweep, "hydra.sweep.dir=ref",
           "hydra.launcher.n_jobs=1", cwd=tmp_path)  # fmt: skip
    for member in jobs_of(tmp_path / "sweep"):
        assert read_json(member / "summary.json")["status"] == "completed"
        same_record(member, tmp_path / "ref" / member.name)


@pytest.mark.slow
def test_a_local_task_preempted_mid_training_goes_on_requeued_to_an_uninterrupted_record(
    tmp_path,
):
    sweep = [*LONG, "seed=0,1"]
    process = launched(tmp_path, *sweep, "hydra.sweep.dir=sweep", launcher="stacked_submitit_local")
    training(tmp_path / "sweep", 2)
    (controller,) = [p.name for p in (tmp_path / "sweep" / ".submitit").glob("[0-9]*")]
    task = subprocess.run(["pgrep", "-P", controller], capture_output=True, text=True)
    os.kill(int(task.stdout.split()[0]), signal.SIGUSR2)  # (submitit's preemption signal)
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out
    logs = "".join(p.read_text() for p in (tmp_path / "sweep").glob(".submitit/*/*_log.*"))
    assert "requeued: 2 of 2 members go on" in logs, logs
    same_as_uninterrupted(tmp_path, sweep)


@slurm_test
def test_a_failed_task_leaves_its_members_to_a_resume_and_the_sweep_finishes(tmp_path):
    name, naming = named()
    two = ["model.hidden=[8],[9]", "seed=0,1"]  # two populations, so two tasks
    process = launched(tmp_path, *LONG, *two, naming, "hydra.sweep.dir=sweep")
    tasks = training(tmp_path / "sweep", 4, name)  # (one or both running, on a busy node)
    subprocess.run(["scancel", tasks[0]], check=True)
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 1, out  # (a sweep whose jobs did not all complete)
    statuses = {
        m.name: read_json(m / "summary.json")["status"] for m in jobs_of(tmp_path / "sweep")
    }
    assert sorted(statuses.values()) == ["completed"] * 2 + ["interrupted"] * 2, statuses
    assert f"task {tasks[0]} ended (CANCELLED" in out and "without a result" in out
    done = regexp("train", "-m", "resume=sweep", cwd=tmp_path, process=True)
    said = done.stdout + done.stderr
    assert said.count("skipped, completed already") == 2, said
    assert "2 jobs in 1 population of 2" in said and "submitted as slurm" in said
    same_as_uninterrupted(tmp_path, [*LONG, *two])


@pytest.mark.parametrize(
    "setting,message",
    [
        ("hydra.launcher.partition=nope", "invalid partition specified: nope"),
        ("hydra.launcher.cpus_per_task=4096", "Requested node configuration is not available"),
    ],
)
@slurm_test
def test_options_slurm_refuses_are_refused_in_one_line_before_anything_is_written(
    tmp_path, setting, message
):
    done = regexp(
        "train", "-m", "hydra/launcher=stacked_slurm", setting, *TINY, "seed=0,1",
        "hydra.sweep.dir=sweep", cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "Slurm refuses its tasks' options" in done.stderr and message in done.stderr
    assert not (tmp_path / "sweep").exists()


def test_stacked_slurm_without_slurm_is_refused_in_one_line(tmp_path):
    done = regexp(
        "train", "-m", "hydra/launcher=stacked_slurm", *TINY, "seed=0,1", "hydra.sweep.dir=sweep",
        cwd=tmp_path, check=False, env={"PATH": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "no Slurm here" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "sweep").exists()


def test_a_bad_max_members_is_refused_in_one_line_as_the_stacked_launcher_refuses_it(tmp_path):
    done = regexp(
        "train", "-m", "hydra/launcher=stacked_submitit_local", "hydra.launcher.max_members=0",
        *TINY, "seed=0,1", "hydra.sweep.dir=sweep", cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "hydra.launcher.max_members=0 is not allowed" in done.stderr
    assert not (tmp_path / "sweep").exists() or not jobs_of(tmp_path / "sweep")
