"""`hydra/launcher=stacked`: a sweep trained as populations, each job's run dir as the basic
launcher writes it."""

from __future__ import annotations

import csv

import pytest
from conftest import gif_epochs, jobs_of, read_events, read_json, regexp

TINY = ["train.epochs=8", "model.hidden=[8]", "log.figure_every=4"]


def job_dirs(sweep):
    return jobs_of(sweep)


def log_lines(run) -> list[str]:
    """The job's train.log, less the times."""
    lines = (run / "train.log").read_text().splitlines()
    return [line.split("] ", 2)[-1] for line in lines]


def rows(run):
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_2x2_sweep_of_p_and_lambda_as_one_population_writes_what_the_basic_launcher_does(
    tmp_path,
):
    sweep = [*TINY, "model.dropout=0,0.5", "optim.weight_decay=0,1e-2"]
    done = regexp(
        "train", "-m", "hydra/launcher=stacked", *sweep, "hydra.sweep.dir=stacked", cwd=tmp_path
    )
    assert "4 jobs in 1 population of 4" in done.stdout + done.stderr
    regexp("train", "-m", "hydra/launcher=basic", *sweep, "hydra.sweep.dir=basic", cwd=tmp_path)
    stacked, basic = job_dirs(tmp_path / "stacked"), job_dirs(tmp_path / "basic")
    assert [r.name for r in stacked] == [r.name for r in basic]
    assert stacked[3].name == "dropout=0.5,weight_decay=0.01"
    for a, b in zip(stacked, basic, strict=True):
        files = lambda run: sorted(  # noqa: E731
            p.name if not p.name.startswith("events") else "events" for p in run.iterdir()
        )
        assert files(a) == files(b)
        assert (a / ".hydra" / "overrides.yaml").read_text() == (
            b / ".hydra" / "overrides.yaml"
        ).read_text()
        assert (a / "model.txt").read_text() == (b / "model.txt").read_text()
        for name in ("metrics.csv", "predictions.npz"):  # byte for byte
            assert (a / name).read_bytes() == (b / name).read_bytes(), a / name
        assert log_lines(a) == log_lines(b) and "epoch 8/8" in log_lines(a)[-1]  # its own
        summary = read_json(a / "summary.json")
        assert summary["status"] == "completed" and summary["epochs"] == 8
        events = read_events(a)
        assert len(events.Scalars("loss/valid")) == 8
        assert events.Images("figures/fit")  # the figure of each job
    # The sweep reads in a report as any sweep does.
    report = regexp("report", "stacked", cwd=tmp_path)
    assert "4 runs" in report.stdout


@pytest.mark.slow
def test_figures_of_populations_in_worker_processes_reach_each_members_files(tmp_path):
    # Two populations of two, one per worker process: each worker starts its own drawing
    # process, and each member's frames come back into its own event file and GIF.
    done = regexp(
        "train", "-m", *TINY, "seed=0,1,2,3", "hydra.launcher.max_members=2",
        "hydra.launcher.n_jobs=2", "hydra.sweep.dir=sweep", cwd=tmp_path,
    )  # fmt: skip
    assert "4 jobs in 2 populations of 2, 2 worker processes" in done.stdout + done.stderr
    assert "not drawn" not in done.stdout + done.stderr
    gifs = set()
    for run in job_dirs(tmp_path / "sweep"):
        assert [i.step for i in read_events(run).Images("figures/fit")] == [0, 4, 8]
        assert gif_epochs(run / "fit.gif") == (3, [0, 4, 8])
        assert (run / "fit.png").exists()
        gifs.add((run / "fit.gif").read_bytes())
    assert len(gifs) == 4  # each its own member's curves


@pytest.mark.slow
def test_two_architectures_become_two_populations(tmp_path):
    done = regexp(
        "train",
        "-m",
        "hydra/launcher=stacked",
        "train.epochs=5",
        "log.figure_every=0",
        "model.hidden=[8],[8,8]",
        "seed=0,1,2",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )
    assert "6 jobs in 2 populations of 3" in done.stdout + done.stderr
    runs = job_dirs(tmp_path / "sweep")
    assert len(runs) == 6
    assert all(read_json(r / "summary.json")["status"] == "completed" for r in runs)


@pytest.mark.slow
def test_max_members_splits_a_population(tmp_path):
    done = regexp(
        "train",
        "-m",
        "hydra/launcher=stacked",
        "hydra.launcher.max_members=2",
        "train.epochs=3",
        "log.figure_every=0",
        "seed=0,1,2,3,4",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
    )
    assert "5 jobs in 3 populations of 1 to 2" in done.stdout + done.stderr


@pytest.mark.slow
def test_a_bad_value_in_one_job_is_refused_for_it_alone(tmp_path):
    done = regexp(
        "train",
        "-m",
        "hydra/launcher=stacked",
        "train.epochs=5",
        "log.figure_every=0",
        "optim.lr=0.01,-1,0.02",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    summaries = {
        next(p for p in r.name.split(",") if p.startswith("lr=")): read_json(r / "summary.json")
        for r in job_dirs(tmp_path / "sweep")
    }
    assert summaries["lr=-1"]["status"] == "failed"
    assert "optim.lr=-1.0 is not allowed" in summaries["lr=-1"]["error"]
    assert summaries["lr=0.01"]["status"] == summaries["lr=0.02"]["status"] == "completed"
    assert "2 jobs in 1 population of 2" in done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "where",
    [
        ["hydra.launcher.n_jobs=1"],  # one population of two, in the launcher's process
        ["hydra.launcher.max_members=1", "hydra.launcher.n_jobs=2"],  # two worker processes
    ],
    ids=["in-process", "workers"],
)
def test_sigint_mid_population_checkpoints_every_member_and_each_resumes_alone(tmp_path, where):
    import signal
    import subprocess
    import sys
    import time

    long = ["data=digits", "train.batch_size=128", "model.hidden=[16]", "train.epochs=300"]
    long += ["train.checkpoint_every=7", "log.figure_every=0", "log.hist_every=0"]
    process = subprocess.Popen(
        [sys.executable, "-m", "regexp", "train", "-m", "hydra/launcher=stacked", *long]
        + ["model.dropout=0,0.2", "hydra.sweep.dir=sweep", *where],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline:  # training is under way once both record epochs
        csvs = list((tmp_path / "sweep").glob("*/metrics.csv"))
        if len(csvs) == 2 and all(len(p.read_text().splitlines()) > 20 for p in csvs):
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    members = job_dirs(tmp_path / "sweep")
    for member in members:
        summary = read_json(member / "summary.json")
        assert summary["status"] == "interrupted" and summary["epochs"] < 300
    member = next(m for m in members if "dropout=0.2" in m.name)
    regexp("train", f"resume={member}", cwd=tmp_path)
    regexp("train", *long, "model.dropout=0.2", "hydra.run.dir=reference", cwd=tmp_path)
    for name in ("metrics.csv", "predictions.npz"):  # byte for byte
        assert (member / name).read_bytes() == (tmp_path / "reference" / name).read_bytes()
    assert read_json(member / "summary.json")["status"] == "completed"


def test_the_launcher_plans_a_population_per_worker_while_each_keeps_a_few_members():
    from regexp.sweep.stacked import plan

    sizes = lambda groups, most, workers: [len(p) for p in plan(groups, most, workers)]  # noqa: E731
    assert sizes([list(range(8))], 64, 2) == [4, 4]
    assert sizes([list(range(64))], 64, 2) == [32, 32]
    assert sizes([list(range(64))], 16, 2) == [16, 16, 16, 16]
    assert sizes([list(range(7))], 64, 2) == [7]  # halves of 3 would stack too little
    assert sizes([list(range(5))], 2, 2) == [2, 2, 1]
    assert sizes([[0, 1, 2], [3, 4, 5]], 64, 2) == [3, 3]
    assert sizes([list(range(12))], 64, 1) == [12]
    # 14 populations, 7 a worker, not 13 (the last trained alone) nor 12 of 8 and one of 4
    assert sizes([list(range(100))], 8, 2) == [8] * 2 + [7] * 12
    assert sizes([list(range(24))], 8, 4) == [6, 6, 6, 6]  # (not 8, 8, 4, 4)
    assert sizes([list(range(24)), list(range(24, 30))], 8, 2) == [8, 8, 8, 6]
    assert sorted(sum(plan([list(range(9)), [9]], 64, 4), [])) == list(range(10))


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ["seed=3"],
        ["seed=1", "model=cnn", "data=digits", "optim.lr=0.1"],
        ["+experiment=dropout", "model.dropout=0.5", "seed=2"],
        ["optim=adam", "optim.betas=[0.8,0.9]", "+extra=1"],
        ["model={hidden: [3]}", "train.epochs=5"],
        ["hydra.job.name=other", "seed=4"],
    ],
)
def test_a_job_composed_once_per_choice_of_groups_equals_hydras_composition(overrides):
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from regexp import config
    from regexp.sweep.stacked import ComposeOnce

    with initialize_config_dir(version_base="1.3", config_dir=str(config.conf_dir())):
        hydra = GlobalHydra.instance().config_loader()
        master = hydra.load_configuration("train", ["seed=0,1"], run_mode=RunMode.MULTIRUN)
        once = ComposeOnce(hydra)
        once.load_sweep_config(master, ["seed=7"])  # an earlier job, which it must not leak
        for _ in range(2):  # composed, then from the cache
            ours = once.load_sweep_config(master, overrides)
            theirs = hydra.load_sweep_config(master, overrides)
            assert OmegaConf.to_container(ours) == OmegaConf.to_container(theirs)
            assert OmegaConf.is_struct(ours) and not OmegaConf.is_readonly(ours.hydra)


@pytest.mark.slow
def test_a_value_hydra_refuses_is_refused_as_hydra_refuses_it():
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException
    from hydra.types import RunMode

    from regexp import config
    from regexp.sweep.stacked import ComposeOnce

    with initialize_config_dir(version_base="1.3", config_dir=str(config.conf_dir())):
        hydra = GlobalHydra.instance().config_loader()
        master = hydra.load_configuration("train", ["seed=0,1"], run_mode=RunMode.MULTIRUN)
        for bad in (["seed=abc"], ["+seed=1"], ["~nope"]):
            with pytest.raises(ConfigCompositionException) as theirs:
                hydra.load_sweep_config(master, bad)
            with pytest.raises(ConfigCompositionException) as ours:
                ComposeOnce(hydra).load_sweep_config(master, bad)
            assert str(ours.value) == str(theirs.value)


@pytest.mark.slow
@pytest.mark.parametrize("fork", [True, False])
def test_workers_see_the_launchers_dir_and_environment_as_the_sweep_launches(
    tmp_path, monkeypatch, fork
):
    # Workers fork from a server that imported torch once, in the dir and environment of when
    # it started (here, before they changed): they have the launcher's, as spawned ones do
    # (where there is no fork server: Windows).
    import multiprocessing
    import os

    from omegaconf import OmegaConf

    from regexp.sweep import stacked

    if not fork:
        monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    method = stacked.worker_context().get_start_method()
    assert method == ("forkserver" if fork else "spawn")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REGEXP_TEST_SET_LATER", "yes")
    launcher = stacked.StackedLauncher(n_jobs=2)
    launcher.config = OmegaConf.create({"hydra": {"hydra_logging": None}})
    pool = launcher._pool(2)
    try:
        assert pool.submit(os.getcwd).result(timeout=60) == str(tmp_path)
        assert pool.submit(os.getenv, "REGEXP_TEST_SET_LATER").result(timeout=60) == "yes"
    finally:
        pool.shutdown()


def test_the_progress_line_shows_the_lowest_valid_loss_yet_not_the_epochs(caplog):
    """Where the members' valid losses rise again (overfitting), the line keeps the best."""
    import logging

    from regexp.console import PopulationProgress
    from regexp.sweep.stacked import _throttled

    progress = PopulationProgress([(2, 10, 0)])
    report = _throttled(progress, 10, every=3600)  # (reports each tenth: every epoch here)
    with caplog.at_level(logging.INFO, logger="regexp"):
        for epoch, losses in enumerate([[0.5, 0.9], [0.2, float("nan")], [0.4, 0.3]], 1):
            report(epoch, losses, 2)
    said = [r.getMessage() for r in caplog.records]
    assert said[-1].endswith("best valid so far 0.2") and said[0].endswith("so far 0.5")


@pytest.mark.slow
def test_a_jobs_own_threads_are_used_as_the_basic_launcher_uses_them(tmp_path):
    """threads= is the job's, through any launcher: the thread count moves the last digits."""
    regexp("train", "-m", "hydra/launcher=stacked", *TINY, "log.figure_every=0", "threads=2",
           "seed=0,1", "hydra.sweep.dir=stacked", cwd=tmp_path)  # fmt: skip
    regexp("train", *TINY, "log.figure_every=0", "threads=2", "seed=1", "hydra.run.dir=alone",
           cwd=tmp_path)  # fmt: skip
    member = next(d for d in job_dirs(tmp_path / "stacked") if "seed=1" in d.name)
    assert read_json(member / "summary.json")["threads"] == 2
    assert (member / "metrics.csv").read_bytes() == (
        tmp_path / "alone" / "metrics.csv"
    ).read_bytes()


@pytest.mark.slow
def test_workers_end_with_a_launcher_killed_outright_keeping_their_checkpoints(tmp_path):
    """SIGKILL reaches the launcher alone: its workers (children of the fork server) see it
    gone, checkpoint their members after the epoch in progress, and end, with the server."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    def descendants(pid: int) -> set[int]:
        found, todo = set(), [pid]
        while todo:
            for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
                for child in (task / "children").read_text().split():
                    found.add(int(child))
                    todo.append(int(child))
        return found

    launcher = subprocess.Popen(
        [sys.executable, "-m", "regexp", "train", "-m", "seed=range(8)", "train.epochs=5000",
         "log.figure_every=0", "log.hist_every=0", "hydra.launcher.n_jobs=2",
         "hydra.sweep.dir=sweep"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # training is under way in both workers
        csvs = list((tmp_path / "sweep").glob("*/metrics.csv"))
        if len(csvs) == 8 and all(len(p.read_text().splitlines()) > 20 for p in csvs):
            break
        time.sleep(0.2)
    left = descendants(launcher.pid)
    assert len(left) >= 3  # the fork server and its workers, at least
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait()
    deadline = time.monotonic() + 60
    while left and time.monotonic() < deadline:
        left = {
            p
            for p in left
            if Path(f"/proc/{p}").exists()
            and Path(f"/proc/{p}/stat").read_text().split(")")[1].split()[0] != "Z"
        }
        time.sleep(0.2)
    assert not left, f"still running after the launcher was killed: {sorted(left)}"
    for job in job_dirs(tmp_path / "sweep"):
        summary = read_json(job / "summary.json")
        assert summary["status"] == "interrupted" and summary["epochs"] < 5000
        assert (job / "checkpoint.pt").is_file()


@pytest.mark.parametrize(
    "setting,message",
    [
        ("hydra.launcher.max_members=0", "hydra.launcher.max_members=0 is not allowed"),
        ("hydra.launcher.n_jobs=-1", "hydra.launcher.n_jobs=-1 is not allowed"),
        ("hydra.launcher.threads=-1", "hydra.launcher.threads=-1 is not allowed"),
    ],
)
def test_a_launcher_setting_that_cannot_work_is_refused_in_one_line(tmp_path, setting, message):
    # (0 members made 0 populations and every job "never trained"; -1 threads reached torch)
    done = regexp(
        "train", "-m", "seed=0,1", *TINY, setting, "hydra.sweep.dir=sweep", cwd=tmp_path,
        check=False,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "sweep").exists() or not jobs_of(tmp_path / "sweep")
