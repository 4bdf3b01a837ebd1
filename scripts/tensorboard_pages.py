"""TensorBoard as a user sees it, in a real browser: a replicated sweep served by `tensorboard`
on a free local port and opened in headless Chromium (the system's own, driven by playwright:
nothing is downloaded). It checks what README.md and docs/ say TensorBoard shows (each
setting's run listed and ticked, its band chart drawn with data, HParams' columns the swept
keys), and takes the screenshots they show.

    python scripts/tensorboard_pages.py               # train the lesson's weight-decay sweep
                                                      # (+experiment=weight_decay), check it and
                                                      # write docs/figures/tensorboard_*.png
    python scripts/tensorboard_pages.py --sweep DIR   # the same on a sweep of yours
    python scripts/tensorboard_pages.py --check       # check only, no pictures

Needs playwright (`pip install -e ".[dev]"`) and Chromium (Debian: `apt-get install
chromium`); tests/test_browser.py runs the checks on a small sweep, and is skipped, saying
which is missing, where either is.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from regexp.analysis.settings import BAND

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
LESSON = ["+experiment=weight_decay"]  # the sweep the docs' pictures show
WAIT = 60  # seconds for TensorBoard or a page to show what is checked

# Every text of the page, shadow DOMs (TensorBoard's Polymer parts) included.
TEXTS = """() => {
  const out = [];
  const walk = (node) => {
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of node.children || []) walk(child);
    if (node.nodeType === 1 && !node.children.length && node.textContent.trim())
      out.push(node.textContent.trim());
  };
  walk(document.body);
  return out;
}"""


def browser() -> str | None:
    """The system's Chromium, or None."""
    return next(filter(None, map(shutil.which, BROWSERS)), None)


def missing() -> str | None:
    """Why the pages cannot be opened here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if browser() is None:
        return "no Chromium (apt-get install chromium)"
    return None


@contextlib.contextmanager
def serve(logdir: Path, runs: int, read: bool = True):
    """`tensorboard --logdir logdir` on a free local port; yields its address once it lists
    `runs` runs and, with `read`, has read their scalars (their tags the same twice, a second
    apart): a page opened before would miss some."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--load_fast", "false"]
    server = subprocess.Popen(command, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        url = f"{base}/data/plugin/scalars/tags" if read else f"{base}/data/runs"
        seen, before, started = {}, None, time.monotonic()
        while len(seen) < runs or (read and seen != before):
            if time.monotonic() - started > WAIT or server.poll() is not None:
                raise RuntimeError(f"TensorBoard had {len(seen)} of {runs} runs after {WAIT} s")
            before = seen
            time.sleep(1 if read else 0.1)
            with contextlib.suppress(OSError, ValueError):
                seen = json.load(urllib.request.urlopen(url, timeout=10))
        yield base
    finally:
        server.terminate()
        server.wait(10)


@contextlib.contextmanager
def page():
    """A page of headless Chromium, 1400 x 900."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=browser(), args=["--no-sandbox"])
        try:
            view = chromium.new_page(viewport={"width": 1400, "height": 900})
            view.set_default_timeout(WAIT * 1000)
            yield view
        finally:
            chromium.close()


def settings_of(sweep: Path) -> list[str]:
    return sorted(p.name for p in (sweep / "settings").iterdir())


def swept_keys(sweep: Path) -> list[str]:
    """The keys whose values differ between the sweep's runs (their .hydra/overrides.yaml)."""
    import yaml

    values: dict[str, set] = {}
    for run in swept_runs(sweep):
        for line in yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()):
            key, _, value = line.lstrip("+~").partition("=")
            values.setdefault(key, set()).add(value)
    return [key for key, seen in values.items() if len(seen) > 1]


def until(what: str, ready) -> None:
    """Wait for `ready()` to be true, or fail saying `what` did not show."""
    started = time.monotonic()
    while not ready():
        if time.monotonic() - started > WAIT:
            raise AssertionError(f"{what}: not shown after {WAIT} s")
        time.sleep(0.5)


def check_bands(view, base: str, sweep: Path) -> None:
    """Custom Scalars: each setting's run listed and ticked, its valid loss drawn with its
    band, and train and valid loss told apart."""
    view.goto(f"{base}/#custom_scalars")
    for name in settings_of(sweep):
        box = view.locator(f'paper-checkbox[id="checkbox-settings/{name}"]')
        until(f"setting run {name} in the runs list", lambda box=box: box.count() == 1)
        assert box.get_attribute("aria-checked") == "true", f"settings/{name} is not ticked"
    cards = view.locator("tf-custom-scalar-margin-chart-card")
    until("the settings' margin charts", lambda: cards.count() > 0)
    values = cards.evaluate_all("cards => cards.map(c => c.marginChartSeries[0].value)")
    first = [f"{BAND}/loss/train/mean", f"{BAND}/loss/valid/mean"]
    assert values[:2] == first, f"the settings' charts begin with {values[:2]}, not the losses"
    valid = cards.nth(values.index(f"{BAND}/loss/valid/mean"))
    valid.scroll_into_view_if_needed()  # (TensorBoard loads a chart's data once it is seen)
    series = """card => Object.fromEntries(Object.entries(card._nameToDataSeries || {})
        .map(([name, series]) => [series.run, series.scalarData.filter(
            point => Number.isFinite(point.lower) && Number.isFinite(point.upper)).length]))"""
    drawn: dict = {}

    def all_drawn() -> bool:
        drawn.update(valid.evaluate(series))
        return all(drawn.get(f"settings/{n}", 0) > 0 for n in settings_of(sweep))

    until("the valid loss of each setting with its band (points with a band)", all_drawn)
    check_train_and_valid(view)


def check_train_and_valid(view) -> None:
    """Custom Scalars' chart of train and valid loss draws them apart: TensorBoard colours a
    series by its run, so each tag must have a marker of its own."""
    card = view.locator("tf-custom-scalar-multi-line-chart-card").first
    card.scroll_into_view_if_needed()
    symbols = """card => Object.values(card._nameToDataSeries || {})
        .map(series => [series.run, series.tag, series.symbol.character])"""
    seen: list = []

    def drawn() -> bool:
        seen[:] = card.evaluate(symbols)
        return {tag for _, tag, _ in seen} == {"loss/train", "loss/valid"}

    until("train and valid loss in one chart", drawn)
    for run in {run for run, _, _ in seen}:
        marks = {tag: mark for r, tag, mark in seen if r == run}
        assert marks["loss/train"] != marks["loss/valid"], f"{run}: one marker, {marks}"


def check_hparams(view, base: str, sweep: Path) -> None:
    """HParams: the swept keys as its columns, the best valid loss and the gap among its
    metrics."""
    view.goto(f"{base}/#hparams")
    wanted = [*swept_keys(sweep), "loss/best_valid", "loss/gap"]
    texts: list[str] = []

    def shown() -> bool:
        texts[:] = view.evaluate(TEXTS)
        return all(w in texts for w in wanted)

    until(f"HParams' columns {wanted} (shown: {texts[:40]})", shown)


def check_scalars(view, base: str, sweep: Path) -> None:
    """Scalars (time series): every run of the sweep listed, the setting runs among them."""
    view.goto(f"{base}/#timeseries")
    runs = [p.name for p in swept_runs(sweep)]
    runs += [f"settings/{n}" for n in settings_of(sweep)]
    texts: list[str] = []

    def listed() -> bool:
        texts[:] = view.evaluate(TEXTS)
        return all(r in texts for r in runs)

    until(f"the runs {runs} in Scalars", listed)


CHECKS = {  # page: (its check, the screenshot of it the docs show)
    "custom_scalars": (check_bands, "tensorboard_bands.png"),
    "timeseries": (check_scalars, "tensorboard_scalars.png"),
    "hparams": (check_hparams, "tensorboard_hparams.png"),
}


def run(sweep: Path, pictures: Path | None) -> None:
    """Serve `sweep`, check each page, and with `pictures` screenshot it there."""
    total = len(swept_runs(sweep)) + len(settings_of(sweep))
    with serve(sweep, total) as base, page() as view:
        for name, (check, picture) in CHECKS.items():
            check(view, base, sweep)
            print(f"{name}: as the docs say")
            if pictures is not None:
                view.screenshot(path=str(pictures / picture))
                print(f"  wrote {pictures / picture}")


def swept_runs(sweep: Path) -> list[Path]:
    return [p for p in sweep.iterdir() if (p / ".hydra").is_dir()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", type=Path, help="a replicated sweep (default: train one)")
    parser.add_argument("--check", action="store_true", help="check only, write no pictures")
    args = parser.parse_args()
    if why := missing():
        print(f"cannot open TensorBoard in a browser: {why}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        sweep = args.sweep
        if sweep is None:
            sweep = Path(tmp) / "sweep"
            command = ["regexp", "train", "-m", *LESSON, f"hydra.sweep.dir={sweep}"]
            print(" ".join(command[:-1]))
            subprocess.run(command, check=True)
        run(sweep, None if args.check else FIGURES)
    return 0


if __name__ == "__main__":
    sys.exit(main())
