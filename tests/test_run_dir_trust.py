"""What regexp reads back from a run or sweep dir is trusted only as far as it proves itself:
a refused resume changes no file of the run, a checkpoint must belong to its run, nothing read
back from a dir instantiates code, and damaged records are refused in one line."""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import jobs_of, read_json, regexp

RUN = ["train.epochs=3", "model.hidden=[8]", "log.figure_every=0"]


def files(run: Path) -> dict[str, str]:
    """Every file under `run`, by its path, with a hash of its bytes."""
    return {
        str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Finished runs to copy from: `seed0`, `seed1` (the same net), `wider` (another net),
    `stopping` (with a schedule and early stopping, whose best weights are in best.pt)."""
    where = tmp_path_factory.mktemp("runs")
    stopping = ["sched=step", "train.early_stop.patience=5"]
    made = [("seed0", []), ("seed1", ["seed=1"]), ("wider", ["model.hidden=[5]"])]
    for name, extra in [*made, ("stopping", stopping)]:
        regexp("train", *RUN, *extra, f"hydra.run.dir={name}", cwd=where)
    return where


def edit_checkpoint(change):
    def damage(run: Path) -> None:
        state = torch.load(run / "checkpoint.pt", weights_only=True)
        change(state)
        torch.save(state, run / "checkpoint.pt")

    return damage


def edit_metrics(line: int, change):
    def damage(run: Path) -> None:
        lines = (run / "metrics.csv").read_text().splitlines()
        lines[line - 1] = change(lines[line - 1])
        (run / "metrics.csv").write_text("\n".join(lines) + "\n")

    return damage


def copy_checkpoint(other: str):
    def damage(run: Path) -> None:
        shutil.copy(run.parent / other / "checkpoint.pt", run / "checkpoint.pt")

    return damage


def optimizer_rows(shape):
    def change(state):
        rows = state["optimizer"]["state"]
        for name in rows:
            rows[name] = torch.zeros(shape)

    return change


# (what is done to a copy of seed0's finished run, what the one line says)
REFUSED = {
    "another net's checkpoint": (
        copy_checkpoint("wider"),
        "checkpoint.pt: refused, a checkpoint of another run (model.hidden=[5] there, [8] in",
    ),
    "another seed's checkpoint": (
        copy_checkpoint("seed1"),
        "checkpoint.pt: refused, a checkpoint of another run (seed=1 there, 0 in this run's",
    ),
    "weights that are strings": (
        edit_checkpoint(lambda s: s.update(model={k: "x" for k in s["model"]})),
        "checkpoint.pt: refused, not a checkpoint of this run: its model is not what regexp",
    ),
    "weights of the wrong shape": (
        edit_checkpoint(lambda s: s["model"].update({k: v[:1] for k, v in s["model"].items()})),
        "checkpoint.pt: refused, its weights do not fit this run's model: 0.bias of (1,) "
        "torch.float32, not (8,) torch.float32",
    ),
    "optimizer state that broadcasts": (
        edit_checkpoint(optimizer_rows(1)),
        "refused, not a checkpoint of this run (an optimizer state momentum_buffer of (1,)",
    ),
    "optimizer state too long": (
        edit_checkpoint(optimizer_rows(1000)),
        "does not fit one of (25,) torch.float32",
    ),
    "an optimizer step that is text": (
        edit_checkpoint(lambda s: s["optimizer"].update(step="3")),
        "checkpoint.pt: refused, not a checkpoint of this run: its optimizer is not what",
    ),
    "no record of its run": (
        edit_checkpoint(lambda s: s.update(format=3)),
        "checkpoint.pt: refused, written by an earlier regexp that did not record which run it "
        "belongs to; train the run again",
    ),
    "an epoch past the record": (
        edit_checkpoint(lambda s: s.update(epoch=5)),
        "checkpoint.pt: refused, it is of epoch 5 and",
    ),
    "a corrupt summary.json": (
        lambda run: (run / "summary.json").write_text("{not json"),
        "summary.json: refused, not a summary regexp wrote (Expecting property name",
    ),
    "a summary.json that is a list": (
        lambda run: (run / "summary.json").write_text("[1, 2]"),
        "summary.json: refused, not a summary regexp wrote",
    ),
    "a metrics.csv row with an empty epoch": (
        edit_metrics(3, lambda line: "," + line.split(",", 1)[1]),
        "metrics.csv line 3: refused, its epoch '' does not follow 1",
    ),
    "a metrics.csv row with a cell too many": (
        edit_metrics(3, lambda line: line + ",1.0"),
        "metrics.csv line 3: refused, 8 cells; its header has 7",
    ),
    "a metrics.csv row with a cell too few": (
        edit_metrics(2, lambda line: line.rsplit(",", 1)[0]),
        "metrics.csv line 2: refused, 6 cells; its header has 7",
    ),
    "a metrics.csv cell that is text": (
        edit_metrics(2, lambda line: "1,abc," + line.split(",", 2)[2]),
        "metrics.csv line 2: refused, its train_loss 'abc' is not a number",
    ),
    "a metrics.csv header of another file": (
        edit_metrics(1, lambda line: "step" + line[len("epoch") :]),
        "metrics.csv: refused, its header starts with 'step', not epoch",
    ),
    "a metrics.csv of binary garbage": (
        lambda run: (run / "metrics.csv").write_bytes(b"epoch,a\n\xff\xfe\x00\x01"),
        "metrics.csv: refused, not a record regexp wrote",
    ),
}


def edit_best(change):
    def damage(run: Path) -> None:
        best = torch.load(run / "best.pt", weights_only=True)
        torch.save(change(best), run / "best.pt")

    return damage


# (the same, to a copy of the run with a schedule and early stopping)
REFUSED_STOPPING = {
    "a schedule's state that is text": (
        edit_checkpoint(lambda s: s["scheduler"].update(lr="fast")),
        "checkpoint.pt: refused, not a checkpoint of this run: its scheduler is not what",
    ),
    "an early stop's state that is text": (
        edit_checkpoint(lambda s: s["early_stop"].update(wait="3")),
        "checkpoint.pt: refused, not a checkpoint of this run: its early_stop is not what",
    ),
    "a learning rate that is nan": (
        edit_checkpoint(lambda s: s["optimizer"].update(lr=float("nan"))),
        "checkpoint.pt: refused, not a checkpoint of this run: its optimizer is not what",
    ),
    "weights of another dtype": (
        edit_checkpoint(lambda s: s.update(model={k: v.double() for k, v in s["model"].items()})),
        "checkpoint.pt: refused, its weights do not fit this run's model: 0.bias of (8,) "
        "torch.float64, not (8,) torch.float32",
    ),
    "a random stream cut short": (
        edit_checkpoint(lambda s: s["rng"].update(dropout=s["rng"]["dropout"][:10])),
        "checkpoint.pt: refused, not a checkpoint of this run (Expected a CPUGeneratorImplState",
    ),
    "best weights that are strings": (
        edit_best(lambda best: {**best, "model": {k: "x" for k in best["model"]}}),
        "best.pt: refused, its weights do not fit this run's model",
    ),
    "best weights of the wrong shape": (
        edit_best(lambda best: {**best, "model": {k: v[:1] for k, v in best["model"].items()}}),
        "best.pt: refused, its weights do not fit this run's model: 0.bias of (1,)",
    ),
    "best weights that are a list": (
        edit_best(lambda best: [1, 2]),
        "best.pt: refused, not this run's best weights",
    ),
    "best weights that are garbage": (
        lambda run: (run / "best.pt").write_bytes(b"garbage"),
        "best.pt: refused, not this run's best weights",
    ),
}


@pytest.mark.slow  # (29 cases, each a resume checked end to end)
@pytest.mark.parametrize(
    "base,case", [("seed0", c) for c in REFUSED] + [("stopping", c) for c in REFUSED_STOPPING]
)
def test_a_refused_resume_changes_no_file_of_the_run(runs, tmp_path, base, case):
    damage, message = {**REFUSED, **REFUSED_STOPPING}[case]
    run = tmp_path / "run"
    shutil.copytree(runs / base, run)
    for other in ("seed1", "wider"):
        (tmp_path / other).symlink_to(runs / other)
    damage(run)
    before = files(run)
    refused = regexp("train", "resume=run", "train.epochs=6", cwd=tmp_path, check=False)
    assert refused.returncode == 2, refused.stderr
    assert message in refused.stderr and refused.stderr.count("\n") == 1, refused.stderr
    assert files(run) == before


def test_rows_a_kill_left_past_the_checkpoint_are_trained_again(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs / "seed0", run)
    with open(run / "metrics.csv", "a") as f:
        f.write("4,9,9\n5,9")  # a row of another shape and one cut short, past the checkpoint
    regexp("train", "resume=run", "train.epochs=5", cwd=tmp_path)
    rows = (run / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["epoch", "1", "2", "3", "4", "5"]
    assert ",9," not in "".join(rows[4:])


def test_the_run_resumes_with_its_own_checkpoint(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs / "seed0", run)
    regexp("train", "resume=run", "train.epochs=4", cwd=tmp_path)
    assert read_json(run / "summary.json")["epochs"] == 4


@pytest.mark.parametrize(
    "overrides",
    [
        ["optim.lr=-1"],  # refused by the config's checks
        ["optim.lr=-1", "hydra.job.chdir=true"],  # (from inside the dir it removes)
        ["data=digits", "data.n_train=2000"],  # refused once the data is loaded
        ["norm=bn", "data.n_train=1"],  # refused once the model is built
    ],
)
def test_a_new_run_that_is_refused_leaves_no_dir(tmp_path, overrides):
    refused = regexp("train", *overrides, "train.epochs=1", cwd=tmp_path, check=False)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_refused_run_in_a_dir_the_user_named_keeps_its_summary(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    regexp("train", "optim.lr=-1", "hydra.run.dir=mine", cwd=tmp_path, check=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    assert read_json(tmp_path / "mine" / "summary.json")["status"] == "failed"


# --- nothing read back from a dir instantiates code -----------------------------------------

SPY = """
from pathlib import Path
from hydra.experimental.callback import Callback

Path("RAN").touch()  # (on import: a callback named in a dir would run this)


class Spy(Callback):
    pass
"""


def with_spy(tmp_path: Path) -> dict:
    """An importable module `spy` in `tmp_path` whose import leaves a file RAN there; the
    environment of a process that can import it."""
    (tmp_path / "spy.py").write_text(SPY)
    return {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}


CODE = [
    "+hydra.callbacks.spy._target_=spy.Spy",
    "+model._target_=spy.Spy",
    "hydra.searchpath=[file://.]",
    "hydra.job_logging.root.handlers=[spy]",
    "+hydra.job.env_set.PYTHONSTARTUP=spy.py",
    "hydra/launcher=../../spy",
    "+experiment=../../../../../spy",  # (a config file anywhere, which may name callbacks)
    "+hydra.launcher.setup=[touch RAN]",
]


@pytest.mark.parametrize("override", CODE)
def test_a_run_whose_overrides_name_code_is_not_resumed(runs, tmp_path, override):
    run = tmp_path / "run"
    shutil.copytree(runs / "seed0", run)
    with open(run / ".hydra" / "overrides.yaml", "a") as f:
        f.write(f"- {override}\n")
    before = files(run)
    key = override.lstrip("+").split("=")[0]
    refused = regexp("train", "resume=run", "train.epochs=4", cwd=tmp_path, check=False)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert f"overrides.yaml: refused, {key} is not read back from a dir" in refused.stderr
    assert files(run) == before


def test_a_callback_given_now_runs_and_is_not_read_back_by_a_resume(tmp_path):
    env = with_spy(tmp_path)
    callback = "+hydra.callbacks.spy._target_=spy.Spy"
    regexp("train", *RUN, callback, "hydra.run.dir=run", cwd=tmp_path, env=env)
    assert (tmp_path / "RAN").exists()  # the user's own callback, on the command line
    (tmp_path / "RAN").unlink()
    with open(tmp_path / "run" / ".hydra" / "overrides.yaml", "a") as f:
        f.write(f"- {callback}\n")  # as a run dir from someone else would have it
    refused = regexp("train", "resume=run", "train.epochs=4", cwd=tmp_path, env=env, check=False)
    assert refused.returncode == 2 and "refused, hydra.callbacks.spy._target_" in refused.stderr
    assert not (tmp_path / "RAN").exists()


def test_a_sweep_whose_multirun_yaml_names_code_is_not_resumed(tmp_path):
    env = with_spy(tmp_path)
    regexp("train", "-m", *RUN, "seed=0,1", "hydra.sweep.dir=sweep", cwd=tmp_path, check=True)
    record = tmp_path / "sweep" / "multirun.yaml"
    saved = yaml.safe_load(record.read_text())
    for override in CODE:
        part = "hydra" if override.lstrip("+").startswith("hydra") else "task"
        changed = copy.deepcopy(saved)
        changed["hydra"]["overrides"][part].append(override)
        record.write_text(yaml.safe_dump(changed))
        before = files(tmp_path / "sweep")
        refused = regexp("train", "-m", "resume=sweep", cwd=tmp_path, check=False)
        key = override.lstrip("+").split("=")[0]
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert f"multirun.yaml: refused, {key} is not read back" in refused.stderr
        assert files(tmp_path / "sweep") == before
    # One case as a process of its own, where the callback could import.
    refused = regexp("train", "-m", "resume=sweep", cwd=tmp_path, env=env, check=False)
    assert refused.returncode == 2 and not (tmp_path / "RAN").exists()


def test_a_sweep_over_a_group_and_a_launcher_goes_on(tmp_path):
    launcher = ["hydra/launcher=stacked", "hydra.launcher.n_jobs=1"]
    regexp("train", "-m", *RUN, "norm=none,ln", *launcher, "hydra.sweep.dir=sweep", cwd=tmp_path)
    regexp("train", "-m", "resume=sweep", "train.epochs=4", cwd=tmp_path)
    assert [read_json(j / "summary.json")["epochs"] for j in jobs_of(tmp_path / "sweep")] == [4, 4]


@pytest.mark.parametrize(
    "override,message",
    [
        ("hydra.launcher._target_=os.system", "Invalid plugin 'os.system'"),
        ("hydra.launcher._target_=hydra_plugins.no.Such", "Unknown plugin class"),
        ("hydra.sweeper._target_=builtins.print", "Invalid plugin 'builtins.print'"),
    ],
)
def test_a_launcher_that_is_not_a_launcher_is_refused_in_one_line(tmp_path, override, message):
    refused = regexp("train", "-m", *RUN, "seed=0,1", override, cwd=tmp_path, check=False)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert message in refused.stderr and "must be the class of a Hydra plugin" in refused.stderr


# --- a record of another shape is named, not guessed at --------------------------------------


@pytest.mark.parametrize(
    "text,message",
    [
        ("seed: 0\n", "the file is a mapping; Hydra records the overrides that made a run as a"),
        ("- seed=0\n- {a: 1}\n", "the file lists \"{'a': 1}\", not a KEY=VALUE string"),
        ("- [unclosed\n", "not YAML Hydra wrote"),
        ("\udcff\udcfe", "not YAML Hydra wrote"),
    ],
)
def test_an_overrides_yaml_of_another_shape_is_named(runs, tmp_path, text, message):
    run = tmp_path / "run"
    shutil.copytree(runs / "seed0", run)
    (run / ".hydra" / "overrides.yaml").write_bytes(text.encode(errors="surrogateescape"))
    refused = regexp("train", "resume=run", "train.epochs=4", cwd=tmp_path, check=False)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert f"run/.hydra/overrides.yaml: refused, {message}" in refused.stderr


@pytest.mark.parametrize(
    "text,message",
    [
        ("- seed=0\n", "hydra.overrides.task is missing"),
        ("hydra: {overrides: {task: seed=0, hydra: []}}\n", "hydra.overrides.task is a string"),
        ("hydra: {overrides: {task: {seed: 0}, hydra: []}}\n", "hydra.overrides.task is a mapping"),
        ("hydra: {overrides: {task: [], hydra: 3}}\n", "hydra.overrides.hydra is int"),
        ("hydra: [\n", "not YAML Hydra wrote"),
    ],
)
def test_a_multirun_yaml_of_another_shape_is_named(tmp_path, text, message):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "multirun.yaml").write_text(text)
    refused = regexp("train", "-m", "resume=sweep", cwd=tmp_path, check=False)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert f"sweep/multirun.yaml: refused, {message}" in refused.stderr


@pytest.mark.parametrize("values", ["range(0)", "range(5,2)", "range(0,10,-1)"])
def test_a_sweep_over_no_values_is_refused_before_its_dir_is_made(tmp_path, values):
    refused = regexp("train", "-m", *RUN, f"seed={values}", cwd=tmp_path, check=False)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert f"seed={values}: a sweep over no values, which would run no job" in refused.stderr
    assert list(tmp_path.iterdir()) == []


# --- a second signal stops at once, keeping the last completed epoch --------------------------


def started_run(tmp_path: Path, args: list[str]) -> subprocess.Popen:
    """`regexp train ARGS` into tmp_path/run, as a process of its own (its stderr piped)."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    command = [sys.executable, "-m", "regexp", "train", *args, "hydra.run.dir=run"]
    return subprocess.Popen(command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_stops_at_once_keeping_the_last_completed_epoch(tmp_path, signum):
    # Epochs of a good part of a second, checkpoints every 1000: none but the one kept.
    args = ["data=digits", "model=cnn", "model.channels=[64,64]", "train.batch_size=16"]
    args += ["train.epochs=200", "train.checkpoint_every=1000", "log.figure_every=0"]
    run = tmp_path / "run"
    process = started_run(tmp_path, args)
    metrics = run / "metrics.csv"
    while not metrics.exists() or len(metrics.read_text().splitlines()) < 3:
        time.sleep(0.05)
    process.send_signal(signum)
    time.sleep(0.05)
    asked = time.monotonic()
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signum, err
    assert time.monotonic() - asked < 3  # (not after the epoch in progress, nor the figures)
    summary = read_json(run / "summary.json")
    rows = (run / "metrics.csv").read_text().splitlines()
    kept = torch.load(run / "checkpoint.pt", weights_only=True)["epoch"]
    assert summary["status"] == "interrupted" and summary["epochs"] == kept
    assert int(rows[-1].split(",")[0]) == kept
    regexp("train", "resume=run", f"train.epochs={kept + 1}", cwd=tmp_path)
    assert read_json(run / "summary.json")["epochs"] == kept + 1


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_stops_at_once_inside_one_long_operation(tmp_path, signum):
    """A full batch through 6144-wide layers: each product some seconds on one thread, during
    which no Python handler runs. The record it leaves is whole (no half-written file)."""
    args = ["model.hidden=[6144,6144]", "data.n_train=6144", "train.epochs=3"]
    args += ["log.figure_every=0", "log.hist_every=0"]
    process = started_run(tmp_path, args)
    while not (tmp_path / "run" / "model.txt").exists():
        assert process.poll() is None
        time.sleep(0.05)
    time.sleep(1.5)  # (in the first epoch's products)
    process.send_signal(signum)
    time.sleep(0.2)
    asked = time.monotonic()
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, err
    assert time.monotonic() - asked < 5, err  # (one product alone takes longer)
    assert "stopped now, inside a long operation" in err
    assert not list((tmp_path / "run").rglob("*.tmp*"))


# --- a killed worker costs its population alone ----------------------------------------------


def grandchildren(pid: int) -> list[int]:
    """The children of process `pid`'s children: a stacked launcher's workers (its fork
    server's children)."""

    def children(of: int) -> list[int]:
        try:
            return [int(c) for c in Path(f"/proc/{of}/task/{of}/children").read_text().split()]
        except OSError:
            return []

    return [g for c in children(pid) for g in children(c)]


def stopped_in_training(launcher: int) -> int | None:
    """A worker of the stacked `launcher` caught training, stopped (SIGSTOP) so that it stays
    so: every run dir it holds (its population's lock) has its metrics.csv open, so every
    member's tracker has started and none has ended (a tracker closes metrics.csv before it
    writes the summary). None if no worker is training now; each one looked at goes on.
    (metrics.csv's lines are no sign: they are flushed every few seconds, which for a short
    population means at its end, when a kill finds its summaries written.)"""

    def state(pid: int) -> str:  # R running, S sleeping, T stopped, Z dead...
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]

    for worker in grandchildren(launcher):
        try:
            os.kill(worker, signal.SIGSTOP)
            while state(worker) in "RSD":  # (until the kernel has stopped it)
                pass
            opened = [Path(f.readlink()) for f in Path(f"/proc/{worker}/fd").iterdir()]
        except OSError:  # (gone: a worker the pool ended)
            continue
        held = {f for f in opened if (f / ".hydra").is_dir()}
        tracked = {f.parent for f in opened if f.name == "metrics.csv"}
        if state(worker) == "T" and held and held == tracked:
            return worker
        os.kill(worker, signal.SIGCONT)
    return None


@pytest.mark.slow
def test_a_killed_stacked_worker_ends_its_population_interrupted_and_the_rest_finish(tmp_path):
    args = ["data=digits", "model=cnn", "model.channels=[16,16]", "train.batch_size=32"]
    args += ["train.epochs=12", "log.figure_every=0", "seed=0,1,2,3,4,5"]
    args += ["hydra/launcher=stacked", "hydra.launcher.max_members=2", "hydra.launcher.n_jobs=2"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    command = [sys.executable, "-m", "regexp", "train", "-m", *args, "hydra.sweep.dir=sweep"]
    sweep = tmp_path / "sweep"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, **quiet)
    while (worker := stopped_in_training(process.pid)) is None:
        assert process.poll() is None, "the sweep ended before a worker was seen training"
        time.sleep(0.05)
    os.kill(worker, signal.SIGKILL)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 1 and "Traceback" not in err and "BrokenProcessPool" not in err
    statuses = [read_json(job / "summary.json")["status"] for job in jobs_of(sweep)]
    assert sorted(statuses) == ["completed"] * 4 + ["interrupted"] * 2
    regexp("train", "-m", "resume=sweep", cwd=tmp_path)
    for job in jobs_of(sweep):
        summary = read_json(job / "summary.json")
        assert (summary["status"], summary["epochs"]) == ("completed", 12)
        assert len((job / "metrics.csv").read_text().splitlines()) == 1 + 12


def test_in_a_resumed_sweep_a_job_with_another_runs_checkpoint_fails_alone(tmp_path):
    regexp("train", "-m", *RUN, "seed=0,1", "hydra.sweep.dir=sweep", cwd=tmp_path)
    seed0, seed1 = jobs_of(tmp_path / "sweep")
    shutil.copy(seed1 / "checkpoint.pt", seed0 / "checkpoint.pt")
    done = regexp("train", "-m", "resume=sweep", "train.epochs=5", cwd=tmp_path, check=False)
    said = "checkpoint.pt: refused, a checkpoint of another run (seed=1 there, 0 in this run's"
    assert said in done.stdout + done.stderr
    # Counted as failed, though its summary.json, which the refusal left, says completed.
    assert done.returncode == 1 and "2 jobs: 1 completed, 1 failed" in done.stdout + done.stderr
    assert read_json(seed1 / "summary.json")["epochs"] == 5
    assert read_json(seed0 / "summary.json")["epochs"] == 3
