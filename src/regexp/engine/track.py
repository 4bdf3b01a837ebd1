"""Everything a run records: TensorBoard events, metrics.csv, summary.json, the console.

Each epoch costs one TensorBoard event (all its scalars together), one CSV row and, at most
ten times a second, a console update; histograms and figures come when their hooks ask
(hooks.Histograms, hooks.LiveFigures). A lesson-24 epoch takes well under a millisecond, so the
recording is where the loop's speed is decided: events are written synchronously into a
buffered file, with tensorboardX's record writer (whose CRC is in C with the crc32c package),
and flushed every few seconds. A SummaryWriter would hand each event to a background process
queue, which costs more than the epoch. Figures take tens of milliseconds to draw, so the
loop only computes what they show and a child process draws them (render.py); their PNGs come
back while the run trains and go into TensorBoard's Images tab at their epochs.

Why it is long: a run's whole record is written here (TensorBoard, CSV, JSON, the console, a
population's progress line), so that what goes into which file, and when, is in one place.
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from regexp.adapters import tensorboardx
from regexp.adapters.tensorboardx import Event, EventsWriter, SessionLog, Summary
from regexp.adapters.tensorboardx import summaries as tb
from regexp.components.models import weights
from regexp.console import epochs_bar
from regexp.run import rundir

if TYPE_CHECKING:
    from regexp.figures.plots import Plot
    from regexp.figures.render import Animation

log = logging.getLogger("regexp")


# The lessons' "Loss_group" view: train and valid in one chart each, over the runs ticked
# (accuracy only where a run has it: a chart without data is clutter).
LOSSES = {"loss": ["Multiline", ["loss/train", "loss/valid"]]}
ACCURACY = {"accuracy": ["Multiline", ["acc/train", "acc/valid"]]}


def layout(classify: bool) -> dict:
    """The custom-scalars layout of a run: its losses, and its accuracy when it classifies."""
    return {"train vs valid": {**LOSSES, **(ACCURACY if classify else {})}}


# Metrics that HParams shows, from the run's scalars' tags, the first five in sorted order.
GAP, BEST_VALID = "loss/gap", "loss/best_valid"

HISTOGRAM_BINS = 30  # what TensorBoard's histogram view resamples to anyway
FLUSH_SECONDS = 5  # how stale the files on disk may get while a run goes on


class Tracker:
    """Records one run into `run_dir`, from `start_epoch` on; `close` ends the record."""

    def __init__(
        self,
        run_dir: Path,
        *,
        epochs: int,
        hparams: dict,
        figure: Plot | None = None,
        classify: bool = False,
        start_epoch: int = 0,
        progress: bool = True,
        logger: logging.Logger | None = None,
    ):
        """With `figure`, the run's live figure is drawn as `draw` asks. With `logger` (a
        member's own log file), its epoch lines go there rather than to regexp's log, with or
        without `progress`."""
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.epochs, self.figure = epochs, figure
        self._animation: Animation | None = None
        self._drawn_epoch: int | None = None
        self.start_epoch = self.epoch = start_epoch
        self.history: list[dict[str, float]] = []
        self.best: dict[str, float] | None = None
        self.started = time.perf_counter()

        # The event file sits in the run dir itself, so TensorBoard names the run by its folder.
        # A resumed run adds a file; its suffix keeps it apart from (and sorted after) one made
        # in the same second, which would otherwise share its name. TensorBoard reads a run's
        # files in the order of their names: the start epoch has a fixed width, so that a
        # resume from epoch 10 sorts after one from 3 made in the same second (whose restart
        # would otherwise hide the later one's epochs).
        suffix = f".{start_epoch:09d}" if start_epoch else ""
        self._events = EventsWriter(rundir.events_prefix(self.run_dir), suffix)
        self._columns: list[str] = []  # metrics.csv's, fixed by its header
        if start_epoch == 0:
            self.write(tb.custom_scalars(layout(classify)))
            # The session's hparams only, no experiment summary: TensorBoard then builds the
            # experiment from every run's values, and ticks the keys whose values differ
            # (it would take one run's own summary, in which none differs).
            self.write(tb.hparams(hparams, {})[1])
            self._csv_file = rundir.open_metrics(self.run_dir, "w")
        else:
            self._resume(start_epoch)
        self._csv = csv.writer(self._csv_file)

        self.console = Console()
        self._progress = None
        if progress and self.console.is_terminal:
            self._progress = epochs_bar(self.console)
            self._task = self._progress.add_task(
                "epoch", total=epochs, completed=start_epoch, losses=""
            )
            self._progress.start()
        self._pending: list[tuple[int, dict[str, float]]] = []
        self._last_update = self._last_flush = time.perf_counter()
        self._every = max(1, epochs // 10)  # plain lines when not on a terminal
        # Epoch lines: a member's to its own log always; a lone run's to regexp's log where it
        # draws no bar.
        self.log = logger or log
        self.log_lines = logger is not None or (progress and self._progress is None)
        if self.figure is not None:
            self._animation = _animate(self.figure, self.run_dir, start_epoch)

    def _resume(self, start_epoch: int) -> None:
        """Go on from `start_epoch`: the epochs after it are dropped from metrics.csv, and from
        TensorBoard by a session-start event there, since the resumed run trains them again."""
        header, rows = rundir.metrics_up_to(self.run_dir, start_epoch)
        if header:
            # The kept rows replace the file at once (a temp file, then a rename): a kill or a
            # full disk mid-write leaves the old record whole, for the next resume to cut.
            rundir.replace_metrics(self.run_dir, [header, *rows])
        self._csv_file = rundir.open_metrics(self.run_dir, "a" if header else "w")
        if header:
            self._columns = header[1:]
            for row in rows:
                cells = zip(header[1:], row[1:], strict=True)
                self._remember(int(row[0]), {k: float(v) for k, v in cells if v != ""})
        restart = Event(wall_time=time.time(), step=start_epoch + 1)
        restart.session_log.status = SessionLog.START
        self._events.write_event(restart)
        self.started -= rundir.seconds_spent(self.run_dir)  # the time already spent counts

    def _remember(self, epoch: int, metrics: dict[str, float]) -> None:
        self.history.append(metrics)
        if self.best is None or metrics["valid_loss"] < self.best["valid_loss"]:
            self.best = {"epoch": epoch, **metrics}

    def write(self, summary: Summary, step: int = 0) -> None:
        """Append one TensorBoard event holding `summary` at `step`."""
        self._events.write_event(Event(wall_time=time.time(), step=step, summary=summary))

    def flush(self) -> None:
        """Everything recorded so far onto disk (where a killed process cannot lose it)."""
        self._write_pending()
        self._events.flush()
        self._csv_file.flush()

    # --- per epoch -------------------------------------------------------------------------

    def log_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Record one epoch. Events and CSV rows are written in batches, ten times a second:
        Python work between two training steps runs with cold caches and costs several
        times what it costs in a batch."""
        self.epoch = epoch
        self._pending.append((epoch, metrics))
        now = time.perf_counter()
        if now - self._last_update > 0.1 or epoch == self.epochs:
            self._last_update = now
            self._write_pending()
            if self._progress is not None:
                losses = f"train {metrics['train_loss']:.4g}  valid {metrics['valid_loss']:.4g}"
                self._progress.update(self._task, completed=epoch, losses=losses)
            if now - self._last_flush > FLUSH_SECONDS:
                self._last_flush = now
                self.flush()

    def _derived(self, metrics: dict[str, float]) -> list[tuple[str, float]]:
        """TensorBoard's alone: the gap (valid minus train loss) and the best valid loss so
        far, whose last values HParams shows as metrics beside the final losses."""
        gap = metrics["valid_loss"] - metrics["train_loss"]
        return [(GAP, gap), (BEST_VALID, self.best["valid_loss"])]

    def _write_pending(self) -> None:
        if self._animation is not None and self._log_images(self._animation.images()):
            self.flush()  # where TensorBoard sees the figure while the run trains
        for epoch, metrics in self._pending:
            self._remember(epoch, metrics)
            values = [Summary.Value(tag=rundir.tag(k), simple_value=v) for k, v in metrics.items()]
            values += [Summary.Value(tag=t, simple_value=v) for t, v in self._derived(metrics)]
            self.write(Summary(value=values), epoch)
            if not self._columns:
                self._columns = list(metrics)
                self._csv.writerow(["epoch", *self._columns])
            # By column: an epoch without some metrics (weight stats) leaves those cells empty.
            self._csv.writerow([epoch, *(metrics.get(k, "") for k in self._columns)])
            if self.log_lines and (epoch % self._every == 0 or epoch == self.epochs):
                self.log.info(
                    "epoch %d/%d  train %.4g  valid %.4g",
                    epoch,
                    self.epochs,
                    metrics["train_loss"],
                    metrics["valid_loss"],
                )
        self._pending.clear()

    def log_histograms(self, model: nn.Module, epoch: int, grads: bool = True) -> None:
        """A histogram of every parameter and (with `grads`) of its gradient, read in one
        device sync."""
        tensors = {}
        for name, p in layer_names(model).items():
            tensors[f"weights/{name}"] = p.detach()
            if grads and p.grad is not None:
                tensors[f"grads/{name}"] = p.grad.detach()
        stats = []
        for t in tensors.values():
            t = t.flatten().float()
            lo, hi = torch.aminmax(t)
            # histc with its default bounds (0, 0) spans the data's own range [lo, hi].
            stats.append(
                torch.cat(
                    [
                        torch.stack([lo, hi, t.sum(), torch.dot(t, t)]),
                        torch.histc(t, HISTOGRAM_BINS),
                    ]
                )
            )
        bins = range(1, HISTOGRAM_BINS + 1)
        for (name, t), s in zip(tensors.items(), torch.stack(stats).cpu().tolist(), strict=True):
            lo, hi, total, squares, counts = s[0], s[1], s[2], s[3], s[4:]
            edges = [lo + (hi - lo) * i / HISTOGRAM_BINS for i in bins]
            self.write(
                tb.histogram_raw(name, lo, hi, t.numel(), total, squares, edges, counts), epoch
            )

    def log_image(self, tag: str, png: bytes, width: int, height: int, step: int) -> None:
        """One PNG image into TensorBoard's Images tab at `step`."""
        image = Summary.Image(height=height, width=width, colorspace=4, encoded_image_string=png)
        self.write(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    def draw(self, model: nn.Module, epoch: int) -> None:
        """Send the figure of `model` at `epoch` to be drawn."""
        if self._animation is not None:
            self._animation.frame(epoch, self.figure.predict(model))
            self._drawn_epoch = epoch

    def _log_images(self, images: list[tuple[int, bytes, int, int]]) -> int:
        for epoch, png, width, height in images:
            self.log_image(f"figures/{self.figure.name}", png, width, height, epoch)
        return len(images)

    # --- at the end ------------------------------------------------------------------------

    def close(
        self, status: str, model: nn.Module | None = None, weights_of: int | None = None, **extra
    ) -> dict:
        """Flush everything, draw the last figures, end TensorBoard's record, then write
        summary.json; returns the summary. `weights_of`: the epoch whose weights `model` holds,
        where it is not the last (early stopping restored the best): the last frame shows them
        under that epoch."""
        self._write_pending()
        if self._progress is not None:
            self._progress.stop()
        summary = {
            "status": status,
            "epochs": self.epoch,
            "final": self.history[-1] if self.history else {},
            "best": self.best or {},
            "seconds": round(time.perf_counter() - self.started, 3),
            **extra,
        }
        if model is not None:
            summary["weight_norm"] = weight_norm(model)
        self._csv_file.close()
        self._events.flush()
        # summary.json comes last: a run killed before it has not ended, and its resume writes
        # what is missing (the last figures, TensorBoard's end); one whose wait for its figures
        # is cut short (a second Ctrl-C) still writes it, the record above whole.
        try:
            if self._animation is not None:
                at = self.epoch if weights_of is None else weights_of
                if status != "failed" and model is not None and self._drawn_epoch != at:
                    self.draw(model, at)
                self._animation.close()
                self._log_images(self._animation.images(wait=True))
            self.write(_session_end(status))
        finally:
            self._events.close()
            rundir.write_summary(self.run_dir, summary)
        return summary

    def print_summary(self, summary: dict) -> None:
        table = Table()
        table.add_column("")
        table.add_column("final", justify="right")
        table.add_column(f"best (epoch {summary['best'].get('epoch', '-')})", justify="right")
        for key, value in summary["final"].items():
            best = summary["best"].get(key)
            table.add_row(key, _fmt(value), _fmt(best))
        self.console.print(table)
        params, norm = summary.get("params", "?"), _fmt(summary.get("weight_norm"))
        self.console.print(
            f"status [bold]{summary['status']}[/]  epochs {summary['epochs']}  "
            f"params {params:,}  weight norm {norm}  {summary['seconds']:.1f} s"
        )
        self.console.print(f"run dir {self.run_dir}", soft_wrap=True)


def _animate(figure: Plot, run_dir: Path, start_epoch: int) -> Animation | None:
    """The run's figure in the drawing process, or None (and a warning) where none starts."""
    from regexp.figures import render

    try:
        return render.renderer().open(figure.spec, run_dir, start_epoch)
    except OSError as exc:
        log.warning("figures off: the drawing process did not start (%s)", exc)
        return None


def layer_names(model: nn.Module) -> dict[str, nn.Parameter]:
    """The model's parameters named by their layer's kind and rank among the layers of that
    kind (`linear1.weight`, `batchnorm1d2.bias`), not by its place in the module list, which
    dropout layers shift: the same layer keeps its name across a dropout or norm sweep, and
    TensorBoard overlays it."""
    names, counts = {}, {}
    for module in model.modules():
        params = list(module.named_parameters(recurse=False))
        if not params:
            continue
        kind = type(module).__name__.lower()
        counts[kind] = counts.get(kind, 0) + 1
        for name, p in params:
            names[f"{kind}{counts[kind]}.{name}"] = p
    return names


def weight_norm(model: nn.Module) -> float:
    """The L2 norm of all weights of the Linear and Conv layers (no biases, no norm layers)."""
    with torch.no_grad():
        return float(torch.sqrt(sum((w.float() ** 2).sum() for w in weights(model))))


def _session_end(status: str) -> Summary:
    """TensorBoard's HParams session-end record, with the run's real status."""
    code = "STATUS_SUCCESS" if status == "completed" else "STATUS_FAILURE"
    content = tensorboardx.HParamsPluginData(
        session_end_info=tensorboardx.SessionEndInfo(status=tensorboardx.Status.Value(code))
    )
    meta = tensorboardx.SummaryMetadata(
        plugin_data=tensorboardx.SummaryMetadata.PluginData(
            plugin_name="hparams", content=content.SerializeToString()
        )
    )
    return Summary(value=[Summary.Value(tag="_hparams_/session_end_info", metadata=meta)])


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
