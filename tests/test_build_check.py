"""fusedlstm refuses to load its compiled library under a torch other than
the one it was built against (fusedlstm/_build_check.py), with a message
that says what to do, instead of an "undefined symbol" or a library whose
structures disagree with torch's."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fusedlstm import _build_check, _build_info

ROOT = Path(__file__).resolve().parent.parent


def test_build_info_names_the_running_torch():
    # This suite runs on the torch it built against (quick start, CI's two
    # legs): the record must say so, in the form the check compares.
    assert _build_check.public_version(_build_info.TORCH_VERSION) == \
        _build_check.public_version(torch.__version__)
    assert _build_info.CXX11_ABI == torch.compiled_with_cxx11_abi()
    _build_check.check_build()


@pytest.mark.parametrize("built,running", [
    ("2.13.0+cpu", "2.13.0+cpu"),
    ("2.13.0+cpu", "2.13.0+cu130"),     # a release's CPU and CUDA wheels
    ("2.11.0+cu130", "2.11.0"),
    ("2.14.0.dev20261201+cpu", "2.14.0.dev20261201"),
])
def test_same_release_loads(built, running):
    assert _build_check.mismatch(built, True, running, True) is None


@pytest.mark.parametrize("built,running", [
    ("2.13.0+cpu", "2.14.0+cpu"),
    ("2.13.0", "2.13.1"),               # patch releases are not promised compatible
    ("2.11.0+cu130", "2.13.0+cpu"),
    ("2.14.0.dev20261201", "2.14.0.dev20261202"),  # nightlies change daily
])
def test_other_release_refused(built, running):
    reason = _build_check.mismatch(built, True, running, True)
    assert reason == (
        f"fusedlstm was built against torch {built}, and this is torch {running}. "
        "torch's C++ interface changes between releases, so the compiled library cannot "
        "be loaded safely. Rebuild fusedlstm for this torch: pip install "
        "--no-build-isolation . (or -e . for an editable install) in its source tree.")


def test_other_cxx_abi_refused():
    reason = _build_check.mismatch("2.5.1", False, "2.5.1+cu124", True)
    assert reason is not None
    assert "_GLIBCXX_USE_CXX11_ABI=0" in reason and "_GLIBCXX_USE_CXX11_ABI=1" in reason
    assert "Rebuild fusedlstm for this torch" in reason


def _import_in_child(prelude: str) -> subprocess.CompletedProcess:
    """Imports fusedlstm in a fresh interpreter after `prelude`, and reports
    what it raised and whether the compiled library got loaded."""
    code = prelude + """
import sys
try:
    import fusedlstm
    print("imported")
except ImportError as e:
    print("ImportError:", e)
print("_C loaded:", "fusedlstm._C" in sys.modules)
"""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=dict(os.environ))


def test_import_refused_under_another_torch():
    proc = _import_in_child("import torch\ntorch.__version__ = '2.99.0'\n")
    assert proc.returncode == 0, proc.stderr
    built = _build_info.TORCH_VERSION
    assert proc.stdout.splitlines() == [
        f"ImportError: fusedlstm was built against torch {built}, and this is torch 2.99.0. "
        "torch's C++ interface changes between releases, so the compiled library cannot "
        "be loaded safely. Rebuild fusedlstm for this torch: pip install "
        "--no-build-isolation . (or -e . for an editable install) in its source tree.",
        "_C loaded: False",
    ]


def test_import_refused_without_a_build():
    # sys.modules[name] = None makes `from . import _build_info` raise
    # ImportError, as a source tree that was never built does.
    proc = _import_in_child("import sys\nsys.modules['fusedlstm._build_info'] = None\n")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("ImportError: fusedlstm's compiled library is not built")
    assert lines[1] == "_C loaded: False"


def test_import_control():
    # The same child with nothing changed imports and loads the library, so
    # the two refusals above come from the check.
    proc = _import_in_child("")
    assert proc.stdout.splitlines() == ["imported", "_C loaded: True"], proc.stderr


def test_setup_records_the_torch_it_builds_against(tmp_path):
    # setup.py alone, in an empty tree: `--name` builds nothing but runs the
    # module, which writes the record.
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE"):
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    (tmp_path / "fusedlstm").mkdir()
    proc = subprocess.run([sys.executable, "setup.py", "--name"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    namespace = {}
    exec((tmp_path / "fusedlstm" / "_build_info.py").read_text(), namespace)
    assert namespace["TORCH_VERSION"] == str(torch.__version__)
    assert namespace["CXX11_ABI"] == torch.compiled_with_cxx11_abi()
