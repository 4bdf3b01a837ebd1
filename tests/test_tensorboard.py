"""What TensorBoard shows of a sweep: HParams with the swept keys first and one type each,
histograms of the same layer under one tag in every run from epoch 0, the custom-scalars
layout; and the parts of tensorboardX the event writer relies on."""

from __future__ import annotations

import pytest
from conftest import jobs_of, read_events, regexp

SWEPT = ["model.dropout", "train.batch_size"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A 2x2 sweep: dropout shifts the layers' places in the net, a null batch size meets a
    number; and a list-valued key."""
    tmp = tmp_path_factory.mktemp("sweep")
    regexp(
        "train",
        "-m",
        "train.epochs=4",
        "log.hist_every=2",
        "log.figure_every=0",
        "model.dropout=0,0.5",
        "train.batch_size=null,4",
        "model.hidden=[4,4]",
        "hydra.sweep.dir=sweep",
        cwd=tmp,
    )
    return jobs_of(tmp / "sweep")


def test_hparams_show_the_swept_keys_with_one_type_and_the_metrics_that_answer(sweep):
    from tensorboard.plugins.hparams import api_pb2, backend_context, metadata

    contents = {}
    for run in sweep:
        tags = read_events(run).PluginTagToContent("hparams")
        assert metadata.EXPERIMENT_TAG not in tags  # TensorBoard builds it from all the runs
        contents[run.name] = tags
    # The experiment as TensorBoard's HParams plugin computes it, in the order it shows them.
    infos = backend_context.Context(None)._compute_hparam_infos(contents)
    experiment = api_pb2.Experiment(hparam_infos=infos)
    backend_context._sort_and_reduce_to_hparams_limit(experiment)
    # The swept keys alone (model.hidden, the same in every run, stays out): the columns.
    assert [i.name for i in experiment.hparam_infos] == SWEPT
    shown = {i.name: i for i in experiment.hparam_infos}
    assert all(shown[k].differs for k in SWEPT)
    assert shown["model.dropout"].type == api_pb2.DATA_TYPE_FLOAT64
    assert set(shown["train.batch_size"].domain_discrete) == {"null", "4"}
    for tags in contents.values():  # each key with the same type in every run
        start = metadata.parse_session_start_info_plugin_data(tags[metadata.SESSION_START_INFO_TAG])
        kinds = {k: v.WhichOneof("kind") for k, v in start.hparams.items()}
        assert kinds == {"model.dropout": "number_value", "train.batch_size": "string_value"}
    # Its metrics are the runs' scalar tags, of which it shows the first five in sorted order:
    # the best valid loss, the train-valid gap, the final losses.
    metrics = sorted({t for run in sweep for t in read_events(run).Tags()["scalars"]})
    assert metrics[:4] == ["loss/best_valid", "loss/gap", "loss/train", "loss/valid"]
    for run in sweep:
        events = read_events(run)
        train, valid = (events.Scalars(f"loss/{s}")[-1].value for s in ("train", "valid"))
        assert events.Scalars("loss/gap")[-1].value == pytest.approx(valid - train, rel=1e-6)
        best = min(e.value for e in events.Scalars("loss/valid"))
        assert events.Scalars("loss/best_valid")[-1].value == best


def test_a_lone_runs_hparams_hold_its_main_choices_and_overrides(tmp_path):
    from tensorboard.plugins.hparams import metadata

    regexp("train", "train.epochs=2", "model.hidden=[4,4]", "hydra.run.dir=run", cwd=tmp_path)
    tags = read_events(tmp_path / "run").PluginTagToContent("hparams")
    start = metadata.parse_session_start_info_plugin_data(tags[metadata.SESSION_START_INFO_TAG])
    assert {"data", "model", "norm", "optim.lr", "seed", "model.hidden"} <= set(start.hparams)
    assert start.hparams["model.hidden"].string_value == "[4,4]"


def test_histograms_name_a_layer_alike_across_a_dropout_sweep_from_epoch_0(sweep):
    tags = {}
    for run in sweep:
        events = read_events(run)
        tags[run.name] = set(events.Tags()["histograms"])
        assert [h.step for h in events.Histograms("weights/linear1.weight")] == [0, 2, 4]
        assert [h.step for h in events.Histograms("grads/linear1.weight")] == [2, 4]
    expected = {
        f"{kind}/linear{i}.{p}" for kind in ("weights", "grads") for i in (1, 2, 3)
        for p in ("weight", "bias")
    }  # fmt: skip
    assert all(names == expected for names in tags.values())  # with dropout layers or without


def test_custom_scalars_put_train_and_valid_loss_in_one_chart(sweep):
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    (config,) = read_events(sweep[0]).Tensors(metadata.CONFIG_SUMMARY_TAG)
    layout = layout_pb2.Layout.FromString(config.tensor_proto.string_val[0])
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    assert charts["loss"] == ["loss/train", "loss/valid"]


def test_scalars_hold_the_metrics_alone_and_a_chart_exists_only_where_its_data_does(sweep):
    """No layout tags of a run's own among the Scalars (a 60-run sweep once listed 252 of
    them above the loss charts), and no accuracy chart for a regression."""
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    for run in sweep:
        events = read_events(run)
        assert {t.split("/")[0] for t in events.Tags()["scalars"]} <= {"loss", "lr", "weights"}
        (config,) = events.Tensors(metadata.CONFIG_SUMMARY_TAG)
        layout = layout_pb2.Layout.FromString(config.tensor_proto.string_val[0])
        assert [c.title for cat in layout.category for c in cat.chart] == ["loss"]


def test_the_tensorboardx_parts_the_event_writer_relies_on(tmp_path):
    """track.py writes events through tensorboardX's record writer and protos, not its
    SummaryWriter: a release that moves them fails here, not in a user's run."""
    import crc32c
    from tensorboardX import record_writer
    from tensorboardX import summary as tb
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import Event, SessionLog
    from tensorboardX.proto.summary_pb2 import Summary

    from regexp.engine import track

    assert record_writer.crc32c is crc32c.crc32c  # the checksum in C, not in Python
    writer = EventsWriter(str(tmp_path / "events"), ".x")
    restart = Event(wall_time=1.0, step=1)
    restart.session_log.status = SessionLog.START
    writer.write_event(restart)
    values = [Summary.Value(tag="loss/train", simple_value=0.5)]
    for step, summary in enumerate(
        [
            Summary(value=values),
            tb.custom_scalars(track.layout(classify=True)),
            tb.hparams({"lr": 0.1, "norm": "bn"}, {})[1],
            tb.histogram_raw("weights/linear1.weight", 0, 1, 2, 1, 1, [0.5, 1], [1, 1]),
            track._session_end("completed"),
        ]
    ):
        writer.write_event(Event(wall_time=2.0, step=step, summary=summary))
    writer.flush()
    writer.close()
    (name,) = [p.name for p in tmp_path.iterdir()]
    assert name.startswith("events.out.tfevents.") and name.endswith(".x")
    events = read_events(tmp_path)
    assert events.Scalars("loss/train")[0].value == 0.5
    assert events.Histograms("weights/linear1.weight")[0].step == 3
    assert set(events.PluginTagToContent("hparams")) == {
        "_hparams_/session_start_info",
        "_hparams_/session_end_info",
    }
