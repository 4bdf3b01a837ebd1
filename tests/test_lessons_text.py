"""scripts/lessons_text.py: the README's and docs' generated numbers, rewritten from outputs
and checked against them, each block named where it differs."""

from __future__ import annotations

import importlib.util
import re

from conftest import ROOT

spec = importlib.util.spec_from_file_location("lessons_text", ROOT / "scripts" / "lessons_text.py")
lessons_text = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lessons_text)

TEXT = """# a page

<!-- lessons:experiment:dropout -->
**Got**: valid loss 0.219 -> 0.183
<!-- /lessons:experiment:dropout -->

prose stays

<!-- lessons:probe:lr -->
old
<!-- /lessons:probe:lr -->
"""


def test_a_block_is_rewritten_from_its_output_and_named_where_it_differs(capsys):
    found = {"experiment:dropout": "**Got**: valid loss 0.2194 -> 0.1812", "probe:lr": "old"}
    new, changed = lessons_text.rewritten(TEXT, found, "page.md")
    assert changed == ["page.md: experiment:dropout"]  # the probe's block matched
    assert "0.2194 -> 0.1812\n<!-- /lessons:experiment:dropout -->" in new
    assert "0.183" not in new and "prose stays" in new
    assert "+**Got**: valid loss 0.2194 -> 0.1812" in capsys.readouterr().err  # the diff
    again, changed = lessons_text.rewritten(new, found, "page.md")
    assert again == new and changed == []
    # A block the outputs lack is named, and left as it is.
    _, changed = lessons_text.rewritten(TEXT, {"probe:lr": "old"}, "page.md")
    assert changed == ["page.md: experiment:dropout (no output for it)"]


def test_every_block_of_the_readme_and_the_lessons_page_is_one_the_script_writes():
    for page in ("README.md", "docs/lessons.md"):
        keys = re.findall(r"<!-- lessons:([\w:]+) -->", (ROOT / page).read_text())
        assert keys, page
        for key in keys:
            kind, _, name = key.partition(":")
            if kind in ("experiment", "bias_variance", "double_descent"):
                assert name in lessons_text.EXPERIMENTS, key
            elif kind == "probe":
                assert name in lessons_text.PROBES, key
            else:
                assert key == "table", key
