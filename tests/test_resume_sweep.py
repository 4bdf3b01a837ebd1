"""`regexp train -m resume=SWEEP_DIR`: an interrupted sweep goes on as a whole, through any
launcher, each job's record ending as an uninterrupted sweep's."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import jobs_of, read_json, regexp

from regexp import process
from regexp.run import rundir

# Long enough to be interrupted in its second job, with mini-batches and dropout (a resumed
# job must restore both its batch order and its masks).
SWEEP = [
    "data=digits",
    "train.batch_size=128",
    "model.hidden=[16]",
    "model.dropout=0.2",
    "train.epochs=150",
    "train.checkpoint_every=7",
    "log.figure_every=0",
    "log.hist_every=0",
    "seed=0,1,2",
]
LAUNCHERS = {
    "basic": ["hydra/launcher=basic"],  # one job after another: the first ends, the last waits
    "stacked": ["hydra/launcher=stacked", "hydra.launcher.n_jobs=1"],  # one population of 3
}


def jobs(sweep):
    return {p.name: p for p in jobs_of(sweep)}


def rows(run):
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def interrupt_sweep(tmp_path, launcher: list[str]) -> None:
    """Start the sweep, send SIGINT once a job with seed 1 has trained 20 epochs."""
    process = subprocess.Popen(
        [sys.executable, "-m", "regexp", "train", "-m", *SWEEP, *launcher, "hydra.sweep.dir=sweep"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline:
        csvs = list((tmp_path / "sweep").glob("*seed=1*/metrics.csv"))
        if csvs and len(csvs[0].read_text().splitlines()) > 20:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS.values(), ids=LAUNCHERS.keys())
def test_an_interrupted_sweep_resumed_as_a_whole_ends_as_an_uninterrupted_sweep(tmp_path, launcher):
    interrupt_sweep(tmp_path, launcher)
    sweep = tmp_path / "sweep"
    before = {name: read_json(job / "summary.json")["status"] for name, job in jobs(sweep).items()}
    if launcher == LAUNCHERS["basic"]:  # seed 0 done, seed 1 stopped, seed 2 never started
        assert sorted(before.values()) == ["completed", "interrupted"]
        finished = next(jobs(sweep)[n] for n, s in before.items() if s == "completed")
        kept = (finished / "metrics.csv").read_bytes()
    else:  # one population: every member stopped at one epoch
        assert list(before.values()) == ["interrupted"] * 3

    done = regexp("train", "-m", "resume=sweep", cwd=tmp_path)
    said = done.stdout + done.stderr
    assert "3 jobs: 3 completed" in said
    if launcher == LAUNCHERS["basic"]:
        assert f"skipped, completed already: {finished}" in said
        assert (finished / "metrics.csv").read_bytes() == kept
        assert said.count("resumed from epoch") == 1
    else:
        assert "3 jobs in 1 population of 3" in said  # a population again, from one epoch
        assert said.count("resumed from epoch") == 3

    regexp("train", "-m", *SWEEP, *launcher, "hydra.sweep.dir=reference", cwd=tmp_path)
    reference = jobs(tmp_path / "reference")
    assert sorted(jobs(sweep)) == sorted(reference)  # each job went on in its own dir
    for name, job in jobs(sweep).items():
        assert read_json(job / "summary.json")["status"] == "completed"
        for file in ("metrics.csv", "predictions.npz"):  # byte for byte, either launcher
            assert (job / file).read_bytes() == (reference[name] / file).read_bytes(), job / file


@pytest.mark.slow
def test_more_epochs_for_a_whole_sweep_go_on_in_each_jobs_own_dir(tmp_path):
    tiny = ["train.epochs=6", "model.hidden=[8]", "log.figure_every=0", "seed=0,1"]
    regexp("train", "-m", *tiny, "hydra/launcher=basic", "hydra.sweep.dir=sweep", cwd=tmp_path)
    names = sorted(jobs(tmp_path / "sweep"))
    for epochs in (9, 12):  # twice: the second resume keeps the names the sweep started with
        regexp("train", "-m", "resume=sweep", f"train.epochs={epochs}", cwd=tmp_path)
        assert sorted(jobs(tmp_path / "sweep")) == names
    for job in jobs(tmp_path / "sweep").values():
        assert [int(r["epoch"]) for r in rows(job)] == list(range(1, 13))
        assert read_json(job / "summary.json")["epochs"] == 12


@pytest.mark.slow
def test_failed_jobs_are_skipped_unless_asked_to_rerun(tmp_path):
    tiny = ["train.epochs=5", "model.hidden=[8]", "log.figure_every=0"]
    lr = "optim.lr=0.01,${oc.env:REGEXP_TEST_LR}"  # the second job fails: no such variable
    failed = regexp("train", "-m", *tiny, lr, "hydra.sweep.dir=sweep", cwd=tmp_path, check=False)
    assert failed.returncode == 1 and "2 jobs: 1 completed, 1 failed" in failed.stdout
    again = regexp("train", "-m", "resume=sweep", cwd=tmp_path, check=False)
    assert again.returncode == 1
    assert "skipped, completed already" in again.stdout
    assert "skipped, failed already" in again.stdout
    rerun = regexp(
        "train",
        "-m",
        "resume=sweep",
        "+rerun_failed=true",
        cwd=tmp_path,
        env={"REGEXP_TEST_LR": "0.02"},
    )
    assert "2 jobs: 2 completed" in rerun.stdout
    summaries = [read_json(j / "summary.json") for j in jobs(tmp_path / "sweep").values()]
    assert sorted(s["epochs"] for s in summaries) == [5, 5]


@pytest.mark.slow
@pytest.mark.parametrize(
    "extra, says",
    [
        (["model.hidden=[4]"], "model.hidden=[4] is not allowed with -m resume=sweep"),
        (["seed=5"], "seed=5 is not allowed with -m resume=sweep"),
    ],
)
def test_a_resumed_sweep_refuses_what_a_resume_may_not_change(tmp_path, extra, says):
    tiny = ["train.epochs=3", "model.hidden=[8]", "log.figure_every=0", "seed=0,1"]
    regexp("train", "-m", *tiny, "hydra.sweep.dir=sweep", cwd=tmp_path)
    saved = (tmp_path / "sweep" / "multirun.yaml").read_text()
    done = regexp("train", "-m", "resume=sweep", *extra, cwd=tmp_path, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"regexp train: error: {says}")
    assert len(done.stderr.strip().splitlines()) == 1
    assert (tmp_path / "sweep" / "multirun.yaml").read_text() == saved


def test_a_sweep_whose_dirs_an_earlier_regexp_named_is_not_resumed_into_new_dirs(tmp_path):
    """Its multirun.yaml lacks the naming every sweep now records: its jobs would start anew
    in dirs of other names."""
    tiny = ["train.epochs=2", "model.hidden=[8]", "log.figure_every=0", "seed=0,1"]
    regexp("train", "-m", *tiny, "hydra.sweep.dir=sweep", cwd=tmp_path)
    multirun = tmp_path / "sweep" / "multirun.yaml"
    lines = multirun.read_text().splitlines()
    multirun.write_text("\n".join(x for x in lines if "override_dirname.exclude_keys=" not in x))
    before = sorted(p.name for p in (tmp_path / "sweep").iterdir())
    done = regexp("train", "-m", "resume=sweep", "train.epochs=3", cwd=tmp_path, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "were named by an earlier regexp" in done.stderr
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == before


def test_resume_with_m_takes_a_sweep_dir(tmp_path):
    regexp("train", "train.epochs=2", "log.figure_every=0", "hydra.run.dir=run", cwd=tmp_path)
    done = regexp("train", "-m", "resume=run", cwd=tmp_path, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "with -m, the dir of a sweep to go on with (it holds no multirun.yaml)" in done.stderr


def test_what_each_job_of_a_resumed_sweep_does_with_its_dir(tmp_path, monkeypatch):
    sweep = tmp_path / "sweep"

    def job(name, summary=None, checkpoint=False):
        path = sweep / name
        path.mkdir(parents=True)
        if summary is not None:
            text = summary if isinstance(summary, str) else json.dumps(summary)
            (path / "summary.json").write_text(text)
        if checkpoint:
            (path / "checkpoint.pt").write_bytes(b"")
        return path

    cases = {
        "never ran": (job("a"), "start"),
        "completed": (job("b", {"status": "completed", "epochs": 10}, True), "skip"),
        "given more epochs": (job("c", {"status": "completed", "epochs": 8}, True), "resume"),
        "stopped early": (
            job("d", {"status": "completed", "epochs": 4, "stopped_epoch": 4}, True),
            "skip",
        ),
        "diverged": (job("e", {"status": "diverged", "epochs": 3}, True), "skip"),
        "failed": (job("f", {"status": "failed", "epochs": 0}), "skip"),
        "interrupted": (job("g", {"status": "interrupted", "epochs": 5}, True), "resume"),
        "killed": (job("h", {"status": "started", "epochs": 0}, True), "resume"),
        "killed before a checkpoint": (job("i", {"status": "started", "epochs": 0}), "start"),
        "cut short by a kill": (job("j", '{"status": "comp', True), "resume"),
    }
    assert rundir.resumed_sweep_job(cases["never ran"][0], 10) is None  # outside a resume
    monkeypatch.setenv(process.RESUMED_SWEEP, str(sweep))
    for what, (path, step) in cases.items():
        assert rundir.resumed_sweep_job(path, 10) == step, what
    assert rundir.resumed_sweep_job(tmp_path / "elsewhere", 10) is None  # not this sweep's
    monkeypatch.setenv(process.RERUN_FAILED, "1")
    assert rundir.resumed_sweep_job(cases["failed"][0], 10) == "start"


def test_the_sweep_tally_counts_a_job_whose_summary_is_corrupt_as_failed(tmp_path, caplog):
    import logging

    from omegaconf import OmegaConf

    from regexp.errors import Ended
    from regexp.run.outcomes import SweepReport

    for name, text in (("seed=0", '{"status": "completed"}'), ("seed=1", '{"status": "com')):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(f"- {name}\n")
        (tmp_path / name / "summary.json").write_text(text)
    caplog.set_level(logging.INFO, logger="regexp")
    with pytest.raises(Ended):
        SweepReport().on_multirun_end(
            OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
        )
    assert "2 jobs: 1 completed, 1 failed" in caplog.text
    assert "seed=1: failed: its summary.json is unreadable" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS.values(), ids=LAUNCHERS.keys())
def test_a_job_a_resumed_sweep_refuses_keeps_every_file_as_it_was(tmp_path, launcher):
    """Its checkpoint is another job's: it fails alone, and nothing in its dir changes (Hydra's
    own record included), while the other job goes on; a job that goes on gets the record
    Hydra gives a job, byte for byte."""
    import hashlib
    import shutil

    tiny = ["train.epochs=3", "model.hidden=[8]", "log.figure_every=0", "seed=0,1"]
    regexp("train", "-m", *tiny, *launcher, "hydra.sweep.dir=sweep", cwd=tmp_path)
    regexp("train", "-m", *tiny[:-1], "seed=1", "train.epochs=5", "hydra.sweep.dir=alone",
           cwd=tmp_path)  # fmt: skip
    made = jobs(tmp_path / "sweep")
    shutil.copy(made["seed=1"] / "checkpoint.pt", made["seed=0"] / "checkpoint.pt")

    def files(run):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.rglob("*")
                if p.is_file()}  # fmt: skip

    before = files(made["seed=0"])
    done = regexp("train", "-m", "resume=sweep", "train.epochs=5", *launcher, cwd=tmp_path,
                  check=False)  # fmt: skip
    assert done.returncode == 1 and "2 jobs: 1 completed, 1 failed" in done.stdout, done.stdout
    assert "a checkpoint of another run" in done.stdout + done.stderr
    assert files(made["seed=0"]) == before
    assert read_json(made["seed=1"] / "summary.json")["epochs"] == 5
    went_on, alone = made["seed=1"] / ".hydra", jobs_of(tmp_path / "alone")[0] / ".hydra"
    for name in ("config.yaml", "overrides.yaml"):
        assert (went_on / name).read_text() == (alone / name).read_text(), name
    hydra = yaml.safe_load((went_on / "hydra.yaml").read_text())["hydra"]
    assert hydra["runtime"]["output_dir"] == str(made["seed=1"].resolve())
    assert "train.epochs=5" in hydra["overrides"]["task"]
