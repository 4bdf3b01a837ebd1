"""What the shell sees of `regexp train` besides its runs: its --help and its completion.

`regexp train --help` renders conf/hydra/help/regexp.yaml with the config the overrides
compose. Hydra's own --help lists the config groups by composing once per group (seconds);
this composes once and needs neither torch nor the training code.

Completion, in bash and zsh: the shell hands the line up to the cursor to `regexp train -sc
query=SHELL`, which answers the words that may come next: a command name, then for train and
summary Hydra's own completion of groups, options and keys. (Hydra's script completes
`regexp` as if it were the app, and runs `regexp -sc query=bash`: an unknown command.)
"""

from __future__ import annotations

import contextlib
import io
import os


def train_help(overrides: list[str]) -> str:
    """`regexp train --help [OVERRIDES]`: conf/hydra/help/regexp.yaml's text with the config
    those overrides compose."""
    import string

    from omegaconf import OmegaConf

    from regexp import config

    if not OmegaConf.has_resolver("regexp_groups"):
        OmegaConf.register_new_resolver("regexp_groups", groups_help)
    cfg = config.compose(overrides, hydra=True)
    template = cfg.hydra.help.template  # (resolving its ${hydra.help.header}, ${regexp_groups:})
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return string.Template(template).safe_substitute(
        CONFIG=OmegaConf.to_yaml(job), APP_CONFIG_GROUPS=groups_help()
    )


def groups_help() -> str:
    """`regexp train --help` lists the groups of conf/ and their options."""
    from regexp import config

    lines = []
    for group in sorted(p for p in config.conf_dir().iterdir() if p.is_dir() and p.name != "hydra"):
        options = sorted(f.stem for f in group.glob("*.yaml"))
        plus = "+" if group.name == "experiment" else ""  # not in the defaults: appended with +
        lines.append(f"  {plus}{group.name}: {', '.join(options)}")
    return "\n".join(lines)


# The scripts `install=SHELL` prints, to eval in the shell's rc file.
COMPLETION = {
    "bash": r"""_regexp_complete()
{
    local line="${COMP_LINE:0:COMP_POINT}"
    local word="${line##*[[:space:]]}"
    # bash's current word ends at = and : (COMP_WORDBREAKS); the answers are whole words.
    local cur="${COMP_WORDS[COMP_CWORD]}"
    [[ "$word" == *"$cur" ]] || cur="$word"
    local prefix="${word:0:${#word}-${#cur}}"
    local choices
    choices=$(COMP_LINE="$line" COMP_POINT="${#line}" \
        "${COMP_WORDS[0]}" train -sc query=bash 2>/dev/null) || return
    COMPREPLY=($(compgen -W "$choices" -- "$word"))
    COMPREPLY=("${COMPREPLY[@]#"$prefix"}")
}
complete -o nospace -o default -F _regexp_complete regexp
""",
    "zsh": r"""_regexp_complete()
{
    local line="${BUFFER[1,CURSOR]}"
    local -a choices
    choices=(${=$(COMP_LINE="$line" COMP_POINT="$CURSOR" \
        "${words[1]}" train -sc query=zsh 2>/dev/null)})
    if (( ${#choices} )); then
        compadd -Q -S '' -a choices
    else
        _files
    fi
}
(( $+functions[compdef] )) || { autoload -Uz compinit && compinit }
compdef _regexp_complete regexp
""",
}
UNINSTALL = {
    "bash": "complete -r regexp 2> /dev/null; unset -f _regexp_complete",
    "zsh": "compdef -d regexp; unfunction _regexp_complete 2> /dev/null",
}


def completion(args: list[str], commands_of_regexp, task_function) -> int:
    """`regexp train -sc install=SHELL`, `uninstall=SHELL` (print the script to eval) and
    `query=SHELL` (with COMP_LINE and COMP_POINT set, as the script calls it: print the words
    that complete the line): the names in `commands_of_regexp`, then for train and summary
    Hydra's completion of groups, options and keys (through the app of `task_function`);
    other commands complete file names (the shell's default)."""
    import argparse

    from omegaconf import OmegaConf

    from regexp.errors import UserError

    parser = argparse.ArgumentParser(prog="regexp train", add_help=False)
    parser.add_argument("-sc", "--shell-completion", action="store_true")
    parser.add_argument("command", nargs="*")
    parsed, _ = parser.parse_known_args(args)
    commands = OmegaConf.from_dotlist(parsed.command)
    for what, scripts in (("install", COMPLETION), ("uninstall", UNINSTALL)):
        if what in commands:
            shell = str(commands[what])
            if shell not in scripts:
                raise UserError(f"-sc {what}={shell}: no such shell (shells: bash, zsh)")
            print(scripts[shell], end="" if scripts[shell].endswith("\n") else "\n")
            return 0
    if "query" not in commands:
        raise UserError("-sc: give install=SHELL, uninstall=SHELL or query=SHELL")
    line = os.environ.get("COMP_LINE", "")
    line = line[: int(os.environ.get("COMP_POINT") or len(line))]
    words = line.split()
    if len(words) + line.endswith(" ") <= 2:  # the command itself
        word = words[1] if len(words) == 2 else ""
        print(" ".join(c for c in commands_of_regexp if c.startswith(word)))
        return 0
    if words[1] not in ("train", "summary"):
        return 0
    import hydra

    from regexp import config
    from regexp.adapters import hydra as hydra_adapter

    # Hydra's query strips one word, the app's name, from COMP_LINE (the shell's completion
    # protocol, which Hydra reads): the command here.
    os.environ["COMP_LINE"] = line.split(None, 1)[1]
    app = hydra.main(version_base="1.3", config_path=str(config.conf_dir()), config_name="train")
    argv = ["regexp train", "-sc", f"query={commands.query}"]
    with contextlib.redirect_stdout(io.StringIO()) as answer, hydra_adapter.command_line(argv):
        app(task_function)()
    # Not the schema/ group that types the keys; an experiment is added (+), not chosen.
    words = [w for w in answer.getvalue().split() if not w.lstrip("+~").startswith("schema/")]
    print(" ".join("+" + w if w.startswith("experiment=") else w for w in words))
    return 0
