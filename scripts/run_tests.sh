#!/usr/bin/env bash
# Runs the test suite on every core: the last step of `scripts/quickstart.sh
# test` (the README's test command) and of scripts/check_torch_version.sh.
#   bash scripts/run_tests.sh PYTHON [PYTEST_ARGS...]
#
# The suite gives each test one intra-op thread (tests/conftest.py), so one
# pytest process fills one core: pytest-xdist runs a worker per core, at most
# 8 (each holds its own torch and compile caches). --dist loadfile keeps each
# test file on one worker, its tests in file order as in a serial run and its
# module fixtures built once. FUSEDLSTM_TEST_WORKERS=N overrides the count;
# 0 runs the tests in this process.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="$1"
shift
cores=$(nproc)
workers="${FUSEDLSTM_TEST_WORKERS:-$(( cores < 8 ? cores : 8 ))}"
"$PY" -m pytest tests -q -n "$workers" --dist loadfile "$@"
status=$?
# pytest exits 5 when it collected no test: that is a failure here.
[ "$status" -eq 5 ] && echo "pytest collected no tests" >&2
exit "$status"
