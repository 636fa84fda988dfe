"""The docs site: generated pages are current, and what points into the docs (code comments, links) lands.

A code comment names a page by its path under ``docs/``, optionally followed by the heading it means:
``(docs/limits.md, "Resource limits")``. Every such reference in the project's Python must name a page that
exists and, where it names a heading, a heading of that page. Links between the Markdown pages (and from the
README into them) must land on a file and, with ``#anchor``, on a heading.
"""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
CODE_FOLDERS = ("server", "pipelines", "weights", "cli", "scripts", "benchmarks", "tests")
# A docs path, then optionally a comma and the heading in double quotes.
DOC_REFERENCE = re.compile(r'\bdocs/([\w/.-]+\.md)(?:\)?,? "([^"]+)")?')
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", REPO / "scripts/gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def headings(page: Path) -> list[str]:
    """The page's headings as written (fenced code skipped, so a shell comment is no heading)."""
    found, fenced = [], False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := HEADING.match(line)):
            found.append(match.group(1))
    return found


def slug(heading: str) -> str:
    """The anchor MkDocs gives a heading (its toc extension's default slugify, on the heading's text)."""
    text = re.sub(r"[`*]|\[([^]]*)\]\([^)]*\)", r"\1", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower())


def python_files() -> list[Path]:
    return sorted(path for folder in CODE_FOLDERS for path in (REPO / folder).rglob("*.py"))


def markdown_pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def test_the_generated_pages_are_current():
    stale = load_generator().stale_pages()
    assert stale == [], f"stale generated pages {stale}: run python scripts/gen_docs.py"


def test_the_generator_names_a_stale_page_and_writes_what_it_checks(tmp_path: Path):
    generator = load_generator()
    assert generator.stale_pages(tmp_path) == list(generator.PAGES)  # none written yet
    generator.write_pages(tmp_path)
    assert generator.stale_pages(tmp_path) == []
    options = tmp_path / "docs/reference/options.md"
    options.write_text(options.read_text().replace("`--port`", "`--prot`"))
    assert generator.stale_pages(tmp_path) == ["docs/reference/options.md"]


def test_the_options_page_lists_every_declared_option_once():
    generator = load_generator()
    _, options, _ = generator.options_source()
    page = (REPO / "docs/reference/options.md").read_text()
    for spec in options.values():
        assert page.count(f"| `{spec.flag}` | `{spec.env}` | `{spec.key}") == 1, spec.flag


def test_every_docs_reference_in_the_code_names_a_page_and_heading_that_exist():
    references, broken = 0, []
    for path in python_files():
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            for page_name, heading in DOC_REFERENCE.findall(line):
                references += 1
                page = REPO / "docs" / page_name
                where = f"{path.relative_to(REPO)}:{number}: docs/{page_name}"
                if not page.is_file():
                    broken.append(f"{where}: no such page")
                elif heading and heading not in headings(page):
                    broken.append(f'{where}: no heading "{heading}"')
    assert broken == []
    assert references >= 25  # the comments that point into the docs (a regex that matched nothing would pass)


def test_no_code_comment_points_at_a_readme_section():
    readme = "READ" + "ME"  # spelt apart, so this line does not match itself
    pattern = re.compile(rf"\({readme}\b|\b{readme}[,:]? \"|the {readme}'s|{readme}\)")
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in python_files()
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if pattern.search(line)
    ]
    assert found == []


@pytest.mark.parametrize("page", markdown_pages(), ids=lambda page: str(page.relative_to(REPO)))
def test_relative_links_land_on_a_file_and_a_heading(page: Path):
    broken = []
    for target in MARKDOWN_LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in {slug(h) for h in headings(linked)}:
            broken.append(f"{target}: no heading with anchor #{anchor}")
    assert broken == []


def test_the_readme_stays_short_and_names_the_docs():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    assert "docs/index.md" in readme
