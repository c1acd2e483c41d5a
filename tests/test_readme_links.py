"""Every relative link in the READMEs points at a file that exists, so the
evidence a claim cites cannot silently disappear in a rename."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
READMES = ["README.md", "examples/README.md", "benchmarks/RESULTS.md"]
# Inline links `](target)` and reference definitions `[name]: target`.
LINK = re.compile(r"\]\(([^)\s]+)\)|^\[[^\]]+\]:\s*(\S+)", re.MULTILINE)


def relative_links(readme):
    text = (ROOT / readme).read_text()
    targets = [a or b for a, b in LINK.findall(text)]
    return [t for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


@pytest.mark.parametrize("readme", READMES)
def test_relative_links_exist(readme):
    links = relative_links(readme)
    base = (ROOT / readme).parent
    missing = [t for t in links if not (base / t.split("#")[0]).exists()]
    assert not missing, f"{readme} links to missing files: {missing}"


def test_readme_links_are_found():
    # Guards the pattern itself: the main README cites dozens of files.
    assert len(relative_links("README.md")) > 20
