"""The inference operator: the forward when no gradient can flow.

``torch.ops.fusedlstm.lstm_layer_inference`` returns what
``lstm_layer_forward`` returns but the saved activations. ``fusedlstm.ops.
lstm_layer`` calls it whenever grad mode is off or no argument requires grad.
On the CPU's fused float32 path it projects the input in chunks of ~2048 rows
into one reused buffer; the shapes below with H <= 512 and more than 2048
rows run several chunks (reverse and packed ones included), whose boundaries
must not show in the results.
"""
from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils._python_dispatch import TorchDispatchMode

import fusedlstm
from helpers import make_lstm_pair, parity_check
from test_ops import IDS, SAMPLES, make_args

FWD = torch.ops.fusedlstm.lstm_layer_forward
INF = torch.ops.fusedlstm.lstm_layer_inference


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_inference(sample, dtype):
    torch.library.opcheck(INF, make_args(sample, dtype, requires_grad=False))


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_inference_matches_forward_op(sample, dtype):
    args = make_args(sample, dtype, requires_grad=False)
    output, h_n, c_n, _, _ = FWD(*args)
    inf_output, inf_h_n, inf_c_n = INF(*args)
    torch.testing.assert_close(inf_output, output)
    torch.testing.assert_close(inf_h_n, h_n)
    torch.testing.assert_close(inf_c_n, c_n)


def _random_lengths(batch, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, steps + 1, (batch,), generator=gen)
    lengths[0] = steps
    return lengths


# (T, B, I, H, proj_size, bidirectional, packed): rows T*B > 2048 with
# H <= 512, so the input projection runs in several chunks of 2048 rows.
CHUNKED = [
    (100, 64, 16, 32, 0, False, False),
    (100, 64, 16, 32, 0, True, True),
    (90, 48, 8, 24, 12, True, True),
    (3000, 1, 4, 8, 0, True, False),
]


@pytest.mark.parametrize("config", CHUNKED, ids=lambda c: "x".join(map(str, c)))
def test_chunked_inference_matches_training_forward(config):
    T, B, I, H, P, bidirectional, packed = config
    torch.manual_seed(0)
    model = fusedlstm.LSTM(I, H, proj_size=P, bidirectional=bidirectional, num_layers=2)
    x = torch.randn(T, B, I)
    if packed:
        x = pack_padded_sequence(x, _random_lengths(B, T, seed=1), enforce_sorted=False)
    with torch.no_grad():
        inf_out, (inf_h, inf_c) = model(x)
    train_out, (train_h, train_c) = model(x)

    def flat(out):  # PackedSequence.data is its tensor field, not a detach
        return out.data if packed else out

    assert flat(train_out).requires_grad  # the training forward ran
    torch.testing.assert_close(flat(inf_out), flat(train_out).detach())
    torch.testing.assert_close(inf_h, train_h.detach())
    torch.testing.assert_close(inf_c, train_c.detach())


@pytest.mark.parametrize("config", CHUNKED[:3], ids=lambda c: "x".join(map(str, c)))
def test_chunked_inference_matches_nn_lstm(config):
    T, B, I, H, P, bidirectional, packed = config
    ref, ours = make_lstm_pair(I, H, proj_size=P, bidirectional=bidirectional)
    x = torch.randn(T, B, I)
    lengths = _random_lengths(B, T, seed=2) if packed else None
    parity_check(ref, ours, x, lengths=lengths, enforce_sorted=False,
                 backward=False, forward_context=torch.no_grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("kwargs", [
    dict(num_layers=2, bidirectional=True),
    dict(proj_size=3, bias=False),
    dict(batch_first=True),
], ids=["2layer_bi", "proj_nobias", "batch_first"])
def test_no_grad_module_matches_nn_lstm(dtype, kwargs):
    ref, ours = make_lstm_pair(5, 7, dtype=dtype, **kwargs)
    x = torch.randn(6, 4, 5, dtype=dtype)
    parity_check(ref, ours, x, backward=False, forward_context=torch.no_grad)


class _OpLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def _ops_called(model, x, grad_mode):
    with torch.set_grad_enabled(grad_mode), _OpLog() as log:
        model(x)
    return {n for n in log.names if n.startswith("fusedlstm.")}


def test_which_operator_runs():
    model = fusedlstm.LSTM(3, 4)
    x = torch.randn(5, 2, 3)
    forward, inference = "fusedlstm.lstm_layer_forward.default", "fusedlstm.lstm_layer_inference.default"
    assert _ops_called(model, x, grad_mode=True) == {forward}
    assert _ops_called(model, x, grad_mode=False) == {inference}
    model.requires_grad_(False)
    # Grad mode on, but nothing to differentiate: nothing is kept either.
    assert _ops_called(model, x, grad_mode=True) == {inference}
    assert _ops_called(model, x.requires_grad_(), grad_mode=True) == {forward}


def test_backward_through_inference_op_raises():
    args = make_args(SAMPLES[0], torch.float32, requires_grad=True)
    output, _, _ = INF(*args)
    with pytest.raises(RuntimeError, match="keeps no activations"):
        output.sum().backward()


def test_compiled_no_grad_matches_eager():
    torch.manual_seed(0)
    model = fusedlstm.LSTM(4, 6, num_layers=2)
    x = torch.randn(7, 3, 4)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        eager = model(x)
        got = compiled(x)
    torch.testing.assert_close(got, eager)
