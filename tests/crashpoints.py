"""Crash points: a command killed at its K-th write into a dir, as SQLite's tests kill theirs.

A write point is one call that changes what is on disk under the watched dir: a file opened
to write (which creates or empties it), each write that reaches the OS (a buffered file's
flush, a torch.save, a np.savez, an os.write), os.replace, os.rename, os.unlink, os.truncate,
os.ftruncate, os.fsync. Every process of the command counts them, through one counter file:
the command itself, the stacked launcher's fork server and workers, the drawing process (they
load this module at start through `sitecustomize`, from SITE). At point K the process doing
it kills itself with SIGKILL, as `kill -9` would: a write is cut half-way (the first half of
its bytes reach the file), anything else is not done; with `launcher`, the command's own
process is killed there instead (a stacked sweep's launcher, while its worker writes). Or,
with `dies=PATTERN`, a process dies at each point whose description matches (a worker that
dies every time it builds a population: a point of its set-up). Or,
with `full=K`, the disk is full from point K on: each write from there writes half its bytes
and fails with ENOSPC (fsync too).

`Commands` runs commands so: in children forked from one server process that has imported
torch, Hydra and regexp once (a command then costs its own work, not 1.5 s of imports), each
waited for with every process it started, which must end with it.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SITE = HERE / "crashpoints_site"  # its sitecustomize.py installs the points in new processes
PLAN = "REGEXP_TEST_CRASH_POINTS"  # the environment variable that carries the plan

_plan: dict = {}
_real: dict = {}


# --- in a command's processes --------------------------------------------------------------


def install(plan: dict) -> None:
    """Count (and at `plan["at"]`, crash at) the write points under `plan["watch"]`."""
    global _plan
    _plan = plan
    os.environ[PLAN] = json.dumps(plan)
    _register()
    if _real:
        return
    os.register_at_fork(after_in_child=_register)
    _real.update(
        open=builtins.open,
        replace=os.replace,
        rename=os.rename,
        unlink=os.unlink,
        remove=os.remove,
        truncate=os.truncate,
        ftruncate=os.ftruncate,
        fsync=os.fsync,
        write=os.write,
    )
    builtins.open = io.open = _open
    os.replace = lambda src, dst, **kw: _two("replace", src, dst, kw)
    os.rename = lambda src, dst, **kw: _two("rename", src, dst, kw)
    os.unlink = lambda path, **kw: _one("unlink", path, kw)
    os.remove = lambda path, **kw: _one("remove", path, kw)
    os.truncate = lambda path, length: _one("truncate", path, {}, length)
    os.ftruncate = lambda fd, length: _fd("ftruncate", fd, length)
    os.fsync = lambda fd: _fd("fsync", fd)
    os.write = _os_write
    if "torch" in sys.modules:
        _patch_torch()
    else:  # (a process that imports torch later: its save, once imported)
        sys.meta_path.insert(0, _TorchFinder())


def install_from_environment() -> None:
    if os.environ.get(PLAN):
        install(json.loads(os.environ[PLAN]))


def _register() -> None:
    """Note this process, which the command must not outlive."""
    with _real.get("open", builtins.open)(_plan["pids"], "a") as f:
        f.write(f"{os.getpid()}\n")


def _watched(path) -> str | None:
    """`path` as the points name it (relative to the watched dir), or None outside it."""
    if isinstance(path, int):
        return None
    full = os.path.abspath(os.fsdecode(path))
    watch = _plan["watch"]
    return os.path.relpath(full, watch) if full.startswith(watch + os.sep) else None


def _point(what: str, torn=None) -> None:
    """One write point: counted; at the planned one, this process dies (after `torn()`)."""
    fd = os.open(_plan["counter"], os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        n = int(os.pread(fd, 20, 0) or b"0") + 1
        os.pwrite(fd, str(n).encode().ljust(20), 0)
        line = f"{n} {os.getpid()} {what}\n".encode()
        log = os.open(_plan["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        _real["write"](log, line)
        os.close(log)
    finally:
        os.close(fd)
    dies = _plan.get("dies") and re.search(_plan["dies"], what)
    if n == _plan["at"] and _plan.get("launcher") and os.getpid() != _plan["root"]:
        os.kill(_plan["root"], signal.SIGKILL)  # the command's own process, another writing
    elif n == _plan["at"] or dies:
        if torn is not None:
            torn()
        os.kill(os.getpid(), signal.SIGKILL)
    if (
        _plan.get("full")
        and n >= _plan["full"]
        and what.split()[0] in ("write", "os.write", "fsync")
    ):
        if torn is not None:  # the disk fills mid-write: what fitted is written
            torn()
        import errno

        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), what.split()[-1])


def _two(name, src, dst, kw):
    a, b = _watched(src), _watched(dst)
    if a is not None or b is not None:
        _point(f"{name} {a} {b}")
    return _real[name](src, dst, **kw)


def _one(name, path, kw, *args):
    where = _watched(path)
    if where is not None:
        _point(f"{name} {where}")
    return _real[name](path, *args, **kw)


def _fd_path(fd: int) -> str | None:
    try:
        return _watched(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return None


def _fd(name, fd, *args):
    where = _fd_path(fd)
    if where is not None:
        _point(f"{name} {where}")
    return _real[name](fd, *args)


def _os_write(fd, data):
    where = _fd_path(fd)
    if where is not None and len(data):
        half = bytes(data)[: len(data) // 2]
        _point(f"os.write {len(data)}B {where}", lambda: _real["write"](fd, half))
    return _real["write"](fd, data)


class _Raw(io.FileIO):
    """A file's raw layer, which every write to the OS goes through."""

    def write(self, data):
        if len(data):
            half = bytes(data)[: len(data) // 2]
            _point(f"write {len(data)}B {self.where}", lambda: io.FileIO.write(self, half))
        return io.FileIO.write(self, data)


def _open(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None, closefd=True,
          opener=None):  # fmt: skip
    """`open`, as io.open builds a file, over a raw layer that counts, for a file to write
    under the watched dir."""
    where = None if not set("wax+") & set(mode) else _watched(file)
    if where is None:
        return _real["open"](file, mode, buffering, encoding, errors, newline, closefd, opener)
    _point(f"open {mode} {where}")
    raw = _Raw(file, "".join(c for c in "xrwa+" if c in mode), closefd, opener=opener)
    raw.where = where
    if buffering == 0:
        return raw
    size = io.DEFAULT_BUFFER_SIZE if buffering in (-1, 1) else buffering
    buffered = (io.BufferedRandom if "+" in mode else io.BufferedWriter)(raw, size)
    if "b" in mode:
        return buffered
    text = io.TextIOWrapper(buffered, io.text_encoding(encoding), errors, newline, buffering == 1)
    text.mode = mode
    return text


def _patch_torch() -> None:
    import torch

    real = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and _watched(f) is not None:
            with _open(f, "wb") as written:  # (torch writes a path in C++: uncounted)
                return real(obj, written, *args, **kwargs)
        return real(obj, f, *args, **kwargs)

    torch.save = torch.serialization.save = save


class _TorchFinder:
    """Patches torch.save once torch is imported."""

    def find_spec(self, name, path=None, target=None):
        if name != "torch":
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(name)
        loader_exec = spec.loader.exec_module

        def exec_module(module):
            loader_exec(module)
            _patch_torch()

        spec.loader.exec_module = exec_module
        return spec


# --- the server and its client (the test's process) ----------------------------------------


def serve() -> None:
    """Run the commands asked on stdin (a JSON line each) in forked children; answer each
    with a JSON line: its exit code, and the processes it left running."""
    import torch  # noqa: F401  (imported once, for every command)

    import regexp.cli  # noqa: F401
    import regexp.run.population  # noqa: F401
    import regexp.sweep.stacked  # noqa: F401

    replies = os.fdopen(os.dup(1), "w")
    for line in sys.stdin:
        ask = json.loads(line)
        child = os.fork()
        if child == 0:
            _command(ask)
        code = _wait_child(child, ask["plan"]["pids"], timeout=600)
        left = _wait_for(ask["plan"]["pids"], child, timeout=90)
        replies.write(json.dumps({"code": code, "left": left}) + "\n")
        replies.flush()


def _command(ask: dict) -> None:
    """In the forked child: the command, with its points, its output to a file."""
    out = os.open(ask["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(out, 1)
    os.dup2(out, 2)
    code = 1
    try:
        os.chdir(ask["cwd"])
        os.environ["PYTHONPATH"] = os.pathsep.join([str(SITE), os.environ["PYTHONPATH"]])
        install({**ask["plan"], "root": os.getpid()})
        sys.argv = ["regexp", *ask["args"]]
        from regexp import cli

        cli.entry()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _wait_child(child: int, pids_file: str, timeout: float) -> int:
    """The command's exit code; one that runs past `timeout` (a hang, which a test would not
    otherwise end) is killed with every process it started, its code then "timeout"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(child, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    for pid in {int(p) for p in Path(pids_file).read_text().split()} | {child}:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    os.waitpid(child, 0)
    return "timeout"


def _wait_for(pids_file: str, child: int, timeout: float) -> list[int]:
    """Wait until every process the command started has ended; returns those that have not."""
    deadline = time.monotonic() + timeout
    while True:
        pids = {int(p) for p in Path(pids_file).read_text().split()} - {child}
        alive = [p for p in pids if _alive(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # (a zombie has ended)
    except OSError:
        return False


class Commands:
    """`regexp` commands run in children of one server process, each counting (and with
    `at`, crashing at) its write points under `watch`."""

    def __init__(self, scratch: Path):
        self.scratch = scratch
        scratch.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
        env.pop("HYDRA_FULL_ERROR", None)
        env.pop(PLAN, None)
        self.server = subprocess.Popen(
            [sys.executable, "-c", "import crashpoints; crashpoints.serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.n = 0

    def run(
        self,
        args: list[str],
        cwd: Path,
        watch: Path,
        at: int = 0,
        full: int = 0,
        launcher=False,
        dies: str = "",
    ) -> Done:
        self.n += 1
        files = {k: str(self.scratch / f"{self.n}.{k}") for k in ("counter", "log", "pids")}
        Path(files["counter"]).write_text("0")
        for k in ("log", "pids"):
            Path(files[k]).write_text("")
        output = self.scratch / f"{self.n}.out"
        plan = {"watch": str(Path(watch).resolve()), "at": at, "full": full, "launcher": launcher}
        plan["dies"] = dies
        plan.update(files)
        ask = {"args": list(args), "cwd": str(cwd), "plan": plan, "output": str(output)}
        self.server.stdin.write(json.dumps(ask) + "\n")
        self.server.stdin.flush()
        reply = json.loads(self.server.stdout.readline())
        points = Path(files["log"]).read_text().splitlines()
        return Done(reply["code"], points, output.read_text(), reply["left"])

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(timeout=30)


class Done:
    """A command's exit code, its write points (`N PID what` each), its output, and the
    processes it left running."""

    def __init__(self, code: int, points: list[str], output: str, left: list[int]):
        self.code, self.points, self.output, self.left = code, points, output, left

    @property
    def killed(self) -> bool:
        return self.code == -signal.SIGKILL

    def __repr__(self) -> str:
        return f"Done(code={self.code}, points={len(self.points)}, left={self.left})"
