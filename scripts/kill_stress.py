"""Stress: kill -9 a run at random points, many times, resuming after each; the record must
never be behind its checkpoint, and the finished metrics.csv must equal an uninterrupted run's.

    python scripts/kill_stress.py              # up to 20 kills, seed 0
    python scripts/kill_stress.py --kills 50 --seed 3

tests/test_reliability.py does three kills on every test run; this is the long version, for
a change to the checkpoint or the record. Exits 1 at the first kill that breaks either rule.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from regexp.run import rundir

RUN = ["train.epochs=1500", "train.checkpoint_every=3"]  # the lesson net: ~2 s of training


def regexp(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "regexp", "train", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="of the random kill times")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        regexp(*RUN, "hydra.run.dir=reference", cwd=tmp).communicate()
        run, kills, finished = tmp / "run", 0, False
        while kills < args.kills and not finished:
            resuming = (run / "checkpoint.pt").exists()
            command = ["resume=run"] if resuming else [*RUN, "hydra.run.dir=run"]
            process = regexp(*command, cwd=tmp)
            if rng.random() < 0.2:  # a kill in start-up or set-up
                time.sleep(rng.uniform(0.0, 2.0))
            else:  # in training: after its first progress line
                for line in process.stdout:
                    if line.startswith("epoch "):
                        break
                time.sleep(rng.uniform(0.0, 0.3))
            finished = process.poll() is not None
            process.kill()
            process.communicate()
            if finished and process.returncode:
                print(f"regexp train {' '.join(command)} exited {process.returncode}")
                return 1
            kills += not finished
            summary = rundir.summary_of(run)  # ({}: none yet, or cut short)
            if summary:
                finished = summary["status"] == "completed"
            if (run / "checkpoint.pt").exists():
                epoch = torch.load(run / "checkpoint.pt", weights_only=True)["epoch"]
                rows = len((run / "metrics.csv").read_text().splitlines()) - 1
                print(f"kill {kills}: checkpoint at epoch {epoch}, {rows} rows")
                if rows < epoch:
                    print("the record is behind the checkpoint")
                    return 1
        if not finished:
            regexp("resume=run", cwd=tmp).communicate()
        same = (run / "metrics.csv").read_text() == (tmp / "reference" / "metrics.csv").read_text()
        print(f"{kills} kills; metrics.csv {'equals' if same else 'DIFFERS FROM'} the reference")
        return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
