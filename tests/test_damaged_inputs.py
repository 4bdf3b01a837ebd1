"""Damaged data and config inputs: each refused before anything is allocated, trained or
written, in one line that names the key or the file (issue 33)."""

from __future__ import annotations

import gzip
import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import regexp
from test_files import cifar_batches, idx_set, load

from regexp import errors
from regexp.components import models
from regexp.run import memory


def refused(*args: str, cwd: Path, writes: bool = False) -> str:
    """The one line `regexp ARGS` exits 2 with, having written nothing in `cwd` (unless
    `writes`: a run refused by its job leaves its failure in its run dir)."""
    before = sorted(cwd.rglob("*"))
    done = regexp(*args, cwd=cwd, check=False)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert writes or sorted(cwd.rglob("*")) == before
    return lines[0]


def refusal(compose, name: str, root: Path) -> str:
    with pytest.raises(errors.UserError) as info:
        load(compose, name, root)
    assert "\n" not in str(info.value)
    return str(info.value)


# --- damaged data files ----------------------------------------------------------------------


def test_a_gzipped_idx_file_whose_deflate_stream_is_corrupt_is_refused(compose, tmp_path):
    idx_set(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    damaged = bytearray(path.read_bytes())
    damaged[10] = 0x07  # the first deflate block: final, of the type that does not exist
    path.write_bytes(bytes(damaged))
    message = refusal(compose, "mnist", tmp_path)
    assert message.startswith(f"{path}: truncated or corrupt (")
    assert "invalid block type" in message


@pytest.mark.parametrize("gz", [False, True])
def test_an_idx_header_announcing_more_than_its_file_holds_is_refused_unallocated(
    compose, tmp_path, gz
):
    idx_set(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    payload = struct.pack(">IIII", 0x803, 2**32 - 1, 28, 28) + bytes(784)
    path.write_bytes(gzip.compress(payload) if gz else payload)
    if gz:
        path = path.rename(path.with_name(path.name + ".gz"))
    message = refusal(compose, "mnist", tmp_path)  # (3 TB: allocated, it would fail or thrash)
    assert message.startswith(
        f"{path}: truncated or corrupt: its header announces 4294967295x28x28 "
        "(3,367,254,359,280 bytes of data), more than a file of"
    )


@pytest.mark.parametrize("part", ["train", "t10k"])
def test_mnist_with_no_training_or_no_test_images_is_refused(compose, tmp_path, part):
    idx_set(tmp_path, n=(0, 10) if part == "train" else (30, 0), gz=False)
    what = "training" if part == "train" else "test"
    assert refusal(compose, "mnist", tmp_path) == (
        f"{tmp_path / f'{part}-images-idx3-ubyte'}: no images; expected MNIST's {what} "
        "images, at least one"
    )


@pytest.mark.parametrize("n", [(0, 4), (6, 0)])
def test_cifar_with_no_training_or_no_test_images_is_refused(compose, tmp_path, n):
    folder = tmp_path / "cifar-10-batches-py"
    cifar_batches(folder, n=n)
    where = "data_batch_1 to data_batch_5" if n[0] == 0 else "test_batch"
    assert refusal(compose, "cifar10", tmp_path).startswith(f"{folder / where}: no images;")


def write_batch(folder: Path, name: str, labels) -> Path:
    batch = {b"data": np.zeros((6, 3072), np.uint8), b"labels": labels}
    raw = pickle.dumps(batch, protocol=3).replace(b"numpy._core.", b"numpy.core.")
    (folder / name).write_bytes(raw)
    return folder / name


@pytest.mark.parametrize(
    ("labels", "held"),
    [
        ([-1, 0, 1, 2, 3, 4], "the label -1"),
        ([2**70, 0, 1, 2, 3, 4], f"the label {2**70}"),
        ([10, 0, 1, 2, 3, 4], "the label 10"),
        ([b"\x01", 0, 1, 2, 3, 4], "the label b'\\x01'"),
        ([0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "the label 0.0"),
        ([0.5, 0, 1, 2, 3, 4], "the label 0.5"),
        ([True, 0, 1, 2, 3, 4], "the label True"),
        ([None, 0, 1, 2, 3, 4], "the label None"),
        ([[0, 1]] * 6, "the label [0, 1]"),
        (np.zeros((6, 2), np.int64), "a 2-D array of int64"),
        (np.arange(6, dtype=np.float32), "a 1-D array of float32"),
        (np.array([0, 1, 2, 3, 4, -1]), "the label -1"),
    ],
)
def test_cifar_labels_that_are_not_class_numbers_are_refused(compose, tmp_path, labels, held):
    folder = tmp_path / "cifar-10-batches-py"
    cifar_batches(folder)
    path = write_batch(folder, "data_batch_2", labels)
    assert refusal(compose, "cifar10", tmp_path) == (
        f"{path}: its b'labels' hold {held}; expected one class number from 0 to 9 per image"
    )


@pytest.mark.parametrize("labels", [b"\x00\x01\x02\x03\x04\x05", "abcdef", {0: 0}])
def test_cifar_labels_that_are_no_list_are_refused(compose, tmp_path, labels):
    folder = tmp_path / "cifar-10-batches-py"
    cifar_batches(folder)
    path = write_batch(folder, "test_batch", labels)
    assert refusal(compose, "cifar10", tmp_path).startswith(
        f"{path}: has not the keys, shapes or types of a CIFAR-10 python batch"
    )


def test_cifar_labels_as_a_numpy_array_of_class_numbers_load(compose, tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    cifar_batches(folder)
    write_batch(folder, "data_batch_2", np.arange(6, dtype=np.uint8))
    assert load(compose, "cifar10", tmp_path).y_train[6:12].tolist() == list(range(6))


def test_a_damaged_data_file_ends_the_command_in_one_line(tmp_path):
    idx_set(tmp_path / "data", n=(30, 0), gz=False)
    line = refused("train", "data=mnist", "hydra.run.dir=run", cwd=tmp_path, writes=True)
    assert line == (
        f"regexp train: error: {Path('data', 't10k-images-idx3-ubyte')}: no images; expected "
        "MNIST's test images, at least one"
    )


# --- a CNN that does not fit its input --------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (
            ["model.kernel=1000"],
            "model.kernel=1000 is not allowed: at most 16 with model.padding=null on the 8x8 "
            "maps of conv block 1",
        ),
        (
            ["model.kernel=16"],  # fits the 8x8 input, not the 4x4 maps of the next block
            "model.kernel=16 is not allowed: at most 8 with model.padding=null on the 4x4 maps "
            "of conv block 2",
        ),
        (
            ["model.kernel=12", "model.padding=3", "model.channels=[4]"],
            "model.kernel=12 is not allowed: at most 11 with model.padding=3",
        ),
        (["model.padding=100"], "model.padding=100 is not allowed: null or 0 to 4"),
        (["model.pool=1000"], "model.pool=1000 is not allowed: at most 8,"),
        (["model.channels=[4,4,4,4]"], "model.channels=[4,4,4,4] is not allowed: at most 3"),
    ],
)
def test_a_cnn_too_large_for_its_input_is_refused_before_it_is_built(tmp_path, overrides, says):
    line = refused("summary", "model=cnn", "data=digits", *overrides, cwd=tmp_path)
    assert line.startswith(f"regexp summary: error: {says}")


def test_a_cnn_whose_kernel_only_sees_padding_never_trains(tmp_path):
    line = refused(
        "train", "model=cnn", "data=digits", "model.kernel=1000", "hydra.run.dir=run",
        cwd=tmp_path, writes=True,
    )  # fmt: skip
    assert line.startswith("regexp train: error: model.kernel=1000 is not allowed: at most 16")
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_the_largest_kernel_allowed_builds_and_runs(compose):
    conf = compose("model=cnn", "model.kernel=8", "model.channels=[2,2]")  # 8x8 -> 9 -> 4 -> 5
    net = models.build(conf.model, conf.norm, (1, 8, 8), 10)
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


# --- config groups and dirs -------------------------------------------------------------------

DATA_OPTIONS = (
    "cifar10, circles, digits, fashion_mnist, gauss, mnist, moons, spiral, toy_regression, xor"
)


@pytest.mark.parametrize("command", ["train", "summary"])
@pytest.mark.parametrize(
    ("override", "shown"),
    [
        ("data=null", "data=null"),
        ("data=../train", "data=../train"),
        ("data=/etc/passwd", "data=/etc/passwd"),
        ("data=5", "data=5"),
        ("data=[moons,circles]", "data=[moons,circles]"),
    ],
)
def test_a_group_override_that_names_no_option_says_the_groups_options(
    tmp_path, command, override, shown
):
    line = refused(command, override, cwd=tmp_path)
    assert line.startswith(f"regexp {command}: error: {shown}: no such option (options: ")
    assert DATA_OPTIONS in line


def test_a_sweep_over_a_group_with_a_null_names_it(tmp_path):
    line = refused("train", "-m", "data=moons,null", cwd=tmp_path)
    assert line == f"regexp train: error: data=null: no such option (options: {DATA_OPTIONS})"


@pytest.mark.parametrize("override", ["hydra/launcher=null", "hydra/sweeper=5"])
def test_a_hydra_group_override_that_names_no_option_says_where_they_are(tmp_path, override):
    line = refused("train", "-m", override, "seed=0,1", cwd=tmp_path)
    assert line == (
        f"regexp train: error: {override}: no such option; a group's choice is the name of one "
        f"of its options ({override.split('=')[0]}=NAME; regexp train --hydra-help lists them)"
    )


def test_an_experiment_that_is_null_lists_the_experiments(tmp_path):
    line = refused("summary", "+experiment=null", cwd=tmp_path)
    assert line.startswith("regexp summary: error: experiment=null: no such option (options: ")
    assert "bias_variance, " in line


@pytest.mark.parametrize(
    "override", ["hydra.run.dir={file}/run", "hydra.run.dir={file}", "+hydra.run.dir={file}/a/b"]
)
def test_a_run_dir_under_a_file_is_refused_naming_the_key(tmp_path, override):
    (tmp_path / "somefile").write_text("mine")
    override = override.format(file=tmp_path / "somefile")
    key, _, path = override.lstrip("+").partition("=")
    line = refused("train", override, "train.epochs=1", cwd=tmp_path)
    assert line == (
        f"regexp train: error: {key}={path} is not allowed: a dir that can be made there: "
        f"{tmp_path / 'somefile'} is a file"
    )
    assert (tmp_path / "somefile").read_text() == "mine"


def test_a_sweep_dir_under_a_file_is_refused_naming_the_key(tmp_path):
    (tmp_path / "somefile").write_text("mine")
    sweep = tmp_path / "somefile" / "sweep"
    line = refused("train", "-m", f"hydra.sweep.dir={sweep}", "seed=0,1", cwd=tmp_path)
    assert line == (
        f"regexp train: error: hydra.sweep.dir={sweep} is not allowed: a dir that can be made "
        f"there: {tmp_path / 'somefile'} is a file"
    )


def test_the_default_run_dir_under_a_file_ends_in_one_line_naming_it(tmp_path):
    (tmp_path / "outputs").write_text("mine")  # conf/train.yaml's runs go to outputs/<date>/
    done = regexp("train", "train.epochs=1", cwd=tmp_path, check=False)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("regexp train: error: cannot use outputs/")
    assert done.stderr.strip().endswith(": Not a directory")


# --- memory: refused before allocating, naming the key and the size ---------------------------


@pytest.fixture
def free_16_gb(monkeypatch):
    """A machine with 16 GB free, whatever this one has: the sizes below need more."""
    monkeypatch.setattr(memory, "free_memory", lambda device: 16 * 2**30)


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (
            ["data.n_train=2000000000"],
            "data.n_train=2000000000 is not allowed: a size that fits: making data=toy_regression "
            "with 2,000,000,000 training and 10 valid examples needs about 44.7 GB, and the "
            "machine has 16 GB free",
        ),
        (
            ["data=moons", "data.n_train=1000000000"],
            "data.n_train=1000000000 is not allowed: a size that fits: making data=moons with "
            "1,000,000,000 training and 1,000 valid examples needs about 44.7 GB",
        ),
        (
            ["data=spiral", "data.n_valid=1000000000"],
            "data.n_valid=1000000000 is not allowed: a size that fits: making data=spiral",
        ),
        (
            ["model.hidden=[100000,100000]"],
            "model.hidden=[100000,100000] is not allowed: a size that fits: the run needs about "
            "149 GB (10,000,400,001 parameters), and cpu has 16 GB free",
        ),
        (
            ["data=digits", "model=cnn", "model.channels=[200000]"],
            "model.channels=[200000] is not allowed: a size that fits: the run needs about 87.2 GB "
            "(the activations of a batch of 1,438 through a model of 101,211,134 parameters)",
        ),
        (
            ["data=digits", "model=cnn", "model.head=[10000000000]"],
            "model.head=[10000000000] is not allowed: a size that fits: the run needs about",
        ),
        (
            ["data.n_train=10000000"],
            "data.n_train=10000000 is not allowed: a size that fits: the run needs about 89.5 GB "
            "(the activations of a batch of 10,000,000 through a model of 81,001 parameters), and "
            "cpu has 16 GB free; a train.batch_size of at most 1,787,944 fits",
        ),
        (
            ["data.n_train=10000000", "train.batch_size=5000000"],
            "train.batch_size=5000000 is not allowed: a size that fits: the run needs about "
            "44.7 GB",
        ),
    ],
)
def test_a_run_too_large_for_memory_is_refused_before_allocating(
    free_16_gb, tmp_path, overrides, says
):
    line = refused("train", *overrides, "hydra.run.dir=run", cwd=tmp_path, writes=True)
    assert line.startswith(f"regexp train: error: {says}")
    assert not (tmp_path / "run" / "metrics.csv").exists()


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["data.n_train=2000000000"], "data.n_train=2000000000 is not allowed: a size that fits"),
        (["model.hidden=[10000000000]"], "model.hidden=[10000000000] is not allowed: a size that"),
        (
            ["data=digits", "model=cnn", "model.channels=[20000000]"],
            "model.channels=[20000000] is not allowed: a size that fits: the model needs about",
        ),
    ],
)
def test_summary_of_a_model_too_large_to_build_is_refused(free_16_gb, tmp_path, overrides, says):
    line = refused("summary", *overrides, cwd=tmp_path)
    assert line.startswith(f"regexp summary: error: {says}")


def test_summary_shows_a_model_that_trains_nowhere_here_but_builds(free_16_gb, tmp_path):
    done = regexp("summary", "data=digits", "model=cnn", "model.channels=[200000]", cwd=tmp_path)
    assert "Total params: 101,211,134" in done.stdout  # (two examples' activations fit)


def test_a_float_where_a_count_goes_is_refused_naming_the_key(tmp_path):
    line = refused("train", "data.n_train=2e9", cwd=tmp_path)
    assert line.startswith("regexp train: error: data.n_train=2000000000.0: Value ")


@pytest.mark.parametrize(
    ("files", "room"),
    [
        ({"0::/job": "", "job/memory.max": "max"}, math.inf),
        (
            {
                "0::/job": "",
                "job/memory.max": "4000",
                "job/memory.current": "3000",
                "job/memory.stat": "anon 2500\ninactive_file 500\n",
            },
            1500,
        ),
        (
            {
                "4:memory:/slurm/job_1": "",
                "memory/slurm/job_1/memory.limit_in_bytes": "4000",
                "memory/slurm/job_1/memory.usage_in_bytes": "3000",
                "memory/slurm/job_1/memory.stat": "total_inactive_file 1000\n",
            },
            2000,
        ),
        (  # a container: its own cgroup is the root of the mount
            {
                "4:memory:/docker/abc": "",
                "memory/memory.limit_in_bytes": "9223372036854771712",
                "memory/memory.usage_in_bytes": "3000",
                "memory/memory.stat": "",
            },
            math.inf,
        ),
        ({"1:cpu:/": ""}, math.inf),
    ],
)
def test_the_memory_free_is_within_the_cgroups_limit(monkeypatch, tmp_path, files, room):
    own = [line for line in files if ":" in line]
    (tmp_path / "cgroup").write_text("\n".join(own) + "\n")
    for name, text in files.items():
        if name not in own:
            (tmp_path / "fs" / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "fs" / name).write_text(text)
    monkeypatch.setattr(memory, "OWN_CGROUPS", tmp_path / "cgroup")
    monkeypatch.setattr(memory, "CGROUPS", tmp_path / "fs")
    assert memory._cgroup_room() == room
    assert memory.free_memory(torch.device("cpu")) <= room


# --- an Optuna search: checked before its first trial -----------------------------------------

SEARCH = ["train", "hparams_search=optuna", "hydra.sweep.dir=sweep", "train.epochs=2"]


@pytest.mark.parametrize(
    ("override", "says"),
    [
        (
            "optim.lr=interval(0.1,0.001)",
            "optim.lr=interval(0.1,0.001) is not allowed: a range from low to high: 0.1 > 0.001",
        ),
        (
            "optim.lr=tag(log,interval(0,0.1))",
            "optim.lr=tag(log,interval(0,0.1)) is not allowed: a log interval from a value > 0",
        ),
        (
            "model.dropout=interval(0.5,1.5)",
            "model.dropout=interval(0.5,1.5) is not allowed: a search space of allowed values; "
            "at 1.5: model.dropout=1.5 is not allowed: a probability p with 0 <= p < 1",
        ),
        (
            'hydra.sweeper.params={model.dropout:"interval(0,1.2)"}',
            "hydra.sweeper.params.model.dropout=interval(0,1.2) is not allowed: a search space "
            "of allowed values; at 1.2: model.dropout=1.2 is not allowed",
        ),
        (
            "model.dropout=choice(0.1,1.5)",
            "model.dropout=choice(0.1,1.5) is not allowed: a search space of allowed values; at "
            "1.5: model.dropout=1.5",
        ),
        (
            "train.batch_size=range(8,2)",
            "train.batch_size=range(8,2) is not allowed: a range from low to high: 8 > 2",
        ),
        (
            "train.batch_size=choice(0,8)",
            "train.batch_size=choice(0,8) is not allowed: a search space of allowed values; at "
            "0: train.batch_size=0 is not allowed",
        ),
        (  # (Hydra's interval is of floats: every trial would fail)
            "train.batch_size=interval(1,8)",
            "train.batch_size=interval(1,8) is not allowed: a search space of allowed values; at "
            "1.0: train.batch_size=1.0: Value '1.0' of type 'float' could not be converted",
        ),
        ("hydra.sweeper.n_trials=0", "hydra.sweeper.n_trials=0 is not allowed: an integer >= 1"),
        ("hydra.sweeper.n_trials=-3", "hydra.sweeper.n_trials=-3 is not allowed: an integer >= 1"),
        ("hydra.sweeper.n_jobs=0", "hydra.sweeper.n_jobs=0 is not allowed: an integer >= 1"),
        (
            "hydra.sweeper.max_failure_rate=2",
            "hydra.sweeper.max_failure_rate=2.0 is not allowed: a share from 0 to 1",
        ),
        (
            "hydra.sweeper.direction=sideways",
            "hydra.sweeper.direction=sideways is not allowed: minimize or maximize (each run "
            "returns one value: its best valid loss)",
        ),
        (
            "hydra.sweeper.direction=[minimize,maximize]",
            "hydra.sweeper.direction=[minimize,maximize] is not allowed: minimize or maximize",
        ),
    ],
)
def test_an_optuna_search_that_cannot_work_is_refused_before_its_first_trial(
    tmp_path, override, says
):
    line = refused(*SEARCH, override, cwd=tmp_path)  # (nothing written: no sweep dir)
    assert line.startswith(f"regexp train: error: {says}")


def test_an_optuna_search_of_allowed_spaces_runs(tmp_path):
    regexp(
        *SEARCH,
        "hydra.sweeper.n_trials=2",
        "model.dropout=interval(0,0.9)",
        "train.batch_size=choice(4,8)",
        "log.figure_every=0",
        cwd=tmp_path,
    )
    assert len([p for p in (tmp_path / "sweep").iterdir() if p.is_dir()]) == 2
