"""`regexp report` on run dirs that are damaged, given twice, or written where it cannot: each
damaged run named in one line (which file, what is wrong) and the rest reported; each run
counted once; an --out that cannot be made refused in one line. Never a traceback."""

from __future__ import annotations

import io
import json
import math
import os
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import regexp

from regexp.run import predictions, readers, rundir

N, G = 10, 16  # valid points, figure grid points
SEEDS = (0, 1, 2)
DAMAGED = "optim.weight_decay=0,seed=1"  # the run each case damages


def write_run(run_dir: Path, weight_decay: float, seed: int) -> None:
    """A finished toy_regression run's files, as regexp writes them, every one the report
    reads among them."""
    (run_dir / ".hydra").mkdir(parents=True)
    rundir.overrides_file(run_dir).write_text(
        f"- optim.weight_decay={weight_decay}\n- seed={seed}\n"
    )
    valid = 0.2 + 0.01 * seed + weight_decay
    rundir.write_summary(
        run_dir,
        {
            "status": "completed",
            "epochs": 2,
            "final": {"train_loss": 0.1, "valid_loss": valid},
            "best": {"valid_loss": valid, "epoch": 2},
            "weight_norm": 3.0 - seed,
        },
    )
    rundir.metrics_file(run_dir).write_text(
        f"epoch,train_loss,valid_loss,lr\n1,0.3,0.4,0.1\n2,0.1,{valid},0.1\n"
    )
    rng = np.random.default_rng(seed)
    x = np.linspace(-1, 1, N)[:, None]
    grid_x = np.linspace(-1.2, 1.2, G)[:, None]
    fit = lambda at: 1.5 * at + rng.normal(0, 0.1, at.shape)  # noqa: E731
    predictions.write(
        run_dir,
        predictions.Predictions(
            last=fit(x), best=fit(x), epochs=(2, 2), y=1.5 * x + 0.3, target=1.5 * x,
            noise=0.3, grid_x=grid_x, grid=fit(grid_x), x=x, grid_target=1.5 * grid_x,
        ),
    )  # fmt: skip


@pytest.fixture
def sweep(tmp_path) -> Path:
    """A sweep of 2 settings x 3 seeds, whose runs the report reads as replicas: it reads every
    file of every run (the predictions too, for the bias-variance decomposition)."""
    root = tmp_path / "sweep"
    for weight_decay in (0, 0.01):
        for seed in SEEDS:
            write_run(root / f"optim.weight_decay={weight_decay},seed={seed}", weight_decay, seed)
    return root


def report(sweep: Path, *args: str, check_code: int = 0):
    done = regexp("report", str(sweep), *args, cwd=sweep.parent, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == check_code and "Traceback" not in output, output
    return done


def npz(arrays: dict) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def arrays_of(run_dir: Path, **changed) -> bytes:
    """The run's predictions.npz with some arrays `changed` (None: left out)."""
    with np.load(rundir.predictions_file(run_dir)) as f:
        arrays = {k: f[k] for k in f.files}
    arrays.update(changed)
    return npz({k: v for k, v in arrays.items() if v is not None})


def claiming(values: int) -> bytes:
    """An .npz whose `last` header claims `values` float64s, of which it holds 80 bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (values,)}
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("last.npy", header.getvalue() + bytes(80))
    return buffer.getvalue()


def compressed_by_an_unknown_method(old: bytes) -> bytes:
    """The .npz `old` with each member marked as compressed by method 99 (AES encryption),
    which zipfile cannot read."""
    data = bytearray(old)
    for signature, at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):  # local, central headers
        start = data.find(signature)
        while start != -1:
            data[start + at : start + at + 2] = (99).to_bytes(2, "little")
            start = data.find(signature, start + 1)
    return bytes(data)


def replace(path: Path, content) -> None:
    """Put `content` where `path` was: bytes, a "dir", a "fifo", a symlink to itself ("loop"),
    to "nowhere" or to "/dev/zero", or a function of the old bytes."""
    old = path.read_bytes()
    path.unlink()
    if content == "dir":
        path.mkdir()
    elif content == "fifo":
        os.mkfifo(path)
    elif content in ("loop", "nowhere", "/dev/zero"):
        os.symlink(path.name if content == "loop" else content, path)
    else:
        path.write_bytes(content(old) if callable(content) else content)


GARBAGE = random.Random(0).randbytes(3000)
HALF = lambda old: old[: len(old) // 2]  # noqa: E731

FILES = {
    "summary": rundir.SUMMARY,
    "metrics": rundir.METRICS,
    "overrides": rundir.OVERRIDES,
    "predictions": rundir.PREDICTIONS,
}
# What may replace any file, and what the line then says of it after the file's name.
ANY_FILE = {
    "a dir": ("dir", "a directory, not a file"),
    "a pipe": ("fifo", "not a regular file (a pipe, a socket or a device)"),
    "a symlink to a device": ("/dev/zero", "not a regular file (a pipe, a socket or a device)"),
    "a symlink to nothing": ("nowhere", "a symlink to nothing"),
    "a symlink loop": ("loop", "Too many levels of symbolic links"),
    "random bytes": (GARBAGE, ""),
}
# (file, what replaces it, what the line says of it): each file cut short, empty, and
# well-formed content of the wrong shape; None where what is left is a record to read.
CASES = {
    **{
        f"{name} {damage}": (file, content, f"{file}: {said}")
        for name, file in FILES.items()
        for damage, (content, said) in ANY_FILE.items()
    },
    "summary cut short": (rundir.SUMMARY, HALF, "summary.json: Expecting ',' delimiter"),
    "summary empty": (rundir.SUMMARY, b"", "summary.json: empty"),
    "summary a list": (rundir.SUMMARY, b"[1, 2]", "summary.json: a JSON list, not an object"),
    "summary epochs a string": (
        rundir.SUMMARY,
        b'{"status": "completed", "epochs": "two"}',
        'summary.json: epochs is "two", not a count of epochs',
    ),
    "summary a loss a string": (
        rundir.SUMMARY,
        b'{"final": {"valid_loss": "low"}}',
        'summary.json: final is {"valid_loss": "low"}, not a table of numbers',
    ),
    "summary status a list": (rundir.SUMMARY, b'{"status": [1]}', "status is [1], not a string"),
    "summary weight norm past floats": (
        rundir.SUMMARY,
        b'{"weight_norm": 1' + b"0" * 400 + b"}",
        "summary.json: weight_norm is 1000",
    ),
    "summary params a string": (
        rundir.SUMMARY,
        b'{"status": "completed", "params": "many"}',
        'summary.json: params is "many", not a count of parameters',
    ),
    "summary past a megabyte": (
        rundir.SUMMARY,
        b'{"error": "' + b"x" * 2**20 + b'"}',
        "summary.json: 1,048,589 bytes, more than any summary.json regexp writes",
    ),
    "summary nested deeper than the stack": (
        rundir.SUMMARY,
        b"[" * 100_000,
        "summary.json: nested too deeply",
    ),
    "metrics empty": (rundir.METRICS, b"", None),  # a run that has logged nothing yet
    "metrics cut short": (rundir.METRICS, HALF, None),  # a record a kill cut: what it holds
    "metrics a 200 kB field": (
        rundir.METRICS,
        b"epoch,valid_loss\n1," + b"9" * 200_000 + b"\n",
        "metrics.csv: line 2: field larger than field limit",
    ),
    "metrics a word for a loss": (
        rundir.METRICS,
        b"epoch,valid_loss\n1,low\n",
        'metrics.csv: line 2: valid_loss is "low", not a number',
    ),
    "metrics without epochs": (
        rundir.METRICS,
        b"valid_loss\n0.2\n",
        'metrics.csv: no epoch column (its header: "valid_loss")',
    ),
    "metrics a row without its epoch": (
        rundir.METRICS,
        b"epoch,valid_loss\n1,0.3\n,0.2\n",
        "metrics.csv: line 3: no epoch",
    ),
    "metrics an epoch past any step": (
        rundir.METRICS,
        b"epoch,valid_loss\n1e300,0.2\n",
        "metrics.csv: line 2: epoch is 1e300, not an epoch's number",
    ),
    "overrides cut short": (
        rundir.OVERRIDES,
        HALF,
        '.hydra/overrides.yaml: "optim.weight_d" is not an override (KEY=VALUE, ~KEY)',
    ),
    "overrides empty": (rundir.OVERRIDES, b"", ".hydra/overrides.yaml: empty"),
    "overrides a mapping": (
        rundir.OVERRIDES,
        b"seed: 1\n",
        '.hydra/overrides.yaml: {"seed": 1}, not a list of overrides',
    ),
    "overrides a billion laughs": (  # (nine aliases a level, 9**12 strings written out)
        rundir.OVERRIDES,
        "".join(
            f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}" if i else "lol"] * 9) + "]\n"
            for i in range(12)
        ).encode(),
        '.hydra/overrides.yaml: {"l0": ["lol", "lol", "lol", "lol", "..., not a list',
    ),
    "overrides not YAML": (rundir.OVERRIDES, b"- [seed=1\n", ".hydra/overrides.yaml: not YAML"),
    "overrides a number": (rundir.OVERRIDES, b"- 1\n", ".hydra/overrides.yaml: [1], not a list"),
    "predictions cut short": (rundir.PREDICTIONS, HALF, "predictions.npz: "),
    "predictions empty": (rundir.PREDICTIONS, b"", "predictions.npz: not an .npz archive"),
    "predictions a lone .npy": (
        rundir.PREDICTIONS,
        npy(np.zeros((N, 1))),
        "predictions.npz: not an .npz archive",
    ),
    "predictions compressed by a method zipfile lacks": (
        rundir.PREDICTIONS,
        compressed_by_an_unknown_method,
        "predictions.npz: That compression method is not supported",
    ),
    "predictions header claims 10^12 values": (
        rundir.PREDICTIONS,
        claiming(10**12),
        "predictions.npz: last's header claims 1,000,000,000,000 values of float64",
    ),
    "predictions header claims 10^7 values": (
        rundir.PREDICTIONS,
        claiming(10**7),
        "predictions.npz: last's header claims 10,000,000 values",
    ),
}
# Well-formed arrays of the wrong shape or kind: a function of the run dir, since they keep
# the run's other arrays.
ARRAYS = {
    "predictions lack a key": (dict(y=None), "predictions.npz: no y array"),
    "predictions a scalar for an array": (
        dict(last=np.float32(1)),
        "predictions.npz: last has shape (), not (n, C)",
    ),
    "predictions strings for numbers": (
        dict(best=np.array(["a"] * N)),
        "predictions.npz: best holds <U1, not numbers",
    ),
    "predictions another grid": (
        dict(grid=np.zeros((G + 1, 1), np.float32)),
        "predictions.npz: grid has shape (17, 1), not (16, 1)",
    ),
    "predictions labels past the classes": (
        dict(y=np.full(N, 2**62, np.int64)),
        "predictions.npz: y holds integers of shape (10,): not (10,) labels from 0 to 1",
    ),
    "predictions objects": (
        dict(y=np.array([{}] * N, object)),
        "predictions.npz: ",
    ),
}


@pytest.mark.slow  # (52 cases, a report each)
@pytest.mark.parametrize("case", [*CASES, *ARRAYS])
def test_a_damaged_file_is_named_in_one_line_and_the_rest_report(sweep, case):
    run_dir = sweep / DAMAGED
    if case in CASES:
        file, content, said = CASES[case]
    else:
        changed, said = ARRAYS[case]
        file, content = rundir.PREDICTIONS, arrays_of(run_dir, **changed)
    replace(run_dir / file, content)
    done = report(sweep)
    lines = [line for line in done.stdout.splitlines() if DAMAGED in line]
    if said is None:  # (what the file holds is a record, if a short one: read as it is)
        assert lines == [] and "6 runs" in done.stdout, done.stdout
        return
    assert len(lines) == 1 and said in lines[0], done.stdout
    assert lines[0].startswith(f"left out {'of bias and variance ' * (file == rundir.PREDICTIONS)}")
    counts = [line.split(",")[1] for line in (sweep / "report.csv").read_text().splitlines()[1:]]
    # A run with a damaged record is left out of the table; one with damaged predictions, out
    # of the decomposition (its setting's then has 2 runs).
    assert sorted(counts) == (["3", "3"] if file == rundir.PREDICTIONS else ["2", "3"])
    assert (sweep / "bias_variance.csv").is_file()


def test_a_header_that_claims_more_than_memory_is_refused_before_anything_is_allocated(sweep):
    import resource

    replace(sweep / DAMAGED / rundir.PREDICTIONS, claiming(10**12))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(readers.Damaged, match="claims 1,000,000,000,000 values"):
        predictions.read(sweep / DAMAGED)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # kB


def test_with_every_run_damaged_the_report_says_so_in_one_line(sweep):
    for run_dir in sweep.iterdir():
        replace(run_dir / rundir.SUMMARY, b"[]")
    done = report(sweep, check_code=2)
    assert done.stdout.count("left out ") == 6
    assert done.stderr.count("\n") == 1 and "none of the 6 runs there can be read" in done.stderr
    assert not (sweep / "report.md").exists()


@pytest.mark.parametrize("again", ["the sweep", "a run inside it", "a symlink to it"])
def test_a_run_reached_twice_is_counted_once(sweep, again):
    other = {
        "the sweep": sweep,
        "a run inside it": sweep / DAMAGED,
        "a symlink to it": sweep.parent / "link",
    }[again]
    if again == "a symlink to it":
        os.symlink(sweep, other)
    done = report(sweep, str(other), "--out", str(sweep.parent / "out"))
    assert "6 runs: 2 settings over seed" in done.stdout
    twice = 6 if again != "a run inside it" else 1
    assert f"counted once: {twice} run dirs reached twice" in done.stdout
    counts = [
        line.split(",")[1] for line in (sweep.parent / "out/report.csv").read_text().splitlines()
    ]
    assert counts[1:] == ["3", "3"]


def test_a_sweep_given_once_says_nothing_of_counting(sweep):
    assert "counted once" not in report(sweep).stdout


@pytest.mark.parametrize(
    ("out", "why"),
    [
        ("/proc/self/nope", "cannot make that dir (No such file or directory)"),
        ("afile/report", "cannot make that dir (Not a directory)"),
    ],
)
def test_an_out_dir_that_cannot_be_made_is_named_in_one_line(sweep, out, why):
    (sweep.parent / "afile").write_text("mine\n")
    before = sorted(p.name for p in sweep.rglob("*"))
    done = report(sweep, "--out", out, check_code=2)
    assert done.stderr.count("\n") == 1 and f"--out {out}: {why}" in done.stderr, done.stderr
    assert sorted(p.name for p in sweep.rglob("*")) == before
    assert (sweep.parent / "afile").read_text() == "mine\n"


def test_an_unreadable_sweep_is_not_changed_by_reading_it(sweep):
    """Reading a damaged run changes none of its files."""
    replace(sweep / DAMAGED / rundir.SUMMARY, GARBAGE)
    files = {p: p.read_bytes() for p in (sweep / DAMAGED).rglob("*") if p.is_file()}
    report(sweep, "--out", str(sweep.parent / "out"))
    assert {p: p.read_bytes() for p in files} == files


def test_a_summary_written_by_a_run_reads_back_whole(sweep):
    summary = json.loads(rundir.summary_file(sweep / DAMAGED).read_text())
    assert readers.read_summary(sweep / DAMAGED) == summary
    assert readers.read_overrides(sweep / DAMAGED) == ["optim.weight_decay=0", "seed=1"]
    assert predictions.read(sweep / DAMAGED).grid.shape == (G, 1)


@pytest.mark.parametrize(
    ("blocked", "why"),
    [
        ("report.md", "cannot write {out}/report.md (Is a directory)"),
        ("curves.png", "cannot write {out}/curves.png (Is a directory)"),
        ("settings", "cannot write {out}/settings/weight_decay=0 (Not a directory)"),
    ],
)
def test_a_report_file_that_cannot_be_written_is_named_in_one_line(sweep, blocked, why):
    out = sweep.parent / "out"
    out.mkdir()
    if blocked == "settings":
        (out / blocked).write_text("mine\n")
    else:
        (out / blocked).mkdir()
    done = report(sweep, "--out", str(out), check_code=2)
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"--out {out}: {why.format(out=out)}" in done.stderr


@pytest.mark.parametrize("value", ["[/]", "[bold]x", "$\\notacommand$", "a_b^c$"])
def test_a_swept_value_is_shown_as_it_is_not_as_markup(tmp_path, value):
    """Rich's markup and matplotlib's math in a run dir's values are text, not commands."""
    sweep = tmp_path / "sweep"
    for i, name in enumerate([value, "plain"]):
        write_run(sweep / f"run{i}", 0, 0)
        rundir.overrides_file(sweep / f"run{i}").write_text(
            json.dumps([f"optim.name={name}", "seed=0"])
        )
    done = report(sweep)
    assert f"name={value} " in done.stdout and (sweep / "curves.png").is_file()


def test_values_near_the_float_limit_are_reported_and_what_cannot_be_drawn_is_said(sweep):
    """A loss of 1e308 is a number (a diverged run may log one): the table holds it, and a
    figure matplotlib cannot draw is named in a line, not a traceback."""
    from regexp.analysis.replicas import stat

    s = stat([1e308, -1e308, 1e308])
    assert s.mean == pytest.approx(1e308 / 3) and s.std == pytest.approx(2 / math.sqrt(3) * 1e308)
    assert stat([0.1, 0.2, 0.3]).std == pytest.approx(0.1, rel=1e-12)
    run_dir = sweep / DAMAGED
    rundir.metrics_file(run_dir).write_text(
        "epoch,train_loss,valid_loss,lr\n1,-1e308,1e308,0.1\n2,1e308,-1e308,0.1\n"
    )
    done = report(sweep)
    assert "verdict" in done.stdout and (sweep / "report.csv").is_file()
    not_drawn = [line for line in done.stdout.splitlines() if "not drawn" in line]
    assert [line.partition(" (")[0] for line in not_drawn] == [
        "curves.png: not drawn, matplotlib cannot"
    ]
    assert not (sweep / "curves.png").exists() and (sweep / "bias_variance.png").is_file()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_swept_value_that_is_no_finite_number_reads_as_text(sweep, value):
    """NaN equals nothing: as a number, its setting would match none of its own runs."""
    rundir.overrides_file(sweep / DAMAGED).write_text(f"- optim.weight_decay={value}\n- seed=1\n")
    done = report(sweep)
    assert f"weight_decay={value} 0.21" in done.stdout and "3 settings" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name", FILES)
def test_a_file_with_bytes_flipped_at_random_is_read_or_named_never_a_traceback(sweep, name, seed):
    file, rng = FILES[name], random.Random(seed)
    path = sweep / DAMAGED / file
    data = bytearray(path.read_bytes())
    for at in rng.sample(range(len(data)), 8):  # (text, to reach past the decoding)
        data[at] = rng.choice(b'0123456789.,-+e:"{}[]\n =a~')
    path.write_bytes(bytes(data))
    done = report(sweep)
    lines = [line for line in done.stdout.splitlines() if DAMAGED in line]
    assert len(lines) <= 1 and all(f": {file}: " in line for line in lines), done.stdout


def test_a_symlink_where_the_report_writes_is_replaced_not_followed(sweep):
    """A sweep dir from elsewhere may hold report.md -> ~/.bashrc or settings -> ~/: the
    report replaces each link with its own file, and what they point to stays as it was."""
    elsewhere = sweep.parent / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "mine").write_text("mine\n")
    for name in ("report.md", "report.csv", "curves.png", "bias_variance.csv", "bias_variance.md"):
        os.symlink(elsewhere / "mine", sweep / name)
    os.symlink(elsewhere, sweep / "settings")
    report(sweep)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["mine"]
    assert (elsewhere / "mine").read_text() == "mine\n"
    assert not any((sweep / name).is_symlink() for name in ("report.md", "settings", "curves.png"))
    assert (sweep / "report.md").read_text().startswith("weight_decay 0 -> 0.01")
