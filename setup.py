"""Builds fusedlstm._C: the C++ CPU kernels always, the CUDA kernels when a
CUDA toolkit and a CUDA-enabled torch are both present.

Environment:
  FUSEDLSTM_FORCE_CPU=1   build without CUDA even where it is available.
  TORCH_CUDA_ARCH_LIST    GPU targets (default: 7.5 8.0 8.6 8.9 9.0+PTX; one
                          target, e.g. 9.0, builds several times faster).
  MAX_JOBS                parallel compile jobs (ninja).
  FUSEDLSTM_SANITIZE      a -fsanitize= list (e.g. address,undefined) for the
                          C++ sources, for scripts/cpu_sanitizers.sh; such a
                          build runs only with the sanitizer's runtime preloaded.
"""
import glob
import os
import re
import sys

import setuptools
from setuptools import setup

# pyproject.toml gives the licence as an SPDX expression (PEP 639), the form
# setuptools reads from 77 on and the only one it will build after
# 2027-02-18. An older setuptools rejects the file with "`project.license`
# must be valid exactly by one definition"; a build without isolation uses
# whatever setuptools is installed, so say what to do instead.
if int(re.match(r"\d+", setuptools.__version__).group()) < 77:
    sys.exit(f"fusedlstm needs setuptools>=77 to build; this is setuptools "
             f"{setuptools.__version__}. Upgrade it: pip install -U 'setuptools>=77'")

import torch  # noqa: E402 (after the check: torch is slow to import)
from torch.utils import cpp_extension  # noqa: E402

# The oldest torch release fusedlstm builds and runs on, as pyproject.toml's
# dependencies say (tests/test_packaging.py holds the two equal): the oldest
# CI builds and tests at every commit (it runs 2.11 and 2.13). Before 2.9
# fusedlstm neither compiles nor imports; 2.9.1 fails 6 tests (NOTES,
# forty-fourth session). An older torch fails the build with a compiler
# error that names no version, or later, so say it here.
TORCH_FLOOR = (2, 11)
if tuple(int(x) for x in re.findall(r"\d+", torch.__version__)[:2]) < TORCH_FLOOR:
    sys.exit(f"fusedlstm needs torch>={TORCH_FLOOR[0]}.{TORCH_FLOOR[1]}; this is torch "
             f"{torch.__version__}. Upgrade torch, then build again.")

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(ROOT, "csrc")


def _sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(CSRC, pattern)))


def _want_cuda():
    if os.environ.get("FUSEDLSTM_FORCE_CPU", "0") == "1":
        return False
    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


def _write_build_info():
    """fusedlstm/_build_info.py: the torch this build compiles against, which
    fusedlstm/_build_check.py compares with the running torch at import.
    Generated (git-ignored, kept out of the sdist); rewritten only when it
    changes, so that an unchanged rebuild leaves its time alone."""
    text = ("# Written by setup.py: the torch fusedlstm._C was built against\n"
            "# (checked at import by fusedlstm/_build_check.py). Not tracked.\n"
            f"TORCH_VERSION = {str(torch.__version__)!r}\n"
            f"CXX11_ABI = {bool(torch.compiled_with_cxx11_abi())!r}\n")
    path = os.path.join(ROOT, "fusedlstm", "_build_info.py")
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except OSError:
        pass
    with open(path, "w") as f:
        f.write(text)


def _extension():
    sources = _sources("*.cpp") + _sources("common/*.cpp") + _sources("cpu/*.cpp")
    # OpenMP: at::parallel_for is inline, and without -fopenmp it runs on one
    # thread. The runtime is the libgomp that torch has already loaded.
    cxx = ["-O3", "-fopenmp"]
    # -ldl: cpu/sequence_gemm.cpp looks up PyTorch's undeclared routines at
    # run time (torch_cpu_symbol; glibc before 2.34 keeps dlopen in libdl).
    link = ["-fopenmp"] + (["-ldl"] if sys.platform.startswith("linux") else [])
    sanitize = os.environ.get("FUSEDLSTM_SANITIZE", "")
    if sanitize:
        # Frame pointers and line tables, for the reports' stacks.
        cxx += [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g"]
        link += [f"-fsanitize={sanitize}"]
    include_dirs = [os.path.join(CSRC), os.path.join(CSRC, "include")]
    if not _want_cuda():
        return cpp_extension.CppExtension(
            "fusedlstm._C", sources, include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx}, extra_link_args=link,
            py_limited_api=True,
        )
    # From Turing (T4) up; the PTX of 9.0 serves newer GPUs. Each kernel
    # checks at run time that the device's image has the instructions it
    # needs (sm_80's for bfloat16 and TF32, sm_90's for clusters).
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "7.5 8.0 8.6 8.9 9.0+PTX")
    sources += _sources("cuda/*.cpp") + _sources("cuda/*.cu") + _sources("cuda/**/*.cu")
    nvcc = ["-O3", "-lineinfo",
            "-DFUSEDLSTM_WITH_CUDA", "--expt-relaxed-constexpr"]
    return cpp_extension.CUDAExtension(
        "fusedlstm._C", sorted(set(sources)), include_dirs=include_dirs,
        extra_compile_args={"cxx": cxx + ["-DFUSEDLSTM_WITH_CUDA"], "nvcc": nvcc},
        extra_link_args=link, py_limited_api=True,
    )


_write_build_info()
setup(
    ext_modules=[_extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
