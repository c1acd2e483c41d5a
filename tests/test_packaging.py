"""The source distribution: what `python -m build` turns into the wheel, and
what pip builds from where no wheel fits.

setuptools on its own puts into an sdist only the C++ sources a build lists,
the package and tests/test*.py: no header, and no CUDA source when the sdist
is made on a CPU machine. Such a tarball cannot compile (before MANIFEST.in,
`autograd.cpp: fatal error: autograd_helpers.h`). These tests build the
sdist of the working tree as git sees it and hold it to MANIFEST.in's rule:
every tracked file but the CI plumbing, every include of the extension's
sources found inside it, and licence metadata in the form setuptools keeps
building after 2027-02-18. The build from the sdist itself is exercised by
scripts/check_torch_version.sh, which CI runs: it builds and tests the
unpacked sdist.
"""
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What the sdist leaves out on purpose: CI's own files.
NOT_SHIPPED = re.compile(r"^(\.ci/|\.gitignore$)")
# What setuptools adds of its own: the metadata and the egg-info it wrote.
GENERATED = re.compile(r"^(PKG-INFO|setup\.cfg|fusedlstm\.egg-info/.*)$")
# setup.py's include_dirs, after the including file's own folder.
INCLUDE_DIRS = ("csrc", "csrc/include")
INCLUDE = re.compile(r'^\s*#\s*include\s*(?:"([^"]+)"|<(fusedlstm/[^>]+)>)', re.M)
CXX_SUFFIXES = (".cpp", ".cu", ".h", ".cuh")


def tracked_files():
    """The files of the working tree that git tracks or would track (new files
    not yet added count, as they would once committed)."""
    if not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout: the sdist is compared with the files git tracks")
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return sorted(p for p in out.splitlines() if (ROOT / p).is_file())


def build_sdist(files, tree, dist):
    """Copies `files` into `tree` (a clean clone, as the sdist should be made
    from) and builds its sdist into `dist` through setuptools' PEP 517 hook,
    which is what `python -m build --sdist` calls. Returns the member names
    below the top folder, the PKG-INFO text, the LICENSE bytes (None where
    it is missing) and the build's output."""
    for name in files:
        target = tree / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    proc = subprocess.run(
        [sys.executable, "-c",
         "import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))", str(dist)],
        cwd=tree, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    archive = dist / proc.stdout.strip().splitlines()[-1]
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        top = members[0].name.split("/", 1)[0]
        names = sorted(m.name.split("/", 1)[1] for m in members)
        pkg_info = tar.extractfile(f"{top}/PKG-INFO").read().decode()
        licence = tar.extractfile(f"{top}/LICENSE").read() if "LICENSE" in names else None
    return names, pkg_info, licence, log


def unresolved_includes(names, read):
    """Each `#include "x"` (and `<fusedlstm/x>`) of a C++/CUDA file under
    csrc/ that names no file of `names`, looked for the way the compiler does
    with setup.py's flags: beside the including file, then in INCLUDE_DIRS.
    `read(name)` gives a file's text. Returns them, and how many includes
    were looked at."""
    present = set(names)
    missing, looked_at = [], 0
    for name in names:
        if not (name.startswith("csrc/") and name.endswith(CXX_SUFFIXES)):
            continue
        folder = os.path.dirname(name)
        for quoted, angled in INCLUDE.findall(read(name)):
            candidates = ([folder] if quoted else []) + list(INCLUDE_DIRS)
            header = quoted or angled
            looked_at += 1
            if not any(os.path.normpath(os.path.join(d, header)) in present for d in candidates):
                missing.append(f"{name}: {header}")
    return missing, looked_at


def shipped_and_expected(files, names):
    """What the sdist holds of its own (`names` less setuptools' metadata),
    and what MANIFEST.in's rule says it should (`files` less CI's)."""
    return ([n for n in names if not GENERATED.match(n)],
            [f for f in files if not NOT_SHIPPED.match(f)])


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    files = tracked_files()
    base = tmp_path_factory.mktemp("sdist")
    return files, base, build_sdist(files, base / "tree", base / "dist")


def test_sdist_holds_the_tracked_tree(sdist):
    files, _, (names, _, _, _) = sdist
    shipped, expected = shipped_and_expected(files, names)
    assert shipped == expected, (
        f"missing from the sdist: {sorted(set(expected) - set(shipped))[:20]}; "
        f"not tracked: {sorted(set(shipped) - set(expected))[:20]}")
    # The extension's headers and the CUDA sources, which setuptools alone
    # leaves out, by name, so that the rule's point is stated.
    for required in ("csrc/autograd_helpers.h", "csrc/include/fusedlstm/lstm.h",
                     "csrc/cuda/persistent/persistent_fwd.cuh", "csrc/cuda/cell_kernels.cu"):
        assert required in names


def test_sdist_includes_resolve(sdist):
    _, base, (names, _, _, _) = sdist
    missing, looked_at = unresolved_includes(names, lambda n: (base / "tree" / n).read_text())
    assert missing == []
    # The check reads something: the extension's sources include their own
    # headers a couple of hundred times.
    assert looked_at > 100


def test_sdist_licence_metadata(sdist):
    _, _, (_, pkg_info, licence, log) = sdist
    fields = [line for line in pkg_info.splitlines() if ":" in line]
    assert "License-Expression: BSD-3-Clause" in fields
    assert "License-File: LICENSE" in fields
    assert "Requires-Dist: torch>=2.11" in fields
    assert "Requires-Python: >=3.10" in fields
    assert licence == (ROOT / "LICENSE").read_bytes()
    assert b"BSD 3-Clause License" in licence
    # The TOML-table form of project.license builds with a warning until
    # setuptools drops it (2027-02-18); no such warning may come back.
    assert "SetuptoolsDeprecationWarning" not in log, log


def test_checks_catch_setuptools_default(tmp_path):
    """The sdist setuptools makes without MANIFEST.in, the one this file was
    written for, fails both checks above: its headers are missing."""
    files = [f for f in tracked_files() if f != "MANIFEST.in"]
    names, _, _, _ = build_sdist(files, tmp_path / "tree", tmp_path / "dist")
    assert "csrc/autograd_helpers.h" not in names
    shipped, expected = shipped_and_expected(files, names)
    assert shipped != expected
    missing, _ = unresolved_includes(names, lambda n: (tmp_path / "tree" / n).read_text())
    assert "csrc/autograd.cpp: autograd_helpers.h" in missing
    assert "csrc/ops.cpp: fusedlstm/lstm.h" in missing


def setup_refusal(module: str, version: str) -> str:
    """Runs setup.py as a build would, with `module` saying it is `version`,
    and returns what it exited with (it must exit 1)."""
    code = (f"import runpy, {module}; {module}.__version__ = {version!r}; "
            "runpy.run_path('setup.py', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def test_setup_names_the_setuptools_it_needs():
    """A build without isolation (the README's) runs on the installed
    setuptools. One older than 77 cannot read pyproject.toml's licence
    expression and fails with "`project.license` must be valid exactly by one
    definition"; setup.py stops before that and says what to do."""
    assert setup_refusal("setuptools", "69.5.1") == (
        "fusedlstm needs setuptools>=77 to build; this is setuptools 69.5.1. "
        "Upgrade it: pip install -U 'setuptools>=77'")


def test_torch_floor_agrees():
    """pyproject.toml's torch requirement (run and build) and setup.py's
    TORCH_FLOOR, which stops a build on an older torch, name one release."""
    text = (ROOT / "pyproject.toml").read_text()
    floors = set(re.findall(r'"torch>=([0-9.]+)"', text))
    assert len(re.findall(r'"torch>=', text)) == 2 and len(floors) == 1, floors
    setup_text = (ROOT / "setup.py").read_text()
    major, minor = re.search(r"^TORCH_FLOOR = \((\d+), (\d+)\)$", setup_text, re.M).groups()
    assert floors == {f"{major}.{minor}"}


def test_setup_names_the_torch_it_needs():
    """An older torch fails the build in a compiler error that names no
    version (torch 2.4: at::vec has no fnmadd), or fails later; setup.py
    stops first."""
    assert setup_refusal("torch", "2.10.0+cpu") == (
        "fusedlstm needs torch>=2.11; this is torch 2.10.0+cpu. "
        "Upgrade torch, then build again.")
