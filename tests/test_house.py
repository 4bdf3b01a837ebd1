"""The structure of the code: no import circles, small modules, and an option added in the two
steps README's "Develop" section shows (a schema dataclass beside its builder, a YAML file)."""

from __future__ import annotations

import ast
import csv
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra.core.config_store import ConfigStore

import regexp
from regexp import config
from regexp.components import optim
from regexp.components.options import OPTIONS, option
from regexp.engine import updates
from regexp.run import population

PACKAGE = Path(regexp.__file__).parent
LONG = 400  # lines; a longer module says why at its top
# the package that holds config groups' schemas
COMPONENTS = "regexp.components"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The regexp modules `path` imports anywhere in it (in functions too). `from regexp.data
    import files` imports the module regexp.data.files; the packages above a module are left
    out, as Python sets them up before any of their modules."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            named = {f"{node.module}.{a.name}" for a in node.names}
            found |= (named & modules) or {node.module}
    return found & modules


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports(path, set(paths)) - {name} for name, path in paths.items()}


def test_the_package_has_no_import_circles():
    edges = graph()
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        seen[name] = 1
        for other in sorted(edges[name]):
            if seen.get(other) == 1:
                circle = path[path.index(other) :] + [other]
                pytest.fail("import circle: " + " -> ".join(circle))
            if other not in seen:
                visit(other, [*path, other])
        seen[name] = 2

    for name in sorted(edges):
        if name not in seen:
            visit(name, [name])


def test_the_schema_modules_never_import_config():
    edges = graph()
    for name, imported in edges.items():
        if name.startswith(COMPONENTS):
            assert "regexp.config" not in imported, name


def test_a_long_module_says_why_at_its_top():
    for path in PACKAGE.rglob("*.py"):
        lines = path.read_text().splitlines()
        if len(lines) > LONG:
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
            assert "Why it is long:" in doc, f"{path.name}: {len(lines)} lines, no reason given"


# --- an option in two steps -------------------------------------------------------------------


@pytest.fixture
def halved_sgd(tmp_path):
    """Step 1: a made-up optimizer's dataclass, registered as its builder's module would.
    Step 2: its YAML file, here in a config dir of the test's own on Hydra's search path."""

    @option("optim")
    @dataclass
    class HalvedSGD(optim.SGD):
        """SGD at half the configured learning rate."""

        name: str = "halved_sgd"

        def knobs(self):  # what torch.optim.SGD and a population's update both take
            return {**super().knobs(), "lr": self.lr / 2}

    (tmp_path / "optim").mkdir()
    (tmp_path / "optim" / "halved_sgd.yaml").write_text(
        "defaults:\n  - /schema/optim/halved_sgd@_here_\n  - _self_\n\nlr: 0.02\nmomentum: 0.9\n"
    )
    yield f"hydra.searchpath=[file://{tmp_path}]"
    del OPTIONS["optim"]["halved_sgd"]
    del ConfigStore.instance().repo["schema"]["optim"]["halved_sgd.yaml"]


def test_a_made_up_optimizer_option_trains_as_its_builder_says(halved_sgd, tmp_path):
    small = ["train.epochs=20", "model.hidden=[16,16]", "log.figure_every=0", "log.hist_every=0"]
    made_up = config.validate(config.compose(["optim=halved_sgd", halved_sgd, *small]))
    assert type(made_up.optim).__name__ == "HalvedSGD"
    sgd = config.validate(config.compose(["optim=sgd", "optim.lr=0.01", *small]))
    records = []
    for name, conf in (("halved", made_up), ("sgd", sgd)):
        population.execute(conf, tmp_path / name)
        with open(tmp_path / name / "metrics.csv", newline="") as f:
            records.append([(r["train_loss"], r["valid_loss"], r["lr"]) for r in csv.DictReader(f)])
    assert records[0] == records[1]  # SGD at lr 0.02 / 2 is SGD at 0.01, number for number
    assert float(records[0][0][2]) == 0.01

    # A population of it steps as one of SGD at 0.01 does.
    flat = torch.randn(3, 50)
    twin = flat.clone()
    halved = updates.build_update([made_up.optim] * 3, flat)
    plain = updates.build_update([sgd.optim] * 3, twin)
    assert halved.lr[:, 0].tolist() == [0.01] * 3
    for _ in range(5):
        grad = torch.randn(3, 50)
        halved.step(flat, grad)
        plain.step(twin, grad)
    assert torch.equal(flat, twin)


def test_an_unknown_option_name_lists_the_known_ones(compose):
    from regexp import errors

    conf = compose()
    conf.optim.name = "sgdd"
    with pytest.raises(errors.ConfigError) as info:
        config.check(conf)
    assert "optim=sgdd is not allowed: one of adagrad, adam, adamw, gd, rmsprop, sgd" in str(
        info.value
    )
    assert "did you mean sgd?" in str(info.value)


def test_the_docs_cite_no_markdown_file_the_repo_lacks():
    # (docs/lessons.md once cited a LESSONS.md that was never there.) A name is there, or it
    # is one the code writes (report.md, outputs/lessons/README.md).
    root = PACKAGE.parents[1]
    written = "".join(p.read_text() for d in ("src", "scripts") for p in (root / d).rglob("*.*")
                      if p.suffix in (".py", ".sh"))  # fmt: skip
    for doc in [root / "README.md", *(root / "docs").glob("*.md")]:
        for name in re.findall(r"[\w./-]+\.md\b", doc.read_text()):
            there = (root / name).exists() or (doc.parent / name).exists()
            assert there or name in written, f"{doc.name} cites {name}, which is not there"


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, spaces to dashes, most
    punctuation dropped."""
    found = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def test_every_relative_link_in_the_readme_and_docs_resolves():
    root = PACKAGE.parents[1]
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    checked = 0
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):  # (http:, https:, mailto:)
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.name} links to {target}: no such file"
            if anchor and linked.suffix == ".md":
                assert anchor in anchors(linked), f"{page.name} links to {target}: no such heading"
            checked += 1
    assert checked >= 5  # (the README links to docs/; a regex that finds none proves nothing)


# What sets up the whole process, allowed in process.py alone: no part messages another
# through the environment or the command line, or sets a process-wide setting of its own.
PROCESS_WIDE = re.compile(
    r"os\.environ\[[^]]+\]\s*=|os\.environ\.(update|clear|pop|setdefault)\(|sys\.argv\s*=|"
    r"signal\.signal\(|set_num_threads\(|gc\.freeze\(|sched_setscheduler\(|os\.nice\(|setpgrp\("
)
# Another library's private names (a `._name` of something imported, a `_internal` module),
# allowed in adapters/ alone.
PRIVATE = re.compile(r"\b(hydra|atexit|pool|tensorboardX|ConfigLoaderImpl)\._[a-z]|\._internal\b|"
                     r"\._return_value\b|\._processes\b|event_file_writer")  # fmt: skip


def sources():
    for path in sorted([*PACKAGE.rglob("*.py"), *(PACKAGE.parent / "hydra_plugins").rglob("*.py")]):
        yield path.relative_to(PACKAGE.parent).as_posix(), path.read_text()


def test_process_wide_settings_are_made_in_process_py_alone():
    for name, text in sources():
        if name not in ("regexp/process.py",) and not name.startswith("regexp/adapters/"):
            found = [m.group(0) for m in PROCESS_WIDE.finditer(text)]
            # (shell.py hands the shell's completion line to Hydra's query, its protocol)
            if name == "regexp/shell.py":
                found = [f for f in found if "COMP_LINE" not in f]
            assert not found, f"{name} sets {found}: process.py's job"


def test_other_libraries_private_parts_are_used_in_adapters_alone():
    for name, text in sources():
        if not name.startswith("regexp/adapters/"):
            found = [m.group(0) for m in PRIVATE.finditer(text)]
            assert not found, f"{name} uses {found}: an adapter's job (regexp/adapters/)"


def test_the_package_keeps_few_modules_at_its_top():
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= 8, top


def test_each_name_is_one_thing():
    """A class or function at a module's top has one name across the package (a method's name
    may repeat: an interface; a Hydra plugin's adapter names the class it hands Hydra)."""
    seen: dict[str, str] = {}
    for name, text in sources():
        if name.startswith("hydra_plugins/"):
            continue
        for node in ast.parse(text).body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and not node.name.startswith("_"):
                other = seen.setdefault(node.name, name)
                assert other == name, f"{node.name} is defined in {other} and in {name}"
