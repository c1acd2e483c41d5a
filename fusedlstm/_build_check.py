"""Refuses to load the compiled library under a torch other than the one it
was built against.

torch's C++ interface is not stable between releases: a library built for
one and loaded under another fails at best with an "undefined symbol" that
names no cause, and at worst loads, with structures laid out differently
from what its code expects. That happens after `pip install -U torch` over
an existing build, or after a build with isolation (`pip install .` without
--no-build-isolation), which compiles against whatever torch pip fetches
into the build environment, not the installed one. setup.py records the
torch it compiled against in fusedlstm/_build_info.py (generated, not
tracked); this compares it with the running torch before fusedlstm._C is
loaded.
"""
from __future__ import annotations

import torch

_REBUILD = ("Rebuild fusedlstm for this torch: pip install --no-build-isolation . "
            "(or -e . for an editable install) in its source tree.")


def public_version(version: str) -> str:
    """A torch version without its local label: "2.13.0+cpu" -> "2.13.0". A
    release's CPU and CUDA wheels share their C++ interface; the label names
    the wheel, not the interface."""
    return str(version).split("+", 1)[0]


def mismatch(built_version: str, built_cxx11_abi: bool,
             running_version: str, running_cxx11_abi: bool) -> str | None:
    """Why a library built against (built_*) cannot load under (running_*),
    or None where it can: the same release, and the same C++ standard
    library ABI (torch's pip wheels up to 2.6 used the pre-C++11 one, its
    conda builds the C++11 one)."""
    if public_version(built_version) != public_version(running_version):
        return (f"fusedlstm was built against torch {built_version}, and this is torch "
                f"{running_version}. torch's C++ interface changes between releases, so "
                f"the compiled library cannot be loaded safely. {_REBUILD}")
    if bool(built_cxx11_abi) != bool(running_cxx11_abi):
        return (f"fusedlstm was built against a torch {built_version} with "
                f"_GLIBCXX_USE_CXX11_ABI={int(built_cxx11_abi)}, and this torch "
                f"{running_version} uses _GLIBCXX_USE_CXX11_ABI={int(running_cxx11_abi)}: "
                f"the compiled library cannot be loaded. {_REBUILD}")
    return None


def check_build() -> None:
    """Raises ImportError where fusedlstm._C is missing or was built against
    another torch than this one."""
    try:
        from . import _build_info
    except ImportError:
        raise ImportError(
            "fusedlstm's compiled library is not built (fusedlstm/_build_info.py, which "
            "the build writes, is missing). Build it: pip install --no-build-isolation . "
            "(or -e . for an editable install) in its source tree.") from None
    reason = mismatch(_build_info.TORCH_VERSION, _build_info.CXX11_ABI,
                      torch.__version__, torch.compiled_with_cxx11_abi())
    if reason:
        raise ImportError(reason)
