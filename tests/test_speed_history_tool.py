"""benchmarks/test_speed_history.py, the pytest-benchmark suite of the CPU
grid: it times both sides of a cell in one group and writes pytest-benchmark's
JSON (the form in which a saved run is kept and compared), and its parity
rule, which must pass before a cell is timed, tells nn.LSTM's own error from
a larger one."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SUITE = ROOT / "benchmarks" / "test_speed_history.py"


def test_one_cell_timed_on_both_sides_in_one_group(tmp_path):
    report = tmp_path / "run.json"
    # pytest-benchmark stops timing (and writes no JSON) wherever xdist is
    # active, which it also reads from PYTEST_XDIST_WORKER: an xdist worker
    # running this test would pass that to the child.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(SUITE), "-q", "-p", "no:cacheprovider",
         "-p", "no:xdist", "-k", "C1 and float32 and inference",
         "--benchmark-min-rounds=2", "--benchmark-max-time=0.05", f"--benchmark-json={report}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 passed" in done.stdout, done.stdout[-2000:]
    runs = json.loads(report.read_text())["benchmarks"]
    assert sorted(b["name"] for b in runs) == ["test_cell[C1-float32-inference-fusedlstm]",
                                               "test_cell[C1-float32-inference-nn_lstm]"]
    for b in runs:
        assert b["group"] == "C1 float32 inference", b["group"]
        assert b["stats"]["rounds"] >= 2 and b["stats"]["median"] > 0, b["stats"]
        assert b["extra_info"]["threads"] >= 1 and b["extra_info"]["torch"] == torch.__version__


@pytest.fixture
def suite(monkeypatch):
    """The benchmark module, imported with its own `common` and
    `implementations`: examples/ has a `common` module too, which a test file
    run earlier in this process may have imported under that name."""
    for name in ("common", "implementations", "test_speed_history"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    return importlib.import_module("test_speed_history")


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_parity_rule_passes_nn_lstms_own_error_and_flags_three_times_it(suite, mode):
    """Twice nn.LSTM's error against float64 plus one unit of the dtype at the
    largest magnitude passes; three times it fails, for each tensor compared."""
    g = torch.Generator().manual_seed(0)
    exact_out = torch.randn(5, 2, 4, generator=g, dtype=torch.float64)
    exact_grad = torch.randn(5, 2, 3, generator=g, dtype=torch.float64)
    noise_out = 1e-3 * torch.randn(exact_out.shape, generator=g, dtype=torch.float64)
    noise_grad = 1e-3 * torch.randn(exact_grad.shape, generator=g, dtype=torch.float64)

    def result(k_out, k_grad):
        out = (exact_out + k_out * noise_out).float()
        if mode == "inference":
            return (out, None)
        return out, ((exact_grad + k_grad * noise_grad).float(),)

    exact = (exact_out, None) if mode == "inference" else (exact_out, (exact_grad,))
    theirs = result(1, 1)
    check = lambda ours: suite.parity_failures(mode, ours, theirs, exact, torch.float32)  # noqa: E731
    assert check(theirs) == [] and check(result(2, 2)) == []
    assert [f.split(":")[0] for f in check(result(3, 1))] == ["output"]
    if mode == "training":
        assert [f.split(":")[0] for f in check(result(1, 3))] == ["grad_input"]
