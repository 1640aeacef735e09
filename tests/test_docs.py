"""The docs site builds in strict mode, its CLI reference is the commands', the README stays a five-minute read with
working links, and no page types a timing figure by hand (figures come from benchmarks/results/, rendered by
docs/hooks.py). The Python API page's code blocks run in tests/test_readme.py."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest
import typer

from smoothdino.cli import app

from .conftest import ROOT

DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_LINES = 150
# Markdown sources that are, or are included into, published pages (docs/jetson.md and docs/architecture.md include
# the last two through pymdownx.snippets).
PAGES = sorted(DOCS.rglob("*.md")) + [README, ROOT / "benchmarks" / "README.md", ROOT / "examples" / "README.md",
                                      ROOT / "ARCHITECTURE.md", ROOT / "deploy" / "jetson" / "README.md"]

# A number followed by a timing unit: "12 ms", "2.86 FPS", "30fps", "3 s a frame", "2 s per pass". Not after a letter
# or a dot ("p50 ms" is a column name, "v1.2 ms" no figure).
TIMING = re.compile(r"(?<![\w.])\d[\d.,]*\s*(?:ms|FPS|fps|s (?:a|per) (?:frame|pass))\b")
# Genuine exceptions, each with its reason: (file relative to the root, the exact text matched).
TIMING_ALLOWED: set[tuple[str, str]] = set()


def load_hooks():
    spec = importlib.util.spec_from_file_location("smoothdino_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def without_fenced_code(text: str) -> str:
    return re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.DOTALL | re.MULTILINE)


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
                    reason="mkdocs / mkdocs-material not installed (the 'docs' extra)")
def test_the_site_builds_in_strict_mode_without_a_warning(tmp_path):
    """Broken links, missing anchors, pages left out of the nav, a missing snippet or a missing benchmark record
    all fail `mkdocs build --strict`; the output must not even carry a warning."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's banner about MkDocs 2.0
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "WARNING" not in output, output
    reference = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert "smoothdino process" in reference and "<!-- cli-reference -->" not in reference


def command_tree(command, path=("smoothdino",)):
    """(path, command) for the app and every visible command and sub-command under it."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        if not sub.hidden:
            yield from command_tree(sub, path + (name,))


def test_the_cli_reference_names_every_command_and_visible_option():
    text = load_hooks().cli_reference()
    sections = dict(re.findall(r"^## `([^`]+)`\n(.*?)(?=^## `|\Z)", text, flags=re.DOTALL | re.MULTILINE))
    tree = list(command_tree(typer.main.get_command(app)))
    assert len(tree) > 12  # the app, its commands and the weights sub-commands
    for path, command in tree:
        title = " ".join(path)
        assert title in sections, f"no section for {title}"
        section = sections[title]
        if command.help:
            assert " ".join(command.help.split()[:4]) in " ".join(section.split()), title
        for param in command.params:
            names = param.opts + param.secondary_opts if param.param_type_name == "option" else [param.name.upper()]
            for name in names:
                present = re.search(rf"(?:`|/ ){re.escape(name)}(?:\.\.\.)?[ `]", section) is not None
                assert present != bool(getattr(param, "hidden", False)), f"{title}: {name}"


def test_the_readme_is_short_and_its_links_resolve():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    for path in (README, ROOT / "benchmarks" / "README.md", ROOT / "examples" / "README.md", ROOT / "ARCHITECTURE.md"):
        for target in re.findall(r"\]\(([^)\s]+)\)", without_fenced_code(path.read_text())):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL or an anchor on the same page
            assert (path.parent / target.split("#")[0]).exists(), f"{path.relative_to(ROOT)}: broken link {target}"


def test_no_page_types_a_timing_figure_by_hand():
    found = []
    for page in PAGES:
        where = str(page.relative_to(ROOT))
        for match in TIMING.finditer(without_fenced_code(page.read_text())):
            if (where, match.group()) not in TIMING_ALLOWED:
                found.append(f"{where}: {match.group()!r}")
    assert not found, "hand-typed timings (put them in a benchmark record, <!-- figures NAME -->): " + ", ".join(found)


def test_a_missing_record_is_a_warning_and_a_present_one_is_rendered(tmp_path, caplog):
    """The hook's two answers, on a records folder of the test's own: the warning that fails --strict, and the
    tables of a record that exists."""
    from smoothdino.benchmarks.record import Record, Table, write_record

    hooks = load_hooks()
    with caplog.at_level("WARNING", logger="mkdocs.plugins.smoothdino"):
        hooks.figures("absent", "page.md", results=tmp_path)
    assert [r.levelname for r in caplog.records] == ["WARNING"] and "absent.json" in caplog.text
    write_record(Record("present", "how fast?", [Table("per stage", ["stage", "p50"], [["encoder", 12.5]])],
                        command="python -m smoothdino.benchmarks.x"), tmp_path)
    rendered = hooks.figures("present", "page.md", results=tmp_path)
    assert "| encoder | 12.5 |" in rendered and "`python -m smoothdino.benchmarks.x`" in rendered


def figure_names(page) -> list[str]:
    """The records a page asks for (not the marker quoted as code, as ARCHITECTURE.md does to explain it)."""
    text = re.sub(r"`[^`\n]*`", "", without_fenced_code(page.read_text()))
    return re.findall(r"<!--\s*figures\s+([\w.-]+)\s*-->", text)


RECORDS = sorted((ROOT / "benchmarks" / "results").glob("*.json"))


def test_every_record_is_shown_and_every_page_asks_only_for_records_that_exist():
    """Each benchmarks/results/NAME.json appears on some page (`<!-- figures NAME -->`), and each page's figures have
    their record: a record nobody shows, or a page whose record was never made, is a figure the docs lose."""
    asked = {name: page for page in PAGES for name in figure_names(page)}
    recorded = {path.stem for path in RECORDS}
    assert recorded - set(asked) == set(), "records no page shows"
    assert {n: str(p.relative_to(ROOT)) for n, p in asked.items() if n not in recorded} == {}, "pages without records"


@pytest.mark.parametrize("path", RECORDS, ids=[p.stem for p in RECORDS])
def test_each_record_loads_and_renders_with_how_it_was_made(path):
    """A record is what a script wrote (benchmarks/record.py): tables whose rows fit their columns, the command that
    makes it again, the date, the machine and whether weights were random; the docs' hook renders all of it."""
    import json

    from smoothdino.benchmarks.record import read_record

    raw = json.loads(path.read_text())
    assert "random_weights" in raw and raw["random_weights"] in (True, False, None)
    record = read_record(path)
    assert record.name == path.stem and record.question
    assert record.tables and all(t.caption and t.columns and t.rows for t in record.tables)
    assert all(len(row) == len(t.columns) for t in record.tables for row in t.rows)
    module = record.command.split()[2] if record.command.startswith("python -m ") else ""
    assert module.startswith("smoothdino.benchmarks.") and record.command.endswith(" --record"), record.command
    assert importlib.util.find_spec(module) is not None, record.command
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", record.date) and record.machine and len(record.load_average) == 3
    rendered = load_hooks().figures(path.stem, "page.md", results=path.parent)
    assert f"`{record.command}`" in rendered and record.tables[0].caption in rendered
    assert rendered.count("\n|---") == len(record.tables)
    if record.random_weights:
        assert "**random weights**" in rendered
