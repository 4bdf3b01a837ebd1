"""`regexp train` end to end, as subprocesses in a temp dir: what a run leaves behind."""

from __future__ import annotations

import csv

import pytest
from conftest import TINY, jobs_of, read_events, read_json, regexp


def test_toy_regression_run_writes_tensorboard_csv_and_summary(tmp_path):
    done = regexp(
        "train", *TINY, "log.hist_every=2", "hydra.run.dir=run", cwd=tmp_path, process=True
    )
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {
        "metrics.csv",
        "summary.json",
        "model.txt",
        ".hydra",
        "train.log",
    }
    assert "status completed" in done.stdout

    events = read_events(run)
    tags = events.Tags()
    for tag in ("loss/train", "loss/valid", "lr"):
        assert [s.step for s in events.Scalars(tag)] == [1, 2, 3, 4, 5]
    assert "acc/train" not in tags["scalars"]  # regression: no accuracy
    assert {"weights/linear1.weight", "grads/linear3.bias"} <= set(tags["histograms"])
    assert [h.step for h in events.Histograms("weights/linear1.weight")] == [0, 2, 4]
    plugins = set(events.PluginTagToContent("custom_scalars")) | set(
        events.PluginTagToContent("hparams")
    )
    assert "custom_scalars__config__" in plugins
    assert "_hparams_/session_start_info" in plugins and "_hparams_/session_end_info" in plugins

    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4", "5"]
    stats = ["weights_l2_norm", "weights_l1_norm", "weights_sparsity"]
    assert list(rows[0]) == ["epoch", "train_loss", "valid_loss", "lr", *stats]
    assert float(rows[-1]["valid_loss"]) == events.Scalars("loss/valid")[-1].value

    summary = read_json(run / "summary.json")
    assert summary["status"] == "completed" and summary["epochs"] == 5
    assert summary["final"]["valid_loss"] == float(rows[-1]["valid_loss"])
    assert min(float(r["valid_loss"]) for r in rows) == summary["best"]["valid_loss"]
    assert summary["params"] == 1 * 16 + 16 + 16 * 16 + 16 + 16 + 1
    assert summary["weight_norm"] > 0 and summary["seed"] == 0 and summary["seconds"] >= 0
    assert summary["overrides"] == [*TINY, "log.hist_every=2"]
    assert "Total params: 321" in (run / "model.txt").read_text()


def test_digits_run_logs_accuracy(tmp_path):
    regexp("train", "data=digits", "train.batch_size=64", *TINY, "hydra.run.dir=run", cwd=tmp_path)
    run = tmp_path / "run"
    events = read_events(run)
    for tag in ("acc/train", "acc/valid", "loss/train", "loss/valid"):
        assert len(events.Scalars(tag)) == 5
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    (config,) = events.Tensors(metadata.CONFIG_SUMMARY_TAG)
    layout = layout_pb2.Layout.FromString(config.tensor_proto.string_val[0])
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    assert charts == {"loss": ["loss/train", "loss/valid"], "accuracy": ["acc/train", "acc/valid"]}
    summary = read_json(run / "summary.json")
    assert 0.3 < summary["final"]["valid_acc"] <= 1  # 10 classes: well above chance
    assert summary["params"] == 64 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10


def test_a_sweeps_run_names_lead_with_the_setting_and_end_with_the_seed(tmp_path):
    """TensorBoard's sidebar cuts a run's name at its end: the setting comes first, the seed
    last (Hydra's order would put seed before train.*)."""
    regexp("train", "-m", "train.epochs=2", "model.hidden=[4]", "log.figure_every=0",
           "seed=0,1", "train.batch_size=8,16", "hydra.sweep.dir=sweep", cwd=tmp_path)  # fmt: skip
    assert [p.name for p in jobs_of(tmp_path / "sweep")] == [
        "batch_size=16,seed=0",
        "batch_size=16,seed=1",
        "batch_size=8,seed=0",
        "batch_size=8,seed=1",
    ]
    names = [p.name for p in (tmp_path / "sweep" / "settings").iterdir()]
    assert sorted(names) == ["batch_size=16", "batch_size=8"]


def test_runs_go_under_outputs_date_time_by_default(tmp_path):
    regexp("train", "train.epochs=2", cwd=tmp_path)
    (run,) = (tmp_path / "outputs").glob("*/*")
    assert run.parent.name.count("-") == 2 and run.name.count("-") == 2  # <date>/<time>
    assert (run / "summary.json").exists() and list(run.glob("events.out.tfevents.*"))


def test_a_2x2_sweep_gives_four_runs_named_by_what_was_swept(tmp_path):
    done = regexp(
        "train",
        "-m",
        *TINY,
        "model.dropout=0,0.5",
        "optim.weight_decay=0,1e-2",
        "hydra.sweep.dir=sweep",
        cwd=tmp_path,
        process=True,
    )
    names = [p.name for p in jobs_of(tmp_path / "sweep")]
    # What the sweep varies, sorted as Hydra's override_dirname is, each key by its shortest
    # ending: the values every job shares (model.hidden, train.epochs) stay out.
    assert names == [
        "dropout=0,weight_decay=0",
        "dropout=0,weight_decay=0.01",
        "dropout=0.5,weight_decay=0",
        "dropout=0.5,weight_decay=0.01",
    ], done.stdout
    for name in names:
        run = tmp_path / "sweep" / name
        assert read_json(run / "summary.json")["status"] == "completed"
        assert len(read_events(run).Scalars("loss/valid")) == 5
    summary = read_json(tmp_path / "sweep" / names[-1] / "summary.json")
    assert {"model.dropout=0.5", "optim.weight_decay=0.01"} <= set(summary["overrides"])


@pytest.mark.slow
def test_the_same_seed_gives_the_same_numbers(tmp_path):
    args = ["train", "data=digits", "train.batch_size=32", "model.dropout=0.3", *TINY]
    regexp(*args, "hydra.run.dir=a", cwd=tmp_path)
    regexp(*args, "hydra.run.dir=b", cwd=tmp_path)
    regexp(*args, "seed=1", "hydra.run.dir=c", cwd=tmp_path)
    a, b, c = ((tmp_path / d / "metrics.csv").read_text() for d in "abc")
    assert a == b
    assert a != c
