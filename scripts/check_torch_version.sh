#!/usr/bin/env bash
# Builds fusedlstm against another torch release and runs the test suite
# there, in a throwaway virtual environment and the source distribution of
# the committed tree:
#   bash scripts/check_torch_version.sh [VERSION]      (default 2.11.0)
#   REQUIRE_CUDA=1 bash scripts/check_torch_version.sh  (fail without a CUDA build)
#   FUSEDLSTM_FORCE_CPU=1 bash scripts/check_torch_version.sh 2.9.1
#     (a release whose PyPI wheel was built for another CUDA than the local
#     nvcc, which torch's extension builder refuses: the CPU kernels only)
#
# Why: the lent GPU machines run torch 2.11 (CUDA 13.0), the floor, and CI and
# the quick start torch 2.13 (CPU); users get the newest release. PyPI's
# Linux wheel of 2.11 is the CUDA 13.0 build, so where nvcc is installed this
# compiles the CUDA kernels too, as the GPU machine will, and the CPU suite
# runs on that torch (its CUDA tests skip without a device). A torch.compile
# tracing difference once failed 23 tests on 2.11 alone, and torch 2.15's
# new state checks in torch.lstm_cell changed LSTMCell's error messages:
# neither shows on 2.13. CI runs this for the floor and the newest release.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${1:-2.11.0}"
PY="${PYTHON:-python3}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

echo "== torch $VERSION in a virtual environment"
"$PY" -m venv "$scratch/venv"
VPY="$scratch/venv/bin/python"
# A machine-wide pip constraints file (one that caps torch at the release a
# machine keeps on disk) must not veto the release asked for, in a throwaway
# environment made for it: neither at its install nor at fusedlstm's below,
# whose `torch>=2.11` pip would otherwise satisfy by swapping in the capped
# release after the build (which `import fusedlstm` then refuses).
export PIP_CONSTRAINT=/dev/null
"$VPY" -m pip install --disable-pip-version-check -q "torch==$VERSION" \
  numpy "setuptools>=77" wheel ninja pytest pytest-xdist hypothesis pytest-benchmark scikit-learn matplotlib tqdm \
  onnx onnxscript onnxruntime

# The tree built and tested is the source distribution of the committed
# tree, unpacked: what `python -m build` makes a wheel from, so that a file
# MANIFEST.in leaves out fails here (tests/test_packaging.py holds the sdist
# to the tracked files; this shows that it builds and passes the suite).
git clone -q . "$scratch/clone"
sdist=$(cd "$scratch/clone" && "$VPY" -c \
  'import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))' "$scratch/dist" | tail -n 1)
mkdir "$scratch/tree"
tar xzf "$scratch/dist/$sdist" -C "$scratch/tree" --strip-components=1
cd "$scratch/tree"
echo "== built and tested from the sdist $sdist ($(find . -type f | wc -l) files)"
# torch finds CUDA through `which nvcc`, which a wrapper script can hide.
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDA_HOME=/usr/local/cuda
fi
echo "== building ($("$VPY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'), CUDA_HOME=${CUDA_HOME:-none})"
TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
  "$VPY" -m pip install --disable-pip-version-check -q --no-build-isolation -e .
# REQUIRE_CUDA=1 (CI where nvcc is present): a build without the CUDA kernels
# fails here, since CI counts on this build to have compiled them for sm_90.
REQUIRE_CUDA="${REQUIRE_CUDA:-0}" "$VPY" - <<'PY'
import os, sys
import torch, fusedlstm
has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key("fusedlstm::lstm_layer_forward", "CUDA")
print("CUDA kernel registered:", has_cuda)
if os.environ["REQUIRE_CUDA"] == "1" and not has_cuda:
    sys.exit("REQUIRE_CUDA=1 but this build has no CUDA kernels")
PY

echo "== test suite on torch $VERSION"
# Not exec: the trap removes the scratch folder when this shell exits.
bash scripts/run_tests.sh "$VPY" -p no:cacheprovider
