"""The fuzz sweeps' hypothesis settings (tests/fuzz_strategies.fuzz_settings):
FUSEDLSTM_FUZZ_NO_SHRINK=1, which scripts/gpu_check.sh sets so that a sweep
with a hard time limit prints its first failure as drawn, must report that
example and not a shrunk one; without it hypothesis shrinks as usual.

Each case runs in a child process, since fuzz_strategies reads the
environment once, at import."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

# A property that fails for every n >= 1000; the draws are derandomised, so
# the same in both runs. The last call is hypothesis's replay of the example
# it reports.
_CHILD = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    from hypothesis import given, strategies as st
    from fuzz_strategies import fuzz_settings

    calls = []

    @fuzz_settings(200)
    @given(st.integers(0, 10**6))
    def prop(n):
        calls.append(n)
        assert n < 1000

    try:
        prop()
    except AssertionError:
        pass
    first = next(n for n in calls if n >= 1000)
    print(json.dumps({{"first_failure": first, "reported": calls[-1]}}))
""")


def _run(no_shrink: str | None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("FUSEDLSTM_FUZZ_NO_SHRINK", "FUSEDLSTM_FUZZ_EXAMPLES")}
    if no_shrink is not None:
        env["FUSEDLSTM_FUZZ_NO_SHRINK"] = no_shrink
    out = subprocess.run([sys.executable, "-c", _CHILD.format(tests=str(TESTS))], env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_no_shrink_reports_the_first_failure_as_drawn():
    result = _run("1")
    assert result["first_failure"] != 1000, result  # else the two cases look alike
    assert result["reported"] == result["first_failure"], result


@pytest.mark.parametrize("value", [None, "0"])
def test_by_default_the_failure_is_shrunk(value):
    assert _run(value)["reported"] == 1000
