"""`resume=`: a run, or with -m a whole sweep, goes on from where it stopped: the overrides
that made it, read back from its dir, then the new ones, of which only what a resume may
change is allowed; checked before Hydra writes anything in the dir."""

from __future__ import annotations

import contextlib
from pathlib import Path


def resumed(args: list[str]) -> list[str]:
    """`resume=DIR` continues the run in DIR: its own overrides first, then the new ones, and
    Hydra's run dir set to DIR, so the run goes on where it was and nothing new is made."""
    from omegaconf import OmegaConf

    from regexp.run import rundir

    given = [a for a in args if a.startswith("resume=")]
    if not given:
        return args
    checkpoint = rundir.checkpoint_of(given[-1].split("=", 1)[1])
    run_dir = checkpoint.parent.resolve()
    rundir.check_free(run_dir)
    saved_file = rundir.overrides_file(run_dir)
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
        for key in map(config.override_key, added):
            first = [o for o in task if config.override_key(o) == key][:1]
            named.setdefault(key, first[0] if first else None)
        names = "|".join(line or key for key, line in named.items())
        hydra = [o for o in hydra if o not in subdir] + [f'{naming}"{names}"}}']
    from regexp import process

    with process.telling_jobs_of_resumed_sweep(str(sweep.resolve()), rerun):
        flags = [a for a in args if a.startswith("-")]
        yield [*flags, *task, *added, *hydra, f"hydra.sweep.dir={quote(sweep.resolve())}"]


def once(overrides: list[str]) -> list[str]:
    """`overrides` with each key once, at its first place, with its last value: a run resumed
    again and again keeps one clean list."""
    from regexp.config import override_key

    last = {override_key(o): o for o in overrides}
    return list(dict.fromkeys(last[override_key(o)] for o in overrides))


# What may change when a run goes on; anything else would make it another run.
RESUME_MAY_CHANGE = ("train.epochs", "train.checkpoint_every", "device", "threads", "log.")


def refuse_changes(saved: Path, keep: list[str], new: list[str], known: bool = True) -> None:
    """Check a resume before Hydra rewrites anything in the run's dir: the run's config with the
    `new` overrides must pass every check, train past the checkpoint's epoch and, where the
    run's own config is `known`, differ from it only where RESUME_MAY_CHANGE allows; a cosine
    schedule spanning the run's epochs can't be extended."""
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
    population.device_of(
        conf.device
    )  # (a device this machine lacks is refused before Hydra writes)
    run_dir = saved.parent
    done = checkpoint.read_checked(saved)["epoch"]  # refused here if it is not one of ours
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
        given = [o for o in plain(new) if f"{key}.".startswith(config.override_key(o) + ".")]
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
