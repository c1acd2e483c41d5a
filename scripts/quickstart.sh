#!/usr/bin/env bash
# Sets up fusedlstm on a fresh machine and runs one of its two jobs:
#   bash scripts/quickstart.sh report   side-by-side parity and speed vs torch.nn.LSTM
#                                       (what follows goes to the report: --help, --shape ...)
#   bash scripts/quickstart.sh test     the test suite
# Installs torch 2.13.0 only where no torch is installed (an installed torch is
# never replaced), builds the extension for the torch that is there (with CUDA
# where torch and a CUDA toolkit both have it), then runs the job.
set -euo pipefail
cd "$(dirname "$0")/.."
job="${1:-}"
PY="${PYTHON:-python3}"

case "$job" in
  report|test) ;;
  *) echo "usage: bash scripts/quickstart.sh report|test" >&2; exit 2 ;;
esac

pip_install() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "== installing torch 2.13.0"
  pip_install "torch==2.13.0"
fi
# The build needs these beside torch (no build isolation: it builds against
# the torch that is installed), setuptools from 77 on, the first to read
# pyproject.toml's licence expression (setup.py says so too).
"$PY" - 2>/dev/null <<'PY' || pip_install "setuptools>=77" wheel ninja
import re, setuptools, wheel, ninja
assert int(re.match(r"\d+", setuptools.__version__).group()) >= 77
PY
if [ "$job" = test ]; then
  missing=$("$PY" - <<'PY'
import importlib.util
wanted = {"pytest": "pytest", "hypothesis": "hypothesis",
          "pytest_benchmark": "pytest-benchmark", "sklearn": "scikit-learn",
          "matplotlib": "matplotlib", "onnx": "onnx", "onnxscript": "onnxscript",
          "onnxruntime": "onnxruntime", "xdist": "pytest-xdist"}
print(" ".join(pip for mod, pip in wanted.items() if importlib.util.find_spec(mod) is None))
PY
)
  [ -z "$missing" ] || { echo "== installing $missing"; pip_install $missing; }
fi

# On a machine with a GPU, build for that GPU only (setup.py's default list
# of five targets is for builds that travel); an explicit list wins.
if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
  local_arch=$("$PY" -c 'import torch
if torch.version.cuda and torch.cuda.is_available():
    print(".".join(map(str, torch.cuda.get_device_capability())))' 2>/dev/null || true)
  if [ -n "$local_arch" ]; then export TORCH_CUDA_ARCH_LIST="$local_arch"; fi
fi
echo "== building fusedlstm ($("$PY" -c 'import torch; print("torch", torch.__version__)'))${TORCH_CUDA_ARCH_LIST:+ for GPU target $TORCH_CUDA_ARCH_LIST}"
MAX_JOBS="${MAX_JOBS:-$(nproc)}" pip_install --no-build-isolation -e .

if [ "$job" = report ]; then
  exec "$PY" -m fusedlstm.report "${@:2}"
fi
# The suite on every core (scripts/run_tests.sh says how and why).
exec bash scripts/run_tests.sh "$PY"
