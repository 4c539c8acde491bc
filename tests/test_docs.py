"""The built docs site shows what it claims: each included example's code, reference examples."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
INCLUDE = re.compile(r'--8<-- "([^":]+)(?::(\d+):(\d+))?"')


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


def page_of(source: Path, site: Path) -> Path:
    relative = source.relative_to(ROOT / "docs").with_suffix("")
    return site / ("index.html" if relative.name == "index" else relative / "index.html")


def code_text(page: Path) -> str:
    blocks = re.findall(r"<code[^>]*>(.*?)</code>", page.read_text(), re.S)
    return "\n".join(html.unescape(re.sub(r"<[^>]+>", "", b)) for b in blocks)


def test_every_included_example_is_on_its_page_as_code(site: Path) -> None:
    included = 0
    for source in (ROOT / "docs").rglob("*.md"):
        for name, start, end in INCLUDE.findall(source.read_text()):
            lines = (ROOT / name).read_text().splitlines()
            if start:
                lines = lines[int(start) - 1 : int(end)]
            # Every definition line of the included part shows up in a code block.
            wanted = [
                line.strip() for line in lines if line.lstrip().startswith(("def ", "async def "))
            ]
            assert wanted, f"{name}: nothing to look for"
            code = code_text(page_of(source, site))
            assert [w for w in wanted if w not in code] == [], (source.name, name)
            included += 1
    assert included >= 8


def test_no_page_shows_a_snippet_marker(site: Path) -> None:
    for page in site.rglob("*.html"):
        text = html.unescape(page.read_text())
        assert "--8<--" not in text and "--8 < --" not in text, page


def test_reference_examples_render_as_code(site: Path) -> None:
    for page in (site / "reference").rglob("index.html"):
        text = page.read_text()
        # A doctest prompt outside a code block is an example rendered as prose.
        prose = re.sub(r"<code[^>]*>.*?</code>", "", text, flags=re.S)
        assert "&gt;&gt;&gt;" not in prose, page
    flowz_page = (site / "reference" / "flowz" / "index.html").read_text()
    assert flowz_page.count('class="highlight"') >= 10
