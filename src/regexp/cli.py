"""The `regexp` command: dispatch subcommands; turn a user error into one clear line, exit 2.

Heavy imports (torch, Hydra's app) happen inside the commands, so `regexp --help` is instant.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import signal
import sys
from pathlib import Path

USAGE = """\
usage: regexp COMMAND [ARGS...]

Train models and watch regularization work: Hydra configs in, TensorBoard curves out.

commands:
  train [KEY=VALUE ...]      one training run (Hydra app: --help lists every group and key)
  train -m [KEY=V1,V2 ...]   a sweep, one run per combination
  report DIR...              a table (sorted by valid loss) and figures from runs or a sweep
  probe NAME [KEY=VALUE ...] a demonstration, no training: dropout, norm, depth, init, lr, optim
  summary [KEY=VALUE ...]    the composed model's layers and parameter counts, no training

examples:
  regexp train norm=bn optim.weight_decay=1e-2
  regexp train -m model.dropout=0,0.2,0.5 optim.weight_decay=0,1e-3,1e-2
  regexp report outputs/multirun/<date>/<time>
  tensorboard --logdir outputs

`regexp COMMAND --help` says more. `python -m regexp` is the same command.
"""


LONGEST_OVERRIDE = 10_000  # characters


def train(args: list[str]) -> int:
    """`regexp train`: Hydra's own command line, every flag passed through. A run or sweep that
    does not complete ends in `errors.Ended` (raised by the callback `outcomes.SweepReport`),
    which `main` turns into the exit code."""
    helps = {"-h", "--help"}
    if helps & set(args) and all(a in helps or not a.startswith("-") for a in args):
        from regexp import shell

        print(shell.train_help([a for a in args if a not in helps]))
        return 0
    if {"-sc", "--shell-completion"} & set(args):
        from regexp import shell

        return shell.completion(args, COMMANDS, train_job)

    import hydra
    from omegaconf import OmegaConf

    from regexp import config

    if not OmegaConf.has_resolver("regexp_groups"):  # the group list of --help
        from regexp.shell import groups_help

        OmegaConf.register_new_resolver("regexp_groups", groups_help)
    app = hydra.main(version_base="1.3", config_path=str(config.conf_dir()), config_name="train")(
        train_job
    )
    for arg in args:  # before Hydra copies it into .hydra/ and every error that quotes it
        if len(arg) > LONGEST_OVERRIDE:
            from regexp.errors import UserError

            raise UserError(
                f"{arg[:40]}...: an override of {len(arg):,} characters; at most "
                f"{LONGEST_OVERRIDE:,} (a list of a thousand widths is about 5,000)"
            )
    sweep = bool({"-m", "--multirun", "hydra.mode=MULTIRUN"} & set(args))
    if sweep:
        refuse_same_dirs(args)
    for given in (a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")):
        from regexp import rundir

        rundir.check_free(Path(given))  # before Hydra writes its .hydra/ files there
    with resumed_sweep(args) if sweep else contextlib.nullcontext(resumed(args)) as argv:
        sys.argv = ["regexp train", *argv]  # Hydra parses sys.argv
        app()
    return 0


def train_job(cfg):
    """Hydra's task function. torch and the training code are imported only here, where a
    job runs: a parallel launcher's main process never needs them, and starts faster."""
    from regexp import plots, render

    if cfg.log.figure_every and cfg.data.name in plots.DRAWN_DATA:
        with contextlib.suppress(OSError):  # (the run says so, without figures)
            render.renderer()  # now: it imports matplotlib while this process imports torch
    from regexp import jobs

    return jobs.train_job(cfg)


def refuse_same_dirs(args: list[str]) -> None:
    """A sweep job's dir is named by its overrides less the keys conf/train.yaml excludes
    (experiment, device, ...): a sweep over one of those would write every job to one dir."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from regexp import config
    from regexp.errors import UserError

    if any(a.startswith(("hydra.sweep.subdir=", "hydra.job.config.")) for a in args):
        return  # the user names the job dirs
    train_yaml = OmegaConf.load(config.conf_dir() / "train.yaml")
    excluded = set(train_yaml.hydra.job.config.override_dirname.exclude_keys)
    parser = OverridesParser.create()
    for arg in args:
        try:
            override = parser.parse_override(arg)
        except HydraException:
            continue  # not an override; Hydra says what it is
        if override.key_or_group in excluded and override.is_sweep_override():
            raise UserError(
                f"{arg}: a sweep can't vary {override.key_or_group}, since its jobs' dirs are "
                f"named without it and would be one dir; run one sweep per value"
            )


def resumed(args: list[str]) -> list[str]:
    """`resume=DIR` continues the run in DIR: its own overrides first, then the new ones, and
    Hydra's run dir set to DIR, so the run goes on where it was and nothing new is made."""
    from omegaconf import OmegaConf

    from regexp import rundir

    given = [a for a in args if a.startswith("resume=")]
    if not given:
        return args
    checkpoint = rundir.checkpoint_of(given[-1].split("=", 1)[1])
    run_dir = checkpoint.parent.resolve()
    rundir.check_free(run_dir)
    saved_file = run_dir / ".hydra" / "overrides.yaml"
    saved = list(OmegaConf.load(saved_file)) if saved_file.exists() else []
    # hparams_search only set up the sweep that made the run (a search, in multirun mode).
    drop = ("resume=", "hydra.run.dir=", "hparams_search=")
    keep = [o for o in saved if not o.lstrip("+~").startswith(drop)]
    new = [a for a in args if not a.startswith("resume=")]
    if not any(a.startswith("-") for a in new):  # (Hydra's flags: --cfg, --help, ...)
        refuse_changes(run_dir / checkpoint.name, keep, new, known=saved_file.exists())
    quoted = quote(run_dir)
    return [*once(keep + new), f"resume={quoted}", f"hydra.run.dir={quoted}"]


def quote(path: Path) -> str:
    """`path` quoted for Hydra's override grammar: a sweep job's dir name holds '=' and ','."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


@contextlib.contextmanager
def resumed_sweep(args: list[str]):
    """`regexp train -m resume=SWEEP_DIR`: yields the arguments that launch the sweep in
    SWEEP_DIR again, into its dir: the overrides that made it (its multirun.yaml), then the new
    ones, which only a resume's (RESUME_MAY_CHANGE) and the launcher's may be. Its jobs, told
    through the environment (which reaches any launcher's processes), each go on from where
    they are: rundir.resumed_sweep_job. `rerun_failed=true` reruns the failed ones too."""
    from omegaconf import OmegaConf

    from regexp import config, rundir
    from regexp.errors import ConfigError, UserError

    given = [a for a in args if a.startswith("resume=")]
    if not given:
        yield args
        return
    sweep = Path(given[-1].split("=", 1)[1])
    if not (sweep / "multirun.yaml").is_file():
        what = "no such dir" if not sweep.is_dir() else "it holds no multirun.yaml"
        raise ConfigError(
            "resume",
            str(sweep),
            f"with -m, the dir of a sweep to go on with ({what}); "
            "a run goes on without -m: regexp train resume=RUN_DIR",
        )
    new, rerun = [], False
    for arg in (a for a in args if not a.startswith(("-", "resume="))):
        key = arg.lstrip("+~").split("=", 1)[0]
        if key == "rerun_failed":
            rerun = arg.split("=", 1)[-1].lower() in ("true", "1", "yes")
        elif key.startswith((*RESUME_MAY_CHANGE, "hydra/launcher", "hydra.launcher.")):
            new.append(arg)
        else:
            raise UserError(
                f"{arg} is not allowed with -m resume={sweep}: the sweep goes on with its own "
                f"overrides; only {', '.join(k + '*' for k in RESUME_MAY_CHANGE)}, "
                "hydra/launcher, hydra.launcher.* and rerun_failed=true may be given"
            )
    saved = OmegaConf.load(sweep / "multirun.yaml").hydra.overrides
    saved = OmegaConf.to_container(saved, resolve=False)  # as given (its dir names one)
    task = [o for o in saved["task"] if not o.lstrip("+~").startswith("resume=")]
    hydra = [o for o in saved["hydra"] if not o.startswith("hydra.sweep.dir=")]
    added = [o for o in new if not o.startswith("hydra")]
    hydra = once(hydra + [o for o in new if o.startswith("hydra")])
    # Hydra's sweeper gives each job one value per key, the last: a job's dir would be named
    # by the new values. Each keeps its name, from the values the sweep started with (through
    # every later resume): `regexp_saved_dirname` (config.py) names it so.
    naming = "hydra.sweep.subdir=${regexp_saved_dirname:"
    subdir = [o for o in hydra if o.startswith("hydra.sweep.subdir=")]
    if added and (not subdir or subdir[-1].startswith(naming)):
        named = dict(config.parse_names(subdir[-1][len(naming) + 1 : -2])) if subdir else {}
        for key in (o.lstrip("+~").split("=", 1)[0] for o in added):
            first = [o for o in task if o.lstrip("+~").split("=", 1)[0] == key][:1]
            named.setdefault(key, first[0] if first else None)
        names = "|".join(line or key for key, line in named.items())
        hydra = [o for o in hydra if o not in subdir] + [f'{naming}"{names}"}}']
    told = {rundir.RESUMED_SWEEP: str(sweep.resolve()), rundir.RERUN_FAILED: "1" if rerun else ""}
    before = {k: os.environ.get(k) for k in told}
    os.environ.update(told)
    try:
        flags = [a for a in args if a.startswith("-")]
        yield [*flags, *task, *added, *hydra, f"hydra.sweep.dir={quote(sweep.resolve())}"]
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def once(overrides: list[str]) -> list[str]:
    """`overrides` with each key once, at its first place, with its last value: a run resumed
    again and again keeps one clean list."""

    def key(override: str) -> str:
        return override.lstrip("+~").split("=", 1)[0]

    last = {key(o): o for o in overrides}
    return list(dict.fromkeys(last[key(o)] for o in overrides))


# What may change when a run goes on; anything else would make it another run.
RESUME_MAY_CHANGE = ("train.epochs", "train.checkpoint_every", "device", "threads", "log.")


def refuse_changes(checkpoint, keep: list[str], new: list[str], known: bool = True) -> None:
    """Check a resume before Hydra rewrites anything in the run's dir: the run's config with the
    `new` overrides must pass every check, train past the checkpoint's epoch and, where the
    run's own config is `known`, differ from it only where RESUME_MAY_CHANGE allows; a cosine
    schedule spanning the run's epochs can't be extended."""
    from omegaconf import OmegaConf

    from regexp import config, run, rundir, train
    from regexp.errors import ConfigError, UserError

    def plain(overrides):
        return [o for o in overrides if not o.lstrip("+~").startswith("hydra")]

    before = config.flat(OmegaConf.to_container(config.compose(plain(keep))))
    after_cfg = config.compose(plain(keep + new))
    conf = config.validate(after_cfg)
    run.device_of(conf.device)  # (a device this machine lacks is refused before Hydra writes)
    run_dir = checkpoint.parent
    done = train.read_checkpoint(checkpoint)["epoch"]  # refused here if it is not one of ours
    rundir.check_more_epochs(conf.train.epochs, done, run_dir)
    if not known:  # a bare checkpoint: no record of the run's config to compare with
        return
    after = config.flat(OmegaConf.to_container(after_cfg))
    changed = [
        k
        for k in dict.fromkeys([*before, *after])
        if before.get(k) != after.get(k) and not k.startswith(RESUME_MAY_CHANGE)
    ]
    if changed:
        key = changed[0]
        given = [o for o in plain(new) if f"{key}.".startswith(o.lstrip("+~").split("=")[0] + ".")]
        raise UserError(
            f"{given[0] if given else key} is not allowed with resume={run_dir}: the run goes on "
            f"with its own config ({key}={before.get(key)}); only "
            f"{', '.join(k + '*' if k.endswith('.') else k for k in RESUME_MAY_CHANGE)} may change"
        )
    epochs = before["train.epochs"]
    if conf.sched.name == "cosine" and conf.sched.T_max is None and conf.train.epochs != epochs:
        raise ConfigError(
            "train.epochs",
            conf.train.epochs,
            f"{epochs} with resume={run_dir}: its cosine schedule spans the run's {epochs} epochs "
            "(sched.T_max=null) and would climb back past them; to extend runs later, start them "
            "with sched.T_max set",
        )


def summary(args: list[str]) -> int:
    """`regexp summary`: compose the same config as train, print the model's layer table."""
    if any(a in ("-h", "--help") for a in args):
        print(
            "usage: regexp summary [KEY=VALUE ...]\n\n"
            "Compose the config as `regexp train` would (same groups, same overrides) and print\n"
            "the model's layers, output shapes and parameter counts. Nothing is trained or\n"
            "written.\n"
            "example: regexp summary data=digits norm=bn model.hidden=[64,64]"
        )
        return 0
    from regexp import config, data, models, run

    conf = config.validate(config.compose(args))
    dataset = data.load(conf.data, conf.seed)
    model = run.build_model(conf, dataset)
    print(models.describe(model, dataset.in_shape))
    return 0


def report(args: list[str]) -> int:
    """`regexp report DIR...`: a table and figures from run dirs (reads files only)."""
    from regexp.report import main as report_main

    return report_main(args)


def probe(args: list[str]) -> int:
    """`regexp probe NAME`: the lessons' demonstrations that need no training."""
    from regexp.probes import main as probe_main

    return probe_main(args)


COMMANDS = {"train": train, "report": report, "probe": probe, "summary": summary}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if argv[0] == "--version":
        from importlib.metadata import version

        print(f"regexp {version('regexp')}")
        return 0
    name, args = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        print(
            f"regexp: unknown command '{name}'{hint} (commands: {', '.join(COMMANDS)}; "
            "see regexp --help)",
            file=sys.stderr,
        )
        return 2

    # Hydra prints its own errors and exits 1 unless HYDRA_FULL_ERROR=1, in which case it
    # raises: set it, catch here, and say it in one line. A user who set it gets the traceback.
    from regexp.errors import Ended

    user_setting = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        return COMMANDS[name](args)
    except Ended as end:
        if end.error is None:
            return 1  # what happened is logged already
        if user_setting == "1":
            raise end.error from None
        print(f"regexp {name}: error: {quoted(str(end.error))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"regexp {name}: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum
    except Exception as exc:
        from regexp.errors import user_error

        message = user_error(exc)
        if message is None or user_setting == "1":
            raise
        print(f"regexp {name}: error: {quoted(message)}", file=sys.stderr)
        return 2
    finally:
        if user_setting is None:
            del os.environ["HYDRA_FULL_ERROR"]
        else:
            os.environ["HYDRA_FULL_ERROR"] = user_setting


LONGEST_ERROR = 1000  # characters of an error line: a value it quotes may be megabytes


def quoted(message: str) -> str:
    """`message` as one line of at most LONGEST_ERROR characters."""
    line = " ".join(message.split())
    return (
        line
        if len(line) <= LONGEST_ERROR
        else line[: LONGEST_ERROR - 30] + f"... ({len(line):,} characters)"
    )


def entry() -> None:
    """The `regexp` console script and `python -m regexp`: `main`, then `leave`."""
    try:
        code = main()
    except SystemExit as exc:
        code = exc.code
    leave(code)


def leave(code) -> None:
    """Exit with `code` without the interpreter's teardown, whose garbage collection walks every
    object torch and matplotlib made (about half a second) to free memory the OS takes back at
    once. What must reach a file does first: the exit handlers (logging flushes and closes its
    files), then stdout and stderr. Where a thread Python would wait for still runs, or a
    profiler or tracer (coverage) would write its record at the exit, the normal exit, with
    the collector told to skip what exists (most of that half second)."""
    import atexit
    import gc
    import threading

    if code is None or isinstance(code, bool):
        code = int(bool(code))
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    gc.freeze()
    waits = [t for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]
    watched = sys.getprofile() is not None or sys.gettrace() is not None
    if waits or watched or not hasattr(atexit, "_run_exitfuncs"):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`regexp train --help | head`)
            pass
    os._exit(code)
