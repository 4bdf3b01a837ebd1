"""The lessons' numbers in README.md and docs/lessons.md, written from the outputs of
scripts/reproduce_lessons.sh, never by hand.

Each generated block sits between `<!-- lessons:KEY -->` and `<!-- /lessons:KEY -->`:

- `table` (README.md): the lessons table, each experiment's verdict (its report.md's first
  line, computed from the runs) and each probe's closing line;
- `experiment:NAME` (docs/lessons.md): the experiment's verdict over its replicas;
- `bias_variance:NAME` (docs/lessons.md): the experiment's bias_variance.md;
- `double_descent:NAME` (docs/lessons.md): the experiment's double-descent verdict and
  double_descent.csv as a table;
- `probe:NAME` (docs/lessons.md): the probe's printed output.

    python scripts/lessons_text.py OUT_DIR            # rewrite the blocks from OUT_DIR
    python scripts/lessons_text.py --check OUT_DIR    # exit 1 naming each block that differs

Writing also copies the figures docs/lessons.md shows (docs/figures/) from OUT_DIR.
"""

from __future__ import annotations

import argparse
import csv
import difflib
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = [
    "weight_decay", "dropout", "bn_cnn", "norms", "optimizers", "lr_schedules", "l1_vs_l2",
    "overfitting", "early_stopping", "bias_variance", "bias_variance_dropout", "double_descent",
]  # fmt: skip
PROBES = ["dropout", "depth", "init", "norm", "optim", "lr"]
# docs/figures/NAME: the file of OUT_DIR it is (a pattern that one file matches).
FIGURES = {
    "weight_decay_0_fit.png": "weight_decay/weight_decay=0,seed=0/fit.png",
    "weight_decay_0.01_fit.png": "weight_decay/weight_decay=0.01,seed=0/fit.png",
    "weight_decay_weights.png": "weight_decay/weights.png",
    "dropout_0.5_fit.png": "dropout/dropout=0.5,seed=0/fit.png",
    "bn_cnn_curves.png": "bn_cnn/curves.png",
    "norms_curves.png": "norms/curves.png",
    "optimizers_curves.png": "optimizers/curves.png",
    "overfitting_curves.png": "overfitting/curves.png",
    "l1_vs_l2_weights.png": "l1_vs_l2/weights.png",
    "bias_variance_weight_decay.png": "bias_variance/bias_variance.png",
    "bias_variance_fits.png": "bias_variance/fits.png",
    "bias_variance_dropout.png": "bias_variance_dropout/bias_variance.png",
    "double_descent.png": "double_descent/double_descent.png",
    **{f"probe_{p}.png": f"probes/{p}.png" for p in PROBES},
}
BLOCK = re.compile(
    r"(<!-- lessons:(?P<key>[\w:]+) -->\n)(?P<body>.*?)(<!-- /lessons:(?P=key) -->)", re.S
)


def verdict(out: Path, name: str) -> str:
    return (out / name / "report.md").read_text().splitlines()[0].strip()


def lesson(name: str) -> str:
    """What the experiment compares: the first sentence of its config's opening comment."""
    lines = (ROOT / "conf" / "experiment" / f"{name}.yaml").read_text().splitlines()
    comment = []
    for line in lines[1:]:  # (after "# @package _global_")
        if not line.startswith("# ") or line.startswith("#  "):
            break
        comment.append(line[2:])
    first = re.split(r"(?<=\.)\s", " ".join(comment))[0].rstrip(".")
    first = re.sub(r"^Lesson experiment \d+: ", "", first)
    return re.sub(r"\s*\(.*\)$", "", first).split(": ")[0]  # (what it compares, in brief)


def summary(out: Path, name: str) -> str:
    """The table's line for an experiment: its verdict's first claim (a width sweep's: what
    its double-descent curve shows), or for a bias-variance sweep what its decomposition
    shows."""
    claims = out / name / "bias_variance.md"
    if claims.is_file() and not (out / name / "double_descent.csv").is_file():
        return claims.read_text().splitlines()[0].strip()
    return verdict(out, name).split("; ")[0]


def double_descent_table(out: Path, name: str) -> str:
    """The experiment's double-descent verdict and its double_descent.csv as a table, numbers
    in 4 digits."""
    with open(out / name / "double_descent.csv", newline="") as f:
        rows = list(csv.reader(f))
    cells = [[f"{float(c):.4g}" if c else "-" for c in row] for row in rows[1:]]
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return summary(out, name) + "\n\n" + "\n".join(lines)


def probe_output(out: Path, name: str) -> str:
    """The probe's printed tables and notes, without trailing spaces or its figure's path."""
    lines = [line.rstrip() for line in (out / "probes" / f"{name}.txt").read_text().splitlines()]
    return "\n".join(line for line in lines if not line.startswith("figure: ")).strip()


def probe_note(out: Path, name: str) -> str:
    """The probe's closing note: its last paragraph, as one line."""
    return " ".join(probe_output(out, name).split("\n\n")[-1].split())


def blocks(out: Path) -> dict[str, str]:
    """Every block's text, from the outputs in `out`."""
    from regexp.probes import SUMMARIES

    rows = ["| command | the lesson | what the runs show |", "| --- | --- | --- |"]
    for name in EXPERIMENTS:
        cell = summary(out, name).replace("|", "\\|")
        rows.append(f"| `regexp train -m +experiment={name}` | {lesson(name)} | {cell} |")
    for name in PROBES:
        last = probe_note(out, name).replace("|", "\\|")
        rows.append(f"| `regexp probe {name}` | {SUMMARIES[name]} | {last} |")
    found = {"table": "\n".join(rows)}
    for name in EXPERIMENTS:
        found[f"experiment:{name}"] = f"**Got** (`regexp train -m +experiment={name}`): " + (
            verdict(out, name)
        )
        bias_variance = out / name / "bias_variance.md"
        if (out / name / "double_descent.csv").is_file():
            found[f"double_descent:{name}"] = double_descent_table(out, name)
        elif bias_variance.is_file():
            found[f"bias_variance:{name}"] = bias_variance.read_text().strip()
    for name in PROBES:
        found[f"probe:{name}"] = f"**Got** (`regexp probe {name}`):\n\n```\n" + (
            probe_output(out, name) + "\n```"
        )
    return found


def rewritten(text: str, found: dict[str, str], where: str) -> tuple[str, list[str]]:
    """`text` with each block replaced by its generated body; the keys of blocks whose body
    changed (or that the outputs lack)."""
    changed = []

    def body(match: re.Match) -> str:
        key = match["key"]
        if key not in found:
            changed.append(f"{where}: {key} (no output for it)")
            return match[0]
        new = found[key] + "\n"
        if new != match["body"]:
            changed.append(f"{where}: {key}")
            diff = difflib.unified_diff(
                match["body"].splitlines(), new.splitlines(), "committed", "reproduced", lineterm=""
            )
            print("\n".join(diff), file=sys.stderr)
        return match[1] + new + match[4]

    return BLOCK.sub(body, text), changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="scripts/reproduce_lessons.sh's output dir")
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args()
    found = blocks(args.out)
    changed = []
    for path in (ROOT / "README.md", ROOT / "docs" / "lessons.md"):
        text = path.read_text()
        new, differ = rewritten(text, found, path.name)
        changed += differ
        if not args.check and new != text:
            path.write_text(new)
    if args.check:
        for line in changed:
            print(f"differs: {line}")
        print(f"{len(changed)} of the lessons' blocks differ" if changed else "every block matches")
        return 1 if changed else 0
    for name, pattern in FIGURES.items():
        (source,) = args.out.glob(pattern)
        shutil.copyfile(source, ROOT / "docs" / "figures" / name)
    print(f"wrote {len(found)} blocks and {len(FIGURES)} figures from {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
