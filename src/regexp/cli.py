"""The `regexp` command: dispatch subcommands; turn a user error into one clear line, exit 2.

Heavy imports (torch, Hydra's app) happen inside the commands, so `regexp --help` is instant.
"""

from __future__ import annotations

import contextlib
import difflib
import math
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

        return shell.completion(args, COMMANDS, hydra_task)

    import hydra
    from omegaconf import OmegaConf

    from regexp import config

    if not OmegaConf.has_resolver("regexp_groups"):  # the group list of --help
        from regexp.shell import groups_help

        OmegaConf.register_new_resolver("regexp_groups", groups_help)
    app = hydra.main(version_base="1.3", config_path=str(config.conf_dir()), config_name="train")(
        hydra_task
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
        # Beside the first override: Hydra's parser takes its overrides as one run of
        # arguments, which a flag after them (`--cfg job`, `--info`) would end.
        at = next((i + 1 for i, a in enumerate(args) if "=" in a and a[0] != "-"), len(args))
        args = [*args[:at], *job_naming(args), *args[at:]]
        if stacked_in_workers(args):
            from regexp.sweep import stacked

            # The workers' fork server imports torch (3 s) while Hydra starts and composes.
            stacked.worker_context()
    config.check_group_choices(args)
    from regexp.run import rundir

    for arg in args:  # before Hydra makes the dir and writes its .hydra/ files there
        key, _, given = arg.lstrip("+").partition("=")
        if key in ("hydra.run.dir", "hydra.sweep.dir"):
            rundir.check_makeable(key, Path(given))
        if key == "hydra.run.dir":
            rundir.check_free(Path(given))
    from regexp.adapters import hydra as hydra_adapter
    from regexp.run import resume

    going_on = resume.resumed_sweep(args) if sweep else contextlib.nullcontext(resume.resumed(args))
    with (
        going_on as argv,
        hydra_adapter.command_line(["regexp train", *argv]),
        hydra_adapter.atomic_records(),
    ):
        app()
    return 0


def stacked_in_workers(args: list[str]) -> bool:
    """Whether the sweep `args` ask for will train in the stacked launcher's worker processes:
    its launcher (the default, or named), more than one core, n_jobs not 1, and jobs enough
    on the command line for two populations (the launcher's own rule). When in doubt, no:
    the launcher then starts its workers itself, a little later."""
    from regexp.sweep.stacked import early_workers

    launchers = [a.split("=", 1)[1] for a in args if a.startswith("hydra/launcher=")]
    one_job = any(a.lstrip("+").replace(" ", "") == "hydra.launcher.n_jobs=1" for a in args)
    if launchers not in ([], ["stacked"]) or one_job:
        return False
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        overrides = OverridesParser.create().parse_overrides(
            [a for a in args if "=" in a and not a.startswith("-")]
        )
        jobs = math.prod(
            len(list(o.sweep_string_iterator())) for o in overrides if o.is_sweep_override()
        )
    except Exception:  # (glob() needs the config; a bad override: Hydra says why, later)
        return False
    return early_workers(os.cpu_count() or 1, jobs) >= 2  # (n_jobs' default: a core each)


def hydra_task(cfg):
    """Hydra's task function. torch and the training code are imported only here, where a
    job runs: a parallel launcher's main process never needs them, and starts faster."""
    from omegaconf import OmegaConf

    from regexp.figures import render

    if cfg.log.figure_every and OmegaConf.get_type(cfg.data).figure:
        with contextlib.suppress(OSError):  # (the run says so, without figures)
            render.renderer()  # now: it imports matplotlib while this process imports torch
    from regexp.run import jobs

    return jobs.train_job(cfg)


def job_naming(args: list[str]) -> list[str]:
    """Checks a sweep's overrides before its dir is made, and returns the Hydra override that
    names its jobs' dirs. A sweep over no values (`seed='range(0)'`) would run no job and end
    as if it had run them all; a sweep over a key conf/train.yaml leaves out of the dir names
    (experiment, device, ...) would write every job to one dir: both refused. The override
    also leaves out the keys the command line fixes for every job (`data.n_train=64` beside
    `seed=0,1,2`), so that a name says what differs (config.job_dirname); none where the user
    names the dirs or a resumed sweep names them as it did."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    from regexp import config
    from regexp.errors import UserError

    named = any(a.startswith(("hydra.sweep.subdir=", "hydra.job.config.", "resume=")) for a in args)
    train_yaml = OmegaConf.load(config.conf_dir() / "train.yaml")
    excluded = list(train_yaml.hydra.job.config.override_dirname.exclude_keys)
    parser = OverridesParser.create()
    swept, fixed = set(), []
    for arg in args:
        try:
            override = parser.parse_override(arg)
        except HydraException:
            continue  # not an override; Hydra says what it is
        key = override.key_or_group
        if not override.is_sweep_override():
            if not key.startswith("hydra") and not override.is_delete():
                fixed.append(key)
            continue
        try:
            empty = not list(override.sweep_string_iterator())
        except Exception:  # (glob(), which needs the config: Hydra says what is wrong)
            empty = False
        if empty:
            raise UserError(
                f"{arg}: a sweep over no values, which would run no job; give it one at least"
            )
        if key in excluded and not named:
            raise UserError(
                f"{arg}: a sweep can't vary {key}, since its jobs' dirs are named without it "
                f"and would be one dir; run one sweep per value"
            )
        swept.add(key)
    if named:
        return []
    fixed = [k for k in dict.fromkeys(fixed) if k not in swept and k not in excluded]
    # Given always, even with no key to add: a resume knows the sweep's dirs by it
    # (resume.refuse_other_names).
    keys = ",".join(f"'{k}'" for k in excluded + fixed)
    return [f"hydra.job.config.override_dirname.exclude_keys=[{keys}]"]


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
    from regexp import config
    from regexp.components import data, models
    from regexp.run import memory, population

    conf = config.validate(config.compose(args))
    memory.check_data(conf.data)
    dataset = data.load(conf.data, conf.seed)
    memory.check_model(conf, dataset, dataset.x_train.device, training=False)
    model = population.build_model(conf, dataset)
    print(models.describe(model, dataset.in_shape))
    return 0


def report(args: list[str]) -> int:
    """`regexp report DIR...`: a table and figures from run dirs (reads files only)."""
    from regexp.analysis.report import report_main

    return report_main(args)


def probe(args: list[str]) -> int:
    """`regexp probe NAME`: the lessons' demonstrations that need no training."""
    from regexp.probes import probe_main

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

    # Hydra prints its own errors and exits 1 unless told to raise them: catch them here and
    # say them in one line. A user who set HYDRA_FULL_ERROR=1 gets the traceback.
    from regexp.adapters import hydra as hydra_adapter

    with hydra_adapter.raising_errors() as user_setting:
        return _command(name, args, user_setting)


def _command(name: str, args: list[str], user_setting: str | None) -> int:
    from regexp.errors import Ended

    try:
        return COMMANDS[name](args)
    except Ended as end:
        if end.error is None:
            return 1  # what happened is logged already
        if user_setting == "1":
            raise end.error from None
        print(f"regexp {name}: error: {error_line(str(end.error))}", file=sys.stderr)
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
        print(f"regexp {name}: error: {error_line(message)}", file=sys.stderr)
        return 2


LONGEST_ERROR = 1000  # characters of an error line: a value it quotes may be megabytes


def error_line(message: str) -> str:
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
    """Exit with `code` (an exit's value: None, a bool, an int or a message) at once
    (process.exit_now)."""
    from regexp import process

    if code is None or isinstance(code, bool):
        code = int(bool(code))
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    process.exit_now(code)
