"""TensorBoard in a real browser (scripts/tensorboard_pages.py): a small replicated sweep served
by `tensorboard` on a free local port, opened in headless Chromium, shows each setting's run
listed and ticked with its valid loss drawn in a band, HParams' columns the swept keys, and
every run in Scalars. Skipped, saying why, where playwright or Chromium is missing."""

from __future__ import annotations

import importlib.util

import pytest
from conftest import ROOT, regexp

spec = importlib.util.spec_from_file_location("pages", ROOT / "scripts" / "tensorboard_pages.py")
pages = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pages)


@pytest.mark.slow
@pytest.mark.skipif(pages.missing() is not None, reason=f"{pages.missing()}")
def test_tensorboard_shows_the_settings_bands_and_swept_columns_in_a_browser(tmp_path):
    sweep = ["optim.weight_decay=0,1e-2", "seed=0,1", "train.epochs=10", "data.n_train=64"]
    regexp("train", "-m", *sweep, "log.figure_every=0", "hydra.sweep.dir=sweep", cwd=tmp_path)
    sweep = tmp_path / "sweep"
    assert pages.settings_of(sweep) == ["weight_decay=0", "weight_decay=0.01"]
    assert pages.swept_keys(sweep) == ["optim.weight_decay", "seed"]
    pages.run(sweep, pictures=tmp_path)  # each page's checks, then its screenshot
    assert all((tmp_path / picture).stat().st_size > 10_000 for _, picture in pages.CHECKS.values())
