"""The examples at reduced size, under both impls: swapping in fusedlstm changes nothing
but the speed (issue 7)."""
import contextlib
import functools
import io
import os
import pathlib
import subprocess
import sys

import pytest
import torch

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

import digits_classifier  # noqa: E402
import forecast_bidirectional  # noqa: E402
import retrofit  # noqa: E402
import shapes_tour  # noqa: E402

# Small enough that the whole file stays well under a minute of CPU on 2 cores.
REDUCED = {
    shapes_tour: ["--limit", "256", "--epochs", "2"],
    digits_classifier: ["--limit", "400", "--epochs", "3", "--hidden", "32"],
    forecast_bidirectional: ["--limit", "160", "--epochs", "2", "--window", "15",
                             "--hidden", "16"],
    retrofit: ["--limit", "400", "--epochs", "1", "--more-epochs", "2"],
}

# Loss curves after training are not bit-identical between implementations: the
# kernels sum in a different order, so each step differs by float32 rounding
# (~1e-7 relative), and training compounds that through every Adam step. 1e-4
# relative bounds that drift with a wide margin: measured on CPU it is at most
# 1.5e-6 even over the examples' full default runs. A wrong gate, bias or
# gradient moves the curve by 1e-2 or more already in epoch 1.
TRAINING_DRIFT = dict(rtol=1e-4, atol=1e-6)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True, scope="module")
def full_float32_single_thread():
    # One thread: these LSTMs are tiny, and on shared CI cores extra threads
    # spin-wait (measured: 11 s per digits epoch with 2 threads, 0.12 s with 1).
    # No TF32: cuDNN would otherwise round nn.LSTM's matmuls to 10-bit mantissas.
    saved = torch.get_num_threads(), torch.backends.cudnn.allow_tf32
    torch.set_num_threads(1)
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.set_num_threads(saved[0])
    torch.backends.cudnn.allow_tf32 = saved[1]


@functools.lru_cache(maxsize=None)
def run_with_output(example, impl, device):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = example.main(REDUCED[example] + ["--impl", impl, "--device", device])
    return result, printed.getvalue()


def run(example, impl, device):
    return run_with_output(example, impl, device)[0]


@pytest.mark.parametrize("impl", ["torch", "fused"])
@pytest.mark.parametrize("example", list(REDUCED), ids=lambda m: m.__name__)
def test_prints_time_per_epoch(example, impl):
    result, printed = run_with_output(example, impl, "cpu")
    epochs = len(result["times"])
    assert epochs > 0
    assert printed.count(" time ") >= epochs  # one line per epoch
    assert "time per epoch: first" in printed


@pytest.mark.parametrize("device", DEVICES)
def test_shapes_tour_agrees(device):
    torch_run, fused_run = run(shapes_tour, "torch", device), run(shapes_tour, "fused", device)
    assert fused_run["shapes"] == torch_run["shapes"]
    batch, steps, hidden = shapes_tour.BATCH, shapes_tour.STEPS, shapes_tour.HIDDEN
    shapes = fused_run["shapes"]
    assert shapes["output (batch, steps, hidden)"] == (batch, steps, hidden)
    assert shapes["h_n (layers, batch, hidden)"] == (1, batch, hidden)
    assert shapes["output (batch, steps, 2*hidden)"] == (batch, steps, 2 * hidden)
    assert shapes["h_n (2*layers, batch, hidden)"] == (4, batch, hidden)
    torch.testing.assert_close(fused_run["losses"], torch_run["losses"], **TRAINING_DRIFT)
    assert fused_run["accuracy"] == torch_run["accuracy"]


def test_shapes_tour_checks_h_n_is_last_step():
    # The script itself asserts it (assert_close); the printed line says it passed.
    printed = run_with_output(shapes_tour, "fused", "cpu")[1]
    assert "h_n[-1] == output[:, -1]: yes" in printed
    assert "explicit zero (h0, c0) gives the same output, h_n, c_n: yes" in printed


@pytest.mark.parametrize("device", DEVICES)
def test_digits_classifier_agrees(device):
    torch_run = run(digits_classifier, "torch", device)
    fused_run = run(digits_classifier, "fused", device)
    assert torch_run["losses"][-1] < torch_run["losses"][0]  # it does learn
    torch.testing.assert_close(fused_run["losses"], torch_run["losses"], **TRAINING_DRIFT)
    assert fused_run["accuracy"] == torch_run["accuracy"]


@pytest.mark.parametrize("device", DEVICES)
def test_forecast_bidirectional_agrees(device):
    torch_run = run(forecast_bidirectional, "torch", device)
    fused_run = run(forecast_bidirectional, "fused", device)
    torch.testing.assert_close(fused_run["losses"], torch_run["losses"], **TRAINING_DRIFT)
    torch.testing.assert_close(fused_run["rmse"], torch_run["rmse"], **TRAINING_DRIFT)


@pytest.mark.parametrize("device", DEVICES)
def test_retrofit_loads_nn_lstm_checkpoint(device):
    fused_run = run(retrofit, "fused", device)
    # Same weights, same inputs: float32 defaults, with no allowance for training drift.
    torch.testing.assert_close(fused_run["actual"], fused_run["expected"])
    # Both runs start from the same trained original, so their continued training compares.
    torch_run = run(retrofit, "torch", device)
    torch.testing.assert_close(fused_run["expected"], torch_run["expected"])
    torch.testing.assert_close(fused_run["losses"], torch_run["losses"], **TRAINING_DRIFT)
    assert fused_run["accuracy"] == torch_run["accuracy"]


def test_runs_as_a_script():
    # The examples import `common` as a sibling, which only works when run by path.
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "shapes_tour.py"), "--impl", "fused",
         "--device", "cpu", "--epochs", "1", "--limit", "64"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert "h_n[-1] == output[:, -1]: yes" in result.stdout
    assert "time per epoch" in result.stdout
