"""fusedlstm under CPU autocast behaves as nn.LSTM / nn.LSTMCell.

What torch does (fusedlstm/_autocast.py has the reasoning): ``lstm`` is on
no CPU autocast list, and nn.LSTM's native CPU path is a loop of autocast
GEMMs and promoting elementwise ops. So the GEMMs run in the autocast dtype,
c_n comes back in promote(autocast dtype, c0's dtype) and output/h_n in that
dtype too, or in the autocast dtype with proj_size.

nn.LSTM is run with mkldnn disabled, i.e. on its native path: with mkldnn
enabled it takes oneDNN for padded input without proj_size, which on CPUs
without AVX-512 raises under autocast and on CPUs with it returns every
result in the autocast dtype (pinned below, so a change shows).

Values: the low-precision rule of helpers.assert_low_precision_parity
(error against a float64 nn.LSTM on the same values at most 2x nn.LSTM's own
error under autocast, plus one rounding step of the autocast dtype).
Dtypes of every result and gradient must equal nn.LSTM's.
"""
from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

import fusedlstm
from helpers import (
    assert_backward_unchanged_by_autocast, assert_low_precision_parity,
    assert_results_close, make_cell_pair, make_lstm_pair, run_lstm, state_shapes,
    to_reference,
)
from test_errors import assert_same_error

BF16 = torch.bfloat16


def _autocast(dtype=BF16):
    return functools.partial(torch.autocast, "cpu", dtype=dtype)


def _native():
    # nn.LSTM's native CPU path (see the module docstring).
    return torch.backends.mkldnn.flags(enabled=False)


def _check(ref, ours, x, hx=None, *, dtype=BF16, **run_kwargs):
    """Both modules under autocast against a float64 reference."""
    ctx = _autocast(dtype)
    with _native():
        theirs = run_lstm(ref, x, hx, forward_context=ctx, **run_kwargs)
    mine = run_lstm(ours, x, hx, forward_context=ctx, **run_kwargs)
    # The reference sees the very values the modules were given.
    ref64 = to_reference(ours)
    hx64 = None if hx is None else tuple(t.double() for t in hx)
    reference = run_lstm(ref64, x.double(), hx64, **run_kwargs)
    for key in theirs:
        if theirs[key] is not None:
            assert mine[key].dtype == theirs[key].dtype, (key, mine[key].dtype, theirs[key].dtype)
    assert_low_precision_parity(mine, theirs, reference, eps=torch.finfo(dtype).eps)
    return mine, theirs


LSTM_CONFIGS = [
    dict(),
    dict(num_layers=2, bidirectional=True),
    dict(proj_size=3),
    dict(num_layers=2, proj_size=4, bias=False, batch_first=True),
]

# (input dtype, h0 dtype, c0 dtype); None: no hx.
STATES = {
    "f32_nohx": (torch.float32, None, None),
    "f32_f32hx": (torch.float32, torch.float32, torch.float32),
    "f32_bf16hx": (torch.float32, BF16, BF16),
    "f32_mixedhx": (torch.float32, BF16, torch.float32),
    "f32_f16c0": (torch.float32, torch.float32, torch.float16),
    "bf16_nohx": (BF16, None, None),
}


def _inputs(module, dtypes, T=7, B=3):
    x_dtype, h_dtype, c_dtype = dtypes
    batch_first = getattr(module, "batch_first", False)
    x = torch.randn((B, T, module.input_size) if batch_first else (T, B, module.input_size))
    if h_dtype is None:
        return x.to(x_dtype), None
    hs, cs = state_shapes(module, B)
    return x.to(x_dtype), (torch.randn(hs).to(h_dtype), torch.randn(cs).to(c_dtype))


@pytest.mark.parametrize("state", list(STATES), ids=list(STATES))
@pytest.mark.parametrize("config", LSTM_CONFIGS, ids=str)
def test_lstm_bf16_autocast_like_torch(config, state):
    ref, ours = make_lstm_pair(5, 8, **config)
    x, hx = _inputs(ours, STATES[state])
    mine, _ = _check(ref, ours, x, hx)
    # Parameters stay float32 and so do their gradients.
    assert all(mine[f"grad_{n}"].dtype == torch.float32 for n, _ in ours.named_parameters())


@pytest.mark.parametrize("config", [dict(), dict(proj_size=3, bidirectional=True)], ids=str)
def test_lstm_bf16_autocast_packed(config):
    ref, ours = make_lstm_pair(5, 8, **config)
    x = torch.randn(6, 4, 5)
    _check(ref, ours, x, lengths=[3, 6, 1, 5], enforce_sorted=False)


def test_lstm_bf16_autocast_unbatched_long():
    """T = 100: rounding does not build up beyond torch's own."""
    ref, ours = make_lstm_pair(16, 32)
    _check(ref, ours, torch.randn(100, 16))


def test_lstm_fp16_autocast():
    """CPU autocast also takes float16; the same rules apply."""
    ref, ours = make_lstm_pair(5, 8, proj_size=3)
    x, hx = _inputs(ours, STATES["f32_f32hx"])
    _check(ref, ours, x, hx, dtype=torch.float16)


def test_float64_model_under_autocast_is_float64():
    """Autocast leaves float64 alone: nn.LSTM computes in float64."""
    ref, ours = make_lstm_pair(5, 8, dtype=torch.float64, num_layers=2)
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    with _native():
        theirs = run_lstm(ref, x, forward_context=_autocast())
    mine = run_lstm(ours, x, forward_context=_autocast())
    assert_results_close(mine, theirs)


@pytest.mark.parametrize("state", ["f32_nohx", "f32_f32hx", "f32_mixedhx", "bf16_nohx"])
def test_cell_bf16_autocast_like_torch(state):
    ref, ours = make_cell_pair(5, 8)
    x, hx = _inputs(ours, STATES[state], T=1)
    x = x[0]
    _check(ref, ours, x, hx)


# -------------------------------------------------------------------- errors

def _f64(shape):
    return torch.randn(shape, dtype=torch.float64)


ERROR_CASES = {
    # name: (ctor kwargs, T, which of x / h0 / c0 is float64)
    "input_f64": (dict(), 3, "x"),
    "h0_f64": (dict(), 3, "h0"),
    "c0_f64_multistep": (dict(), 3, "c0"),
    "c0_f64_two_layers": (dict(num_layers=2), 1, "c0"),
    "c0_f64_proj": (dict(proj_size=3), 1, "c0"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES), ids=list(ERROR_CASES))
def test_autocast_dtype_errors_alike(case):
    config, T, which = ERROR_CASES[case]
    pair = make_lstm_pair(5, 8, **config)

    def call(i):
        def run():
            m = pair[i]
            x = torch.randn(T, 2, 5)
            hs, cs = state_shapes(m, 2)
            h0, c0 = torch.randn(hs), torch.randn(cs)
            x, h0, c0 = (_f64(t.shape) if name == which else t
                         for name, t in (("x", x), ("h0", h0), ("c0", c0)))
            with _native(), torch.autocast("cpu", dtype=BF16):
                return m(x, (h0, c0))
        return run

    assert_same_error(call)


def test_float64_c0_single_step_not_implemented():
    """torch returns float64 results here (c promotes, and no GEMM follows);
    fusedlstm computes in one dtype and says so."""
    ref, ours = make_lstm_pair(5, 8)
    x, hx = torch.randn(1, 2, 5), (torch.randn(1, 2, 8), _f64((1, 2, 8)))
    with _native(), torch.autocast("cpu", dtype=BF16):
        assert ref(x, hx)[0].dtype == torch.float64
        with pytest.raises(NotImplementedError, match="float64 c0"):
            ours(x, hx)
    cell_ref, cell = make_cell_pair(5, 8)
    with torch.autocast("cpu", dtype=BF16):
        assert cell_ref(x[0], (hx[0][0], hx[1][0]))[0].dtype == torch.float64
        with pytest.raises(NotImplementedError, match="float64 c0"):
            cell(x[0], (hx[0][0], hx[1][0]))


def test_outside_autocast_dtype_checks_unchanged():
    """A bf16 state with a float32 input is refused without autocast."""
    ref, ours = make_lstm_pair(5, 8)
    x, hx = torch.randn(3, 2, 5), (torch.randn(1, 2, 8, dtype=BF16),) * 2
    for m in (ref, ours):
        with pytest.raises(RuntimeError):
            m(x, hx)


def test_torch_onednn_path_under_autocast():
    """Pins what the module docstring says of nn.LSTM's oneDNN path: where
    it is taken, the native-path dtypes above do not hold."""
    ref = nn.LSTM(5, 8)
    x = torch.randn(3, 2, 5)
    with torch.autocast("cpu", dtype=BF16):
        if not torch.backends.mkldnn.is_available():
            pytest.skip("torch built without oneDNN: nn.LSTM has only the native path")
        try:
            out, (h, c) = ref(x)
        except RuntimeError as e:
            assert "primitive descriptor" in str(e)
        else:
            assert (out.dtype, h.dtype, c.dtype) == (BF16, BF16, BF16)


def test_compiled_under_autocast():
    """The dtype rules trace: torch.compile(fullgraph=True) under autocast
    gives eager fusedlstm's results exactly."""
    torch._dynamo.reset()
    _, ours = make_lstm_pair(5, 8, proj_size=3)
    x = torch.randn(4, 3, 5)
    compiled = torch.compile(ours, fullgraph=True, backend="aot_eager")
    got = run_lstm(compiled, x, forward_context=_autocast())
    want = run_lstm(ours, x, forward_context=_autocast())
    got = {k.replace("_orig_mod.", ""): v for k, v in got.items()}
    for key in want:
        assert got[key].dtype == want[key].dtype, key
    assert_results_close(got, want)


@pytest.mark.parametrize("autocast_dtype", [BF16, torch.float16])
@pytest.mark.parametrize("dtype", [torch.float32, BF16])
@pytest.mark.parametrize("config", [dict(), dict(proj_size=3, bidirectional=True)], ids=str)
def test_backward_under_autocast_gives_the_same_gradients(config, dtype, autocast_dtype):
    assert_backward_unchanged_by_autocast("cpu", dtype, autocast_dtype, **config)
