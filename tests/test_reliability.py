"""Bad input is refused in one line; divergence, interruption and failing sweep jobs lose
nothing; a resumed run equals an uninterrupted one, number for number."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import gif_epochs, jobs_of, read_events, read_json, regexp

from regexp import cli, errors
from regexp.run import rundir

NO_CUDA = not torch.cuda.is_available()

# (overrides, what the one line must say). Each is refused before any training.
BAD_INPUT = [
    # an unknown option of a group: the known ones are listed
    ("norm=batchnorm", "norm=batchnorm: no such option (options: bn, gn, in, ln, none)"),
    (
        "optim=adamx",
        "optim=adamx: no such option (options: adagrad, adam, adamw, gd, rmsprop, sgd)",
    ),
    ("data=imagenet", "data=imagenet: no such option (options: cifar10, circles, digits, fashion"),
    ("model=resnet", "model=resnet: no such option"),
    ("sched=warmup", "sched=warmup: no such option (options: cosine, exponential, lambda"),
    ("init=he", "init=he: no such option (options: constant, default, kaiming_normal"),
    # numbers that pass a range check but break inside torch: non-finite, astronomically large
    ("init=uniform init.low=-inf init.high=inf", "init.low=-inf is not allowed: a finite number"),
    ("norm=bn norm.eps=inf", "norm.eps=inf is not allowed: a finite number"),
    ("sched=step sched.gamma=inf", "sched.gamma=inf is not allowed: a finite number"),
    ("optim.lr=inf", "optim.lr=inf is not allowed: a finite number"),
    ("optim.lr=nan", "optim.lr=nan is not allowed: a finite number"),
    ("init=normal init.mean=1e39", "init.mean=1e+39 is not allowed: a number of at most 1e+30"),
    ("train.epochs=99999999999999999999", "train.epochs=99999999999999999999 is not allowed"),
    # a misspelt key: the keys nearby are named
    ("train.epoch=3", "train.epoch: no such key in 'train'; did you mean train.epochs?"),
    ("model.dropuot=0.5", "did you mean model.dropout?"),
    ("optim.learning_rate=0.1", "optim.learning_rate: no such key in 'optim'"),
    ("optim=adam optim.momentum=0.9", "optim.momentum: no such key in 'optim'"),
    ("+foo=1", "foo=1 is not allowed: no such key"),
    ("threads=100000", "threads=100000 is not allowed: null (1) or an integer from 1 to 256"),
    # Added with +, a misspelt key would train with the default: refused by the typed config.
    ("+model.hiden=[8]", "model.hiden: no such key in 'model'; did you mean model.hidden?"),
    ("+train.epoch=5", "train.epoch: no such key in 'train'; did you mean train.epochs?"),
    ("+train.early_stop.patiense=3", "did you mean train.early_stop.patience?"),
    # a wrong type
    ("train.epochs=ten", "train.epochs=ten: Value 'ten' of type 'str' could not be converted"),
    ("optim.lr=fast", "optim.lr=fast: Value 'fast' of type 'str' could not be converted"),
    ("train.batch_size=1.5", "train.batch_size=1.5"),
    ("model.hidden=abc", "model.hidden=abc"),
    ("seed=abc", "seed=abc"),
    ("norm=bn norm.eps=small", "norm.eps=small"),
    ("train.epochs=[1", "train.epochs=[1: not an override Hydra can parse"),
    # out of range
    ("optim.lr=0", "optim.lr=0.0 is not allowed: a learning rate > 0"),
    ("optim.lr=-0.1", "optim.lr=-0.1 is not allowed"),
    ("model.dropout=1", "model.dropout=1.0 is not allowed: a probability p with 0 <= p < 1"),
    ("model.dropout=-0.1", "model.dropout=-0.1 is not allowed"),
    ("optim.weight_decay=-1e-4", "optim.weight_decay=-0.0001 is not allowed: a weight decay >= 0"),
    ("train.epochs=0", "train.epochs=0 is not allowed: an integer >= 1"),
    ("train.batch_size=0", "train.batch_size=0 is not allowed"),
    ("train.checkpoint_every=0", "train.checkpoint_every=0 is not allowed"),
    ("log.hist_every=-1", "log.hist_every=-1 is not allowed"),
    ("model.hidden=[64,0]", "model.hidden=[64,0] is not allowed: widths >= 1"),
    ("data.n_train=0", "data.n_train=0 is not allowed"),
    ("data=digits data.label_noise=1.5", "data.label_noise=1.5 is not allowed: between 0 and 1"),
    ("data=digits data.label_noise=-0.1", "data.label_noise=-0.1 is not allowed"),
    ("data=digits data.valid_fraction=0", "data.valid_fraction=0.0 is not allowed"),
    ("data=digits data.valid_fraction=1e-4", "data.valid_fraction=0.0001 is not allowed: a share"),
    ("data=digits data.valid_fraction=0.9999", "data.valid_fraction=0.9999 is not allowed"),
    ("norm=bn data.n_train=1", "data.n_train=1 is not allowed: at least 2 with norm=bn"),
    (
        "norm=bn norm.track_running_stats=false data.n_valid=1",
        "norm.track_running_stats=false is not allowed: true with 1 valid examples",
    ),
    (
        "init=normal init.layers=conv",
        "init.layers=conv is not allowed: all or linear with model=mlp",
    ),
    ("optim=gd optim.momentum=0.9", "optim.momentum=0.9 is not allowed: 0 with optim=gd"),
    ("model.bias=false init.bias=zeros", "init.bias=zeros is not allowed: default with model.bias"),
    ("seed=-1", "seed=-1 is not allowed: an integer from 0 to 2**32 - 1"),
    ("seed=4294967296", "seed=4294967296 is not allowed"),
    ("init=xavier_normal init.gain=-1", "init.gain=-1.0 is not allowed: a gain > 0"),
    ("data=digits data.n_train=2000", "data.n_train=2000 is not allowed: at most 1438, the size"),
    ("data=moons data.noise=-0.1", "data.noise=-0.1 is not allowed: a standard deviation >= 0"),
    ("data.function=quartic", "data.function=quartic is not allowed: one of cubic, linear, sin"),
    ("data.draw=-1", "data.draw=-1 is not allowed: null or an integer from 0 to 2**32 - 1"),
    ("data.draw=4294967296", "data.draw=4294967296 is not allowed: null or an integer from 0"),
    ("data.draw=abc", "data.draw=abc: Value 'abc' of type 'str' could not be converted"),
    ("data.draw=1.5", "data.draw=1.5: Value '1.5' of type 'float' could not be converted"),
    (
        "data=digits data.draw=1",
        "data.draw=1 is not allowed: null with data.n_train=null (all 1438 training examples) "
        "and no label noise: every draw would be the same set; set data.n_train below 1438",
    ),
    # a dataset's files missing (or truncated, or of another format: tests/test_files.py)
    (
        "data=mnist data.root=nowhere",
        "data.root=nowhere: MNIST's train-images-idx3-ubyte, train-labels-idx1-ubyte, "
        "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (or .gz) not found in nowhere or "
        "nowhere/MNIST/raw; put MNIST's published files there, or set data.download=true",
    ),
    ("optim=adam optim.betas=[0.9]", "optim.betas=[0.9] is not allowed: [beta1, beta2]"),
    ("sched=step sched.step_size=0", "sched.step_size=0 is not allowed"),
    ("model.activation=relu7", "model.activation=relu7 is not allowed: one of elu, gelu"),
    ("loss=hinge", "loss=hinge is not allowed"),
    ("loss=ce", "loss=ce is not allowed: one that fits a regression task: mse"),
    ("norm=in", "norm=in is not allowed"),
    ("model=cnn data=digits norm=gn norm.groups=4", "norm.groups=4 is not allowed"),
    ("norm=gn norm.groups=0", "norm.groups=0 is not allowed"),
    ("model=cnn", "model=cnn is not allowed"),
    ("norm=bn data.n_train=9 train.batch_size=4", "train.batch_size=4 is not allowed: one that"),
    (
        "+experiment=nope",
        "experiment=nope: no such option (options: bias_variance, bias_variance_dropout, bn_cnn, "
        "double_descent, double_descent_quick, dropout, early_stopping, l1_vs_l2",
    ),
    ("reg.l1=-1e-4", "reg.l1=-0.0001 is not allowed: a penalty strength >= 0"),
    ("reg.l2=-1", "reg.l2=-1.0 is not allowed"),
    ("train.clip_grad_norm=0", "train.clip_grad_norm=0.0 is not allowed"),
    ("sched=multistep sched.milestones=[]", "sched.milestones=[] is not allowed"),
    ("loss=bce data=digits", "loss=bce is not allowed: a loss for 10 classes: ce"),
    ("device=gpu", "device=gpu is not allowed: auto, cpu, cuda, cuda:N or mps"),
    pytest.param(
        "device=cuda",
        "device=cuda is not allowed: auto or cpu: this machine has no CUDA",
        marks=pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA"),
    ),
    ("resume=no/such/run", "resume=no/such/run is not allowed: the dir of a run to continue"),
    ("hydra.run.dir=/proc/x", "cannot use /proc/x: No such file or directory"),
    ("data=null", "data=null: no such option (options: cifar10, circles, digits, fashion_mnist"),
    ("optim.lr=${optim.lr}", "optim.lr: Recursive interpolation detected"),
    ("optim.lr=${oc.env:USER,me}", "optim.lr="),  # a string where a number goes: one line
    (
        "model.hidden=[100000,100000]",
        "model.hidden=[100000,100000] is not allowed: a size that fits: the run needs about 149 GB "
        "(10,000,400,001 parameters), and cpu has",
    ),
    (
        "data.n_train=10000000",
        "data.n_train=10000000 is not allowed: a size that fits: the run needs about 89.5 GB (the "
        "activations of a batch of 10,000,000 through a model of 81,001 parameters)",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides,message",
    BAD_INPUT,
    ids=[c.values[0] if hasattr(c, "values") else c[0] for c in BAD_INPUT],
)
def test_bad_input_is_refused_in_one_line_with_exit_2(
    tmp_path, monkeypatch, capsys, overrides, message
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    short = [] if "epochs" in overrides else ["train.epochs=3"]
    code = cli.main(["train", *overrides.split(), *short])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("regexp train: error: ") and err.count("\n") == 1, err
    assert message in err
    assert "Traceback" not in err
    assert not list(tmp_path.glob("**/metrics.csv"))  # nothing was trained
    assert not list(tmp_path.glob("**/events.out.tfevents.*"))


@pytest.mark.slow
@pytest.mark.parametrize(
    "command, said",
    [
        (["report", "run"], "--out /proc/x: cannot make that dir (No such file or directory)"),
        (["probe", "dropout"], "cannot use /proc/x: No such file or directory"),
    ],
)
def test_an_output_dir_that_cannot_be_written_is_refused_in_one_line(tmp_path, command, said):
    regexp("train", "train.epochs=2", "log.figure_every=0", "hydra.run.dir=run", cwd=tmp_path)
    done = regexp(*command, "--out", "/proc/x", cwd=tmp_path, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr == f"regexp {command[0]}: error: {said}\n"


def test_a_full_disk_leaves_no_half_written_file_and_says_so_in_one_line(tmp_path):
    import errno

    path = rundir.summary_file(tmp_path)
    rundir.write_summary(tmp_path, {"status": "started"})
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "summary.json.tmp"))
    with pytest.raises(OSError), rundir.atomic(path) as tmp:
        tmp.write_text("half")
        raise full
    assert read_json(path) == {"status": "started"} and not list(tmp_path.glob("*.tmp"))
    assert errors.user_error(RuntimeError("while saving")) is None
    chained = RuntimeError("while saving")
    chained.__cause__ = full
    assert errors.user_error(chained) == f"cannot use {full.filename}: No space left on device"


def test_an_absurdly_long_override_is_refused_before_hydra_writes_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    huge = "optim.lr=" + "9" * 200_000
    assert cli.main(["train", huge]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) < 200
    assert "an override of 200,009 characters; at most 10,000" in err
    assert not list(tmp_path.iterdir())  # nothing written
    # An error that quotes a long value is cut to one line of at most 1000 characters.
    cut = cli.error_line("x " * 100_000)
    assert len(cut) <= 1000 and cut.endswith("... (199,999 characters)")


def test_there_are_at_least_30_bad_input_cases():
    assert len(BAD_INPUT) >= 30


def test_a_dir_without_a_checkpoint_cannot_be_resumed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    assert cli.main(["train", "resume=empty"]) == 2
    assert (
        "resume=empty is not allowed: the dir of a run to continue (it holds no checkpoint.pt)"
        in (capsys.readouterr().err)
    )


def test_a_diverging_run_stops_there_and_keeps_what_it_logged(tmp_path):
    done = regexp(
        "train", "optim.lr=1e6", "train.epochs=500", "hydra.run.dir=run", cwd=tmp_path, check=False
    )
    assert done.returncode == 1
    lines = [line for line in done.stdout.splitlines() if line.startswith("diverged")]
    assert len(lines) == 1 and "loss became" in lines[0] and "in epoch" in lines[0]
    summary = read_json(tmp_path / "run" / "summary.json")
    assert summary["status"] == "diverged" and summary["epochs"] < 500
    assert "in epoch" in summary["error"]
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + summary["epochs"]
    assert len(read_events(tmp_path / "run").Scalars("loss/train")) == summary["epochs"]


# A run long enough to be interrupted, with mini-batches and dropout, so that the batch order
# and the dropout masks must both be restored for the resumed run to match.
LONG = [
    "data=digits",
    "train.batch_size=128",
    "model.hidden=[16]",
    "model.dropout=0.2",
    "train.epochs=400",
    "train.checkpoint_every=7",
]


def interrupt(tmp_path, name: str, signum: int) -> subprocess.CompletedProcess:
    """Start a real `regexp train`, send `signum` once it reports progress, wait for it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "regexp", "train", *LONG, f"hydra.run.dir={name}"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in process.stdout:  # the first progress line: training is under way
        if line.startswith("epoch "):
            break
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.mark.slow
def test_sigint_saves_a_checkpoint_and_resume_equals_an_uninterrupted_run(tmp_path):
    done = interrupt(tmp_path, "run", signal.SIGINT)
    assert done.returncode == 130, done.stderr
    run = tmp_path / "run"
    summary = read_json(run / "summary.json")
    assert summary["status"] == "interrupted" and 40 <= summary["epochs"] < 400
    assert f"resume with: regexp train resume={run}" in done.stdout
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == summary["epochs"]
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + summary["epochs"]  # flushed: every epoch it trained

    regexp("train", "resume=run", cwd=tmp_path)
    regexp("train", *LONG, "hydra.run.dir=reference", cwd=tmp_path)
    resumed = (run / "metrics.csv").read_text()
    assert resumed == (tmp_path / "reference" / "metrics.csv").read_text()
    summary = read_json(run / "summary.json")
    assert summary["status"] == "completed" and summary["epochs"] == 400
    steps = [s.step for s in read_events(run).Scalars("loss/valid")]
    assert steps == list(range(1, 401))  # appended to the same run, once each


@pytest.mark.slow
def test_sigterm_stops_with_143_and_resume_drops_epochs_past_the_checkpoint(tmp_path):
    done = interrupt(tmp_path, "run", signal.SIGTERM)
    assert done.returncode == 143, done.stderr
    run = tmp_path / "run"
    assert read_json(run / "summary.json")["status"] == "interrupted"
    # As after a hard kill: the last checkpoint is behind the rows and events logged.
    epoch = torch.load(run / "checkpoint.pt", weights_only=True)["epoch"]
    with open(run / "metrics.csv", "a") as f:
        f.write(f"{epoch + 1},9,9,0.5,0.5,0.01\n{epoch + 2},9,9,0.5,0.5,0.01\n")
    regexp(
        "train", "resume=run", "train.epochs=60" if epoch < 60 else "train.epochs=400", cwd=tmp_path
    )
    epochs = [int(r.split(",")[0]) for r in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == list(range(1, epochs[-1] + 1))
    assert 9.0 not in [s.value for s in read_events(run).Scalars("loss/train")]


def drawing_process(parent: int) -> int:
    """The pid of the drawing process (regexp.render) that process `parent` started."""
    from pathlib import Path

    for _ in range(200):
        for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
            if b"render.serve" in Path(f"/proc/{child}/cmdline").read_bytes():
                return int(child)
        time.sleep(0.05)
    raise AssertionError("no drawing process")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_the_last_figures_are_drawn_waits_for_them(tmp_path, signum):
    # The drawing process is held stopped, so that the run's end waits for its frames; the
    # signal comes then, the drawing goes on, and nothing the run drew is lost.
    process = subprocess.Popen(
        [sys.executable, "-m", "regexp", "train", "train.epochs=300", "log.figure_every=100"]
        + ["hydra.run.dir=run"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    drawing = drawing_process(process.pid)
    time.sleep(0.5)  # (its first frame may be drawn or not: it is held either way)
    os.kill(drawing, signal.SIGSTOP)
    rows = tmp_path / "run" / "metrics.csv"
    while not rows.exists() or len(rows.read_text().splitlines()) < 301:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    time.sleep(0.5)  # the record is flushed: the run waits on the frames
    process.send_signal(signum)
    time.sleep(0.5)
    os.kill(drawing, signal.SIGCONT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, err
    assert "writing the run's last figures and records first" in out + err
    run = tmp_path / "run"
    assert read_json(run / "summary.json")["status"] == "completed"
    assert (run / "fit.png").exists() and gif_epochs(run / "fit.gif")[1] == [0, 100, 200, 300]
    assert [i.step for i in read_events(run).Images("figures/fit")] == [0, 100, 200, 300]
    assert "Traceback" not in out + err


@pytest.mark.slow
def test_a_run_killed_after_its_last_checkpoint_resumes_to_write_its_last_records(tmp_path):
    # As kill -9 leaves it between the last epoch's checkpoint and the end of its close: no
    # summary, figures or predictions. resume= writes them, training nothing; once it has,
    # a resume with no epoch left is refused again.
    regexp("train", "train.epochs=30", "hydra.run.dir=run", cwd=tmp_path)
    run = tmp_path / "run"
    rows = (run / "metrics.csv").read_text()
    for name in ("summary.json", "predictions.npz", "fit.png", "fit.gif"):
        (run / name).unlink()
    regexp("train", "resume=run", cwd=tmp_path)
    summary = read_json(run / "summary.json")
    assert summary["status"] == "completed" and summary["epochs"] == 30
    assert (run / "metrics.csv").read_text() == rows
    assert (run / "predictions.npz").exists() and (run / "fit.png").exists()
    again = regexp("train", "resume=run", cwd=tmp_path, check=False)
    assert again.returncode == 2 and "more than the 30 epochs" in again.stderr


@pytest.mark.slow
def test_resume_can_train_a_finished_run_longer(tmp_path):
    regexp("train", "train.epochs=5", "model.hidden=[8]", "hydra.run.dir=run", cwd=tmp_path)
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    for epochs in ([], ["train.epochs=3"]):
        refused = regexp("train", "resume=run", *epochs, cwd=tmp_path, check=False)
        assert refused.returncode == 2 and "is not allowed: more than the 5 epochs" in (
            refused.stderr
        )
    assert {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()} == before
    regexp("train", "resume=run", "train.epochs=8", cwd=tmp_path)
    summary = read_json(tmp_path / "run" / "summary.json")
    assert summary["status"] == "completed" and summary["epochs"] == 8
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == 1 + 8


@pytest.mark.slow
@pytest.mark.parametrize(
    "override,message",
    [
        ("model.dropout=2", "model.dropout=2.0 is not allowed: a probability"),
        ("optim=adam", "optim=adam is not allowed with resume="),
        ("model.hidden=[10]", "model.hidden=[10] is not allowed with resume="),
        ("device=cuda:7", "device=cuda:7 is not allowed"),  # a device this machine lacks
    ],
)
def test_a_refused_resume_leaves_the_run_as_it_was(tmp_path, override, message):
    regexp("train", "train.epochs=3", "model.hidden=[8]", "hydra.run.dir=run", cwd=tmp_path)
    run = tmp_path / "run"
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    # (one case as a process of its own, the command's exit as a user sees it; all alike)
    process = override == "optim=adam"
    refused = regexp(
        "train",
        "resume=run",
        "train.epochs=6",
        override,
        cwd=tmp_path,
        check=False,
        process=process,
    )
    assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    assert refused.stderr.count("\n") == 1
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    regexp("train", "resume=run", "train.epochs=6", cwd=tmp_path)  # the plain resume still works
    assert read_json(run / "summary.json")["epochs"] == 6


@pytest.mark.slow
def test_a_bare_checkpoint_resumes_with_the_config_given(tmp_path):
    args = ["train.epochs=3", "model.hidden=[8]"]
    regexp("train", *args, "hydra.run.dir=run", cwd=tmp_path)
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "checkpoint.pt").write_bytes(
        (tmp_path / "run" / "checkpoint.pt").read_bytes()
    )
    regexp("train", "resume=bare", "model.hidden=[8]", "train.epochs=5", cwd=tmp_path)
    assert read_json(tmp_path / "bare" / "summary.json")["epochs"] == 5


@pytest.mark.slow
def test_a_cosine_schedule_over_the_runs_epochs_is_not_extended(tmp_path):
    args = ["train.epochs=3", "model.hidden=[8]", "sched=cosine"]
    regexp("train", *args, "hydra.run.dir=run", cwd=tmp_path)
    refused = regexp("train", "resume=run", "train.epochs=6", cwd=tmp_path, check=False)
    assert refused.returncode == 2 and "spans the run's 3 epochs" in refused.stderr


class Payload:
    """Pickles as a call to os.system: what a malicious checkpoint would hold."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.path}",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    regexp("train", "train.epochs=3", "model.hidden=[8]", "hydra.run.dir=run", cwd=tmp_path)
    pwned = tmp_path / "PWNED"
    torch.save({"epoch": 1, "model": Payload(pwned)}, tmp_path / "run" / "checkpoint.pt")
    done = regexp("train", "resume=run", "train.epochs=6", cwd=tmp_path, check=False)
    assert done.returncode == 2, done.stderr
    assert "checkpoint.pt: refused" in done.stderr and done.stderr.count("\n") == 1
    assert not pwned.exists()


def test_a_sweep_goes_on_past_failing_jobs_and_exits_non_zero(tmp_path):
    done = regexp(
        "train",
        "-m",
        "optim.lr=0.01,1e6,-1",
        "train.epochs=50",
        "model.hidden=[8]",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    status = {p.name: read_json(p / "summary.json")["status"] for p in jobs_of(tmp_path / "sweep")}
    assert status == {
        "lr=0.01": "completed",
        "lr=1000000.0": "diverged",
        "lr=-1": "failed",
    }
    failed = read_json(tmp_path / "sweep" / "lr=-1" / "summary.json")
    assert failed["error"] == "optim.lr=-1.0 is not allowed: a learning rate > 0"
    assert "3 jobs: 1 completed, 1 diverged, 1 failed" in done.stdout


def test_a_checkpoint_of_a_regexp_before_populations_is_refused_in_one_line(tmp_path):
    import torch

    regexp("train", "train.epochs=3", "model.hidden=[8]", "hydra.run.dir=run", cwd=tmp_path)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=True)
    del state["format"]  # as the single-run loop wrote it, with torch.optim's state
    state["optimizer"] = {"state": {}, "param_groups": [{"lr": 0.01, "params": [0, 1]}]}
    torch.save(state, checkpoint)
    done = regexp("train", "resume=run", "train.epochs=6", cwd=tmp_path, check=False)
    assert done.returncode == 2, done.stderr
    assert "written by a regexp older than populations" in done.stderr
    assert done.stderr.count("\n") == 1


def test_a_checkpoint_with_the_earlier_layout_of_optimizer_state_is_refused(tmp_path):
    import torch

    regexp("train", "train.epochs=3", "model.hidden=[8]", "hydra.run.dir=run", cwd=tmp_path)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(checkpoint, weights_only=True)
    state["format"] = 2  # its Linear weights' optimizer rows not transposed
    torch.save(state, checkpoint)
    done = regexp("train", "resume=run", "train.epochs=6", cwd=tmp_path, check=False)
    assert done.returncode == 2, done.stderr
    assert "laid out a member's optimizer state differently" in done.stderr
    assert done.stderr.count("\n") == 1


@pytest.mark.slow
def test_resumed_again_and_again_a_run_keeps_one_clean_list_of_overrides(tmp_path):
    from omegaconf import OmegaConf

    regexp("train", "train.epochs=3", "model.hidden=[8]", "hydra.run.dir=run", cwd=tmp_path)
    for epochs in (5, 7):
        regexp("train", "resume=run", f"train.epochs={epochs}", cwd=tmp_path)
    overrides = list(OmegaConf.load(tmp_path / "run" / ".hydra" / "overrides.yaml"))
    keys = [o.split("=", 1)[0] for o in overrides]
    assert len(keys) == len(set(keys)), overrides
    assert "train.epochs=7" in overrides and "model.hidden=[8]" in overrides


@pytest.mark.slow
@pytest.mark.parametrize(
    "field,value,message",
    [
        ("epoch", -5, "its epoch (-5) is not a count of epochs done"),
        ("epoch", "3", "its epoch ('3') is not a count of epochs done"),
    ],
)
def test_a_crafted_checkpoint_is_refused_before_anything_changes(tmp_path, field, value, message):
    regexp("train", "train.epochs=3", "model.hidden=[8]", "hydra.run.dir=run", cwd=tmp_path)
    run = tmp_path / "run"
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state[field] = value
    torch.save(state, run / "checkpoint.pt")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    done = regexp("train", "resume=run", "train.epochs=6", cwd=tmp_path, check=False)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_resume_with_an_empty_value_is_refused_not_taken_as_the_current_dir(tmp_path):
    regexp("train", "train.epochs=3", "model.hidden=[8]", "hydra.run.dir=.", cwd=tmp_path)
    done = regexp("train", "resume=", cwd=tmp_path, check=False)
    assert done.returncode == 2 and "resume= is not allowed" in done.stderr, done.stderr


@pytest.mark.slow
def test_runs_and_sweeps_started_in_the_same_second_get_dirs_of_their_own(tmp_path):
    from regexp.run import rundir

    base = str(tmp_path / "outputs" / "12-00-00")
    assert [rundir.fresh(base) for _ in range(3)] == [base, f"{base}-2", f"{base}-3"]
    # Real runs started together: each its own dir, each dir one run's whole record.
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "regexp", "train", "train.epochs=30", "model.hidden=[8]"]
            + [f"seed={seed}", "log.figure_every=0"],
            cwd=tmp_path,
        )
        for seed in range(3)
    ]
    assert [r.wait(timeout=300) for r in runs] == [0, 0, 0]
    dirs = sorted((tmp_path / "outputs").glob("*/*"))
    assert len(dirs) == 3
    assert sorted(read_json(d / "summary.json")["seed"] for d in dirs) == [0, 1, 2]
    for d in dirs:
        rows = (d / "metrics.csv").read_text().splitlines()
        assert len(rows) == 31 and len({len(r.split(",")) for r in rows}) == 1


@pytest.mark.slow
def test_a_live_run_holds_its_dir_and_a_second_writer_is_refused(tmp_path):
    import time

    process = subprocess.Popen(
        [sys.executable, "-m", "regexp", "train", *LONG, "train.epochs=100000"]
        + ["hydra.run.dir=run"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        run = tmp_path / "run"
        while not (run / "checkpoint.pt").exists():  # training is under way
            assert process.poll() is None
            time.sleep(0.1)
        hydra_files = {p: p.read_bytes() for p in (run / ".hydra").iterdir()}
        for second in (["hydra.run.dir=run", "model.hidden=[8]"], ["resume=run"]):
            done = regexp("train", *second, cwd=tmp_path, check=False)
            assert done.returncode == 2, done.stderr
            assert "refused, a live run is writing in it" in done.stderr
            assert done.stderr.count("\n") == 1
        assert {p: p.read_bytes() for p in (run / ".hydra").iterdir()} == hydra_files
    finally:
        process.kill()  # a hard kill: the OS releases the lock with the process
        process.wait()
    done = regexp("train", "resume=run", "train.epochs=30", cwd=tmp_path, check=False)
    assert "a live run is writing" not in done.stderr


@pytest.mark.slow
def test_after_hard_kills_resume_ends_equal_to_an_uninterrupted_run(tmp_path):
    """kill -9 at several points: the checkpoint is never ahead of metrics.csv, and each resume
    goes on from exactly the checkpoint's epoch."""
    import random
    import time

    long = [*LONG, "train.checkpoint_every=3"]
    regexp("train", *long, "hydra.run.dir=reference", cwd=tmp_path)
    rng = random.Random(0)
    start = [sys.executable, "-m", "regexp", "train", *long, "hydra.run.dir=run"]
    for kill in range(3):
        command = start if kill == 0 else [sys.executable, "-m", "regexp", "train", "resume=run"]
        process = subprocess.Popen(
            command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        for line in process.stdout:
            if line.startswith("epoch "):
                break
        time.sleep(rng.uniform(0.0, 0.5))
        process.kill()
        process.wait()
        run = tmp_path / "run"
        if (run / "checkpoint.pt").exists():
            epoch = torch.load(run / "checkpoint.pt", weights_only=True)["epoch"]
            rows = (run / "metrics.csv").read_text().splitlines()
            assert len(rows) - 1 >= epoch  # the record is never behind the checkpoint
    regexp("train", "resume=run", cwd=tmp_path)
    assert (tmp_path / "run" / "metrics.csv").read_text() == (
        tmp_path / "reference" / "metrics.csv"
    ).read_text()


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["stacked", "basic"])
def test_a_job_that_fails_for_any_reason_is_counted_and_the_sweep_exits_1(tmp_path, launcher):
    done = regexp(
        "train", "-m", f"hydra/launcher={launcher}", "optim.lr=0.01,${oc.env:NOPE_NOT_SET}",
        "train.epochs=3", "model.hidden=[4]", "log.figure_every=0", "hydra.sweep.dir=sweep",
        cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "2 jobs: 1 completed, 1 failed" in done.stdout + done.stderr
    (bad,) = [p for p in (tmp_path / "sweep").iterdir() if "NOPE" in p.name]
    summary = read_json(bad / "summary.json")
    assert summary["status"] == "failed" and "NOPE_NOT_SET" in summary["error"]
    report = regexp("report", "sweep", cwd=tmp_path)
    assert "failed" in report.stdout


def test_a_resume_killed_while_it_cuts_metrics_csv_leaves_the_record_whole(tmp_path, monkeypatch):
    """resume= cuts metrics.csv back to its checkpoint by writing the kept rows to a temp file
    and renaming it: a failure mid-write (a kill, a full disk) leaves the old file whole, and
    the next resume cuts it; a row cut short (the last write of a killed run) is dropped."""
    import csv as csv_module

    from regexp import config
    from regexp.run import population

    quiet = ["train.epochs=6", "model.hidden=[8]", "log.figure_every=0", "log.hist_every=0"]
    population.execute(config.validate(config.compose(quiet)), tmp_path / "run")
    metrics = tmp_path / "run" / "metrics.csv"
    whole = metrics.read_bytes()
    with open(metrics, "a") as f:
        f.write("7,0.5,0.5\n")  # torn: fewer cells than the header
    before = metrics.read_bytes()
    more = [*quiet[1:], "train.epochs=9", f"resume={tmp_path / 'run'}"]

    class Dying:  # the process dies half-way through the rewrite
        def __init__(self, f):
            self.f = f

        def writerows(self, rows):
            csv_module.writer(self.f).writerow(rows[0])
            raise KeyboardInterrupt

    with monkeypatch.context() as patched:  # (the run dir's owner writes every file of it)
        patched.setattr(
            rundir, "csv", type("csv", (), {"reader": csv_module.reader, "writer": Dying})
        )
        with pytest.raises(KeyboardInterrupt):
            population.execute(config.validate(config.compose(more)), tmp_path / "run")
    assert metrics.read_bytes() == before  # nothing lost, nothing half-written
    assert not list((tmp_path / "run").glob("*.tmp"))
    population.execute(config.validate(config.compose(more)), tmp_path / "run")
    rows = metrics.read_text().splitlines()
    assert metrics.read_bytes().startswith(whole) and len(rows) == 1 + 9
