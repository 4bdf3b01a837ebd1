"""Training figures drawn in a child process while the run trains.

A figure takes tens of milliseconds to draw and encode, a lesson-24 epoch under one: drawn in
the training process, twenty of them would slow a 4000-epoch run by a quarter. So the loop
only computes the values to draw (`Plot.predict`) and hands them to a `Renderer`, one child
process per training process (a sweep's jobs share it), which imports matplotlib while the
parent imports torch, draws each frame on the other core (at a priority below training's)
and sends its PNG back for TensorBoard. At the end of a run it writes the last frame as
`<name>.png` and every frame as `<name>.gif` in the run dir. The child needs neither torch nor
the training code.

    parent                                 child (`serve`)
    open(sid, spec, run_dir, start) ──>    a Drawing for that run
    frame(sid, epoch, values)       ──>    draw ──> ("image", sid, epoch, png, width, height)
    close(sid)                      ──>    write PNG and GIF ──> ("closed", sid, error)
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
from pathlib import Path

from regexp import process
from regexp.run import rundir

log = logging.getLogger("regexp")

GIF_SECONDS = 0.3  # per frame; the last one stays 2 s
GIF_COLOURS = 32  # per frame: flat colours and a colour map (a boundary frame: ~25 KB)
# Beyond this many frames every other one is dropped (the first and last stay): a run that
# draws a figure every few epochs still leaves a GIF of a few MB at most.
GIF_FRAMES = 100
STALL_SECONDS = 120  # a run's end waits this long for a frame before it goes on without
EPOCHS_NOTE = b"regexp epochs: "  # the GIF's comment: each frame's epoch, to resume it


class Renderer:
    """The parent's end of the drawing process. Messages go out through a queue and a writer
    thread, so that the training loop never waits on a full pipe; replies come back through a
    reader thread into each run's queue."""

    def __init__(self):
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from regexp.figures import render; render.serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._out: queue.SimpleQueue = queue.SimpleQueue()
        self._inboxes: dict[int, queue.SimpleQueue] = {}
        self._next = 0
        self._ticks = 0  # its CPU time, as `working` last read it
        self.alive = True
        self._writer = threading.Thread(target=self._write, daemon=True, name="regexp-render-out")
        self._writer.start()
        threading.Thread(target=self._read, daemon=True, name="regexp-render-in").start()

    def _write(self) -> None:
        try:
            while (message := self._out.get()) is not None:
                pickle.dump(message, self._proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                self._proc.stdin.flush()
            self._proc.stdin.close()
        except (OSError, ValueError):  # the child is gone; the reader says so
            pass

    def _read(self) -> None:
        try:
            while True:
                message = pickle.load(self._proc.stdout)
                inbox = self._inboxes.get(message[1])
                if inbox is not None:
                    inbox.put(message)
        except (EOFError, OSError, pickle.UnpicklingError):
            pass
        self.alive = False
        for inbox in list(self._inboxes.values()):
            inbox.put(("closed", None, "the drawing process ended"))

    def send(self, *message) -> None:
        self._out.put(message)

    def working(self) -> bool:
        """Whether the drawing process used the CPU since this was last asked. At its idle
        priority it draws slowly where other work holds every core, which is no stall.
        (Read from Linux's /proc; elsewhere False: a stall is judged by the clock alone.)"""
        try:
            stat = Path(f"/proc/{self._proc.pid}/stat").read_text()
        except OSError:
            return False
        fields = stat.rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # user and system time
        moved, self._ticks = ticks != self._ticks, ticks
        return moved

    def open(self, spec: dict, run_dir: Path, start_epoch: int) -> Animation:
        self._next += 1
        sid = self._next
        self._inboxes[sid] = queue.SimpleQueue()
        self.send("open", sid, spec, str(run_dir), start_epoch)
        return Animation(self, sid, spec["kind"])

    def stop(self, wait: float = 1.0) -> None:
        """Let the child finish what it was sent and exit, waiting up to `wait` seconds (it
        also exits when this process does: its stdin closes)."""
        self._out.put(None)
        self._writer.join(wait)
        try:
            self._proc.wait(wait)
        except subprocess.TimeoutExpired:
            pass


class Animation:
    """One run's figure in the drawing process: send frames, collect their PNGs, close."""

    def __init__(self, renderer: Renderer, sid: int, name: str):
        self.renderer, self.sid, self.name = renderer, sid, name
        self._inbox = renderer._inboxes[sid]
        self.closed = False
        self.error: str | None = None

    def frame(self, epoch: int, values) -> None:
        if self.renderer.alive:
            self.renderer.send("frame", self.sid, epoch, values)

    def images(self, wait: bool = False) -> list[tuple[int, bytes, int, int]]:
        """The (epoch, png, width, height) of the frames drawn since the last call; with
        `wait`, all of them once the run's files are written (after `close`)."""
        done, waited = [], 0.0
        while not self.closed:
            try:
                # (A timeout, so that a second Ctrl-C interrupts the wait.)
                message = self._inbox.get(timeout=0.5) if wait else self._inbox.get_nowait()
            except queue.Empty:
                if not wait:
                    break
                waited += 0.5
                if self.renderer.working():  # slowly, on what other work leaves: no stall
                    waited = 0.0
                if not self.renderer.alive or waited > STALL_SECONDS:
                    how = "stalled" if self.renderer.alive else "ended"
                    self._fail(f"the drawing process {how}")
                    self.closed = True
                continue
            waited = 0.0
            kind, _, *rest = message
            if kind == "image":
                done.append(tuple(rest))
            elif kind == "error":
                self._fail(rest[0])
            elif kind == "closed":
                self.closed = True
                if rest[0]:
                    self._fail(rest[0])
                self.renderer._inboxes.pop(self.sid, None)
        return done

    def _fail(self, error: str) -> None:
        if self.error is None:
            log.warning("figure %s not drawn: %s", self.name, error)
        self.error = error

    def close(self) -> None:
        self.renderer.send("close", self.sid)


_renderer: Renderer | None = None


def renderer() -> Renderer:
    """This process's drawing process, started on first use: a pool of one, shared by the
    runs this process trains."""
    global _renderer
    if _renderer is None or not _renderer.alive:
        _renderer = Renderer()
        atexit.register(_renderer.stop)
    return _renderer


# --- the child ------------------------------------------------------------------------------


def serve() -> None:
    """The drawing process: read messages from stdin until it closes."""
    process.ignore_interrupts()
    process.yield_to_training()
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not reach the pipe
    import numpy as np

    from regexp.figures import plots

    # The first figure pays for matplotlib's import, its fonts and caches: pay now, while
    # the parent starts.
    x = np.array([[0.0], [1.0]])
    plots.FitDrawing({"kind": "fit", "points": [(x, x), (x, x)], "x": x[:, 0]}).frame(x, 0)

    runs: dict[int, Frames] = {}
    source = sys.stdin.buffer

    def reply(*message) -> None:
        try:
            pickle.dump(message, replies, protocol=pickle.HIGHEST_PROTOCOL)
            replies.flush()
        except BrokenPipeError:  # the parent is gone (killed): nobody to draw for
            os._exit(0)

    while True:
        try:
            kind, sid, *rest = pickle.load(source)
        except (EOFError, OSError):
            os._exit(0)  # everything is written; the teardown would only collect matplotlib
        try:
            if kind == "open":
                spec, run_dir, start_epoch = rest
                drawing = plots.DRAWINGS[spec["kind"]](spec)
                runs[sid] = Frames(drawing, rundir.figure_stem(run_dir, spec["kind"]), start_epoch)
            elif kind == "frame" and sid in runs:
                epoch, values = rest
                reply("image", sid, epoch, *runs[sid].add(epoch, values))
            elif kind == "close":
                frames = runs.pop(sid, None)
                if frames is not None:
                    frames.save()
                reply("closed", sid, None)
        except Exception as exc:  # one run's bad frame must not end the others' drawing
            reply("closed" if kind == "close" else "error", sid, f"{type(exc).__name__}: {exc}")
            if kind == "open":
                runs.pop(sid, None)


class Frames:
    """A run's frames: each drawn as a PNG for TensorBoard and kept, quantized, for the GIF.
    A resumed run starts from the GIF's frames up to its checkpoint's epoch."""

    def __init__(self, drawing, stem: Path, start_epoch: int):
        self.drawing, self.stem = drawing, stem
        self.frames: list[tuple[int, object]] = []
        self.png = b""
        if start_epoch:
            self.frames = [
                (e, f) for e, f in read_gif(stem.with_suffix(".gif")) if e <= start_epoch
            ]

    def add(self, epoch: int, values) -> tuple[bytes, int, int]:
        from PIL import Image

        picture = self.drawing.frame(values, epoch)
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG", compress_level=1)  # half the time of 6, ~5% larger
        self.png = buffer.getvalue()
        quantized = picture.quantize(GIF_COLOURS, method=Image.Quantize.FASTOCTREE)
        self.frames = [(e, f) for e, f in self.frames if e != epoch] + [(epoch, quantized)]
        if len(self.frames) > GIF_FRAMES:
            self.frames = self.frames[:-1:2] + self.frames[-1:]
        return self.png, picture.width, picture.height

    def save(self) -> None:
        if not self.frames:
            return
        if self.png:
            rundir.write_bytes(self.stem.with_suffix(".png"), self.png)
        epochs, pictures = zip(*self.frames, strict=True)
        buffer = io.BytesIO()
        pictures[0].save(
            buffer,
            format="GIF",
            save_all=True,
            append_images=list(pictures[1:]),
            duration=[int(GIF_SECONDS * 1000)] * (len(pictures) - 1) + [2000],
            loop=0,
            comment=EPOCHS_NOTE + ",".join(map(str, epochs)).encode(),
        )
        rundir.write_bytes(self.stem.with_suffix(".gif"), buffer.getvalue())


def read_gif(path: Path) -> list[tuple[int, object]]:
    """The (epoch, frame) pairs of a GIF that `Frames.save` wrote; [] for anything else."""
    from PIL import Image, ImageSequence

    try:
        with Image.open(path) as gif:
            note = gif.info.get("comment", b"")
            if not note.startswith(EPOCHS_NOTE):
                return []
            epochs = [int(e) for e in note[len(EPOCHS_NOTE) :].split(b",")]
            pictures = [f.convert("RGB").quantize(GIF_COLOURS) for f in ImageSequence.Iterator(gif)]
    except (OSError, ValueError):
        return []
    return list(zip(epochs, pictures, strict=False))
