"""`resume=`: a run, or with -m a whole sweep, goes on from where it stopped: the overrides
that made it, read back from its dir, then the new ones, of which only what a resume may
change is allowed; checked before Hydra writes anything in the dir."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path


def resumed(args: list[str]) -> list[str]:
    """`resume=DIR` continues the run in DIR: its own overrides first, then the new ones, and
    Hydra's run dir set to DIR, so the run goes on where it was and nothing new is made."""
    from regexp.run import rundir

    given = [a for a in args if a.startswith("resume=")]
    if not given:
        return args
    checkpoint = rundir.checkpoint_of(given[-1].split("=", 1)[1])
    run_dir = checkpoint.parent.resolve()
    rundir.check_free(run_dir)
    saved_file = rundir.overrides_file(run_dir)
    saved = read_back(saved_file) if saved_file.exists() else []
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
    from regexp import config
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
        key = config.override_key(arg)
        if key == "rerun_failed":
            rerun = arg.split("=", 1)[-1].lower() in ("true", "1", "yes")
        elif key.startswith((*config.RESUME_MAY_CHANGE, "hydra/launcher", "hydra.launcher.")):
            new.append(arg)
        else:
            raise UserError(
                f"{arg} is not allowed with -m resume={sweep}: the sweep goes on with its own "
                f"overrides; only {', '.join(k + '*' for k in config.RESUME_MAY_CHANGE)}, "
                "hydra/launcher, hydra.launcher.* and rerun_failed=true may be given"
            )
    saved = {part: read_back(sweep / "multirun.yaml", part) for part in ("task", "hydra")}
    refuse_other_names(sweep, saved["hydra"])
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
        for key in map(config.override_key, added):
            first = [o for o in task if config.override_key(o) == key][:1]
            named.setdefault(key, first[0] if first else None)
        names = "|".join(line or key for key, line in named.items())
        hydra = [o for o in hydra if o not in subdir] + [f'{naming}"{names}"}}']
    from regexp import process

    with process.telling_jobs_of_resumed_sweep(str(sweep.resolve()), rerun):
        flags = [a for a in args if a.startswith("-")]
        yield [*flags, *task, *added, *hydra, f"hydra.sweep.dir={quote(sweep.resolve())}"]


def refuse_other_names(sweep: Path, hydra: list[str]) -> None:
    """A sweep whose jobs' dirs an earlier regexp named (every override, in Hydra's order)
    would go on in dirs of other names, each job starting anew: refused. Its multirun.yaml
    then lacks the naming the CLI gives every sweep (cli.job_naming), or the user's own."""
    from regexp.errors import UserError

    if not any(o.startswith(("hydra.job.config.", "hydra.sweep.subdir=")) for o in hydra):
        raise UserError(
            f"-m resume={sweep}: its jobs' dirs were named by an earlier regexp, whose names "
            "this one does not give; go on with each run alone, regexp train resume=RUN_DIR"
        )


# Hydra's settings that a run's or sweep's dir may bring back: none that names code to import
# or run (callbacks, a _target_, a config search path, logging handlers, environment
# variables, a Slurm job's shell lines). A group's choice may not be a path, which could
# reach a config file anywhere, naming any class.
READ_BACK = (
    "hydra.mode",
    "hydra.run.dir",
    "hydra.sweep.",
    "hydra.job.chdir",
    "hydra.job.name",
    "hydra.job.config.override_dirname.",
    "hydra.verbose",
    "hydra.launcher.",
    "hydra.sweeper.",
)
NOT_READ_BACK = ("hydra.launcher.setup",)


def read_back(path: Path, part: str | None = None) -> list[str]:
    """The overrides recorded in `path`: a run's .hydra/overrides.yaml (a list), or with `part`
    its list at hydra.overrides.<part> (a sweep's multirun.yaml). Refused in one line naming
    the file where it is not of that shape, or where an override would have Hydra import or
    run code: a dir may come from someone else, and regexp reads back its own keys alone."""
    from omegaconf import OmegaConf

    from regexp.errors import UserError, first_line

    where = f"hydra.overrides.{part}" if part else "the file"
    try:
        loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        overrides = loaded["hydra"]["overrides"][part] if part else loaded
    except (KeyError, TypeError):
        overrides = None
    except Exception as exc:  # (YAML's errors, OmegaConf's, unreadable bytes)
        raise UserError(f"{path}: refused, not YAML Hydra wrote ({first_line(exc)})") from None
    kinds = {dict: "a mapping", str: "a string", type(None): "missing"}
    if not isinstance(overrides, list):
        raise UserError(
            f"{path}: refused, {where} is {kinds.get(type(overrides), type(overrides).__name__)}; "
            "Hydra records the overrides that made a run as a list of KEY=VALUE strings"
        )
    for override in overrides:
        if not isinstance(override, str):
            raise UserError(
                f"{path}: refused, {where} lists {str(override)[:60]!r}, not a KEY=VALUE string"
            )
        key = override.lstrip("+~").split("=", 1)[0]
        if names_code(key, override.split("=", 1)[1] if "=" in override else ""):
            raise UserError(
                f"{path}: refused, {key} is not read back from a dir: Hydra would import or run "
                "code it names; regexp reads back its own config keys and Hydra's plain settings"
            )
    return overrides


def names_code(key: str, value: str) -> bool:
    """Whether the override `key=value`, read back from a dir, would have Hydra import or run
    code: a _target_ anywhere, a Hydra setting outside READ_BACK, a group's choice that is a
    path (`+experiment=../../x` reaches a config file anywhere, which may set any of these)."""
    from regexp import config

    groups = {p.name for p in config.conf_dir().iterdir() if p.is_dir()}
    if "_target_" in re.split(r"[./]", key):
        return True
    if "/" in key or key.split("@")[0] in groups:
        return re.search(r"[/\\]", value) is not None  # (names, a sweep's or choice()'s)
    if key.startswith("hydra"):
        return not key.startswith(READ_BACK) or key.startswith(NOT_READ_BACK)
    return False


def once(overrides: list[str]) -> list[str]:
    """`overrides` with each key once, at its first place, with its last value: a run resumed
    again and again keeps one clean list."""
    from regexp.config import override_key

    last = {override_key(o): o for o in overrides}
    return list(dict.fromkeys(last[override_key(o)] for o in overrides))


def refuse_changes(saved: Path, keep: list[str], new: list[str], known: bool = True) -> None:
    """Check a resume before Hydra rewrites anything in the run's dir: the run's config with the
    `new` overrides must pass every check, train past the checkpoint's epoch and, where the
    run's own config is `known`, differ from it only where RESUME_MAY_CHANGE allows (a cosine
    schedule spanning the run's epochs can't be extended); then the run's start is gone
    through (population.check_resume): its checkpoint must restore, its record read back."""
    from omegaconf import OmegaConf

    from regexp import config
    from regexp.engine import checkpoint
    from regexp.errors import ConfigError, UserError
    from regexp.run import population, rundir

    def plain(overrides):
        return [o for o in overrides if not o.lstrip("+~").startswith("hydra")]

    before = config.flat(OmegaConf.to_container(config.compose(plain(keep))))
    after_cfg = config.compose(plain(keep + new))
    conf = config.validate(after_cfg)
    population.device_of(conf.device)  # (a device this machine lacks)
    run_dir = saved.parent
    done = checkpoint.read_checked(saved)["epoch"]  # refused here if it is not one of ours
    rundir.check_more_epochs(conf.train.epochs, done, run_dir)
    if known:
        after = config.flat(OmegaConf.to_container(after_cfg))
        may = config.RESUME_MAY_CHANGE
        changed = [
            k
            for k in dict.fromkeys([*before, *after])
            if before.get(k) != after.get(k) and not k.startswith(may)
        ]
        if changed:
            key = changed[0]
            given = [o for o in plain(new) if f"{key}.".startswith(config.override_key(o) + ".")]
            raise UserError(
                f"{given[0] if given else key} is not allowed with resume={run_dir}: the run goes "
                f"on with its own config ({key}={before.get(key)}); only "
                f"{', '.join(k + '*' if k.endswith('.') else k for k in may)} may change"
            )
        epochs = before["train.epochs"]
        if conf.sched.name == "cosine" and conf.sched.T_max is None and conf.train.epochs != epochs:
            raise ConfigError(
                "train.epochs",
                conf.train.epochs,
                f"{epochs} with resume={run_dir}: its cosine schedule spans the run's {epochs} "
                "epochs (sched.T_max=null) and would climb back past them; to extend runs later, "
                "start them with sched.T_max set",
            )
    population.check_resume(conf, run_dir)
