"""FUSEDLSTM_CUDA_DIRECTIONS=concurrent on CUDA (fusedlstm/_directions.py):
the reverse direction of each bidirectional layer on a side stream while the
forward one runs on the current stream. The same kernels on the same data as
the directions in turn: outputs, states and every gradient bitwise equal,
eagerly, on a non-default current stream, and replayed from a CUDA graph.
Skipped, with the reason shown, where CUDA is absent."""
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA device not present")

import fusedlstm  # noqa: E402
from helpers import assert_bitwise  # noqa: E402

CASES = [
    dict(num_layers=2),
    dict(num_layers=3, proj_size=5),
    dict(num_layers=2, batch_first=True, packed=True),
]
PATHS = ["auto", "stepwise", "persistent"]


def _model(cfg, dtype):
    torch.manual_seed(0)
    return fusedlstm.LSTM(6, 16, bidirectional=True, **cfg).to("cuda", dtype)


def _inputs(model, dtype, packed):
    gen = torch.Generator().manual_seed(1)
    T, B = 9, 5
    shape = (B, T, 6) if model.batch_first else (T, B, 6)
    x = torch.randn(shape, generator=gen).to("cuda", dtype)
    rows = 2 * model.num_layers
    hx = tuple(torch.randn(rows, B, width, generator=gen).to("cuda", dtype)
               for width in (model.proj_size or 16, 16))
    lengths = torch.tensor([T, 3, T - 1, 1, 6]) if packed else None
    return x, hx, lengths


def _step(model, x, hx, lengths):
    """Outputs and the gradients of input, states and parameters."""
    x, h0, c0 = (t.detach().requires_grad_() for t in (x, *hx))
    inp = x if lengths is None else pack_padded_sequence(
        x, lengths, batch_first=model.batch_first, enforce_sorted=False)
    out, (h_n, c_n) = model(inp, (h0, c0))
    if lengths is not None:
        out = pad_packed_sequence(out, batch_first=model.batch_first)[0]
    loss = sum((t.float() * (i + 1)).sin().sum() for i, t in enumerate((out, h_n, c_n)))
    grads = torch.autograd.grad(loss, (x, h0, c0, *model.parameters()))
    return [t.detach() for t in (out, h_n, c_n, *grads)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("cfg", CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_concurrent_directions_equal_directions_in_turn(monkeypatch, directions_spy, path,
                                                        dtype, cfg):
    monkeypatch.setenv("FUSEDLSTM_CUDA_PATH", path)
    cfg = dict(cfg)
    packed = cfg.pop("packed", False)
    model = _model(cfg, dtype)
    args = _inputs(model, dtype, packed)
    monkeypatch.setenv("FUSEDLSTM_CUDA_DIRECTIONS", "sequential")
    in_turn = _step(model, *args)
    assert directions_spy == []
    monkeypatch.setenv("FUSEDLSTM_CUDA_DIRECTIONS", "concurrent")
    together = _step(model, *args)
    assert len(directions_spy) == model.num_layers
    assert_bitwise(together, in_turn)
    # On a current stream that is not the default one, too.
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        on_stream = _step(model, *args)
    torch.cuda.current_stream().wait_stream(stream)
    assert_bitwise(on_stream, in_turn)


@pytest.mark.parametrize("cfg", CASES[:2], ids=lambda c: "-".join(
    f"{k}{v}" for k, v in c.items()))
def test_concurrent_directions_replay_from_a_cuda_graph(monkeypatch, directions_spy, cfg):
    model = _model(cfg, torch.float32)
    x, hx, _ = _inputs(model, torch.float32, False)
    monkeypatch.setenv("FUSEDLSTM_CUDA_DIRECTIONS", "sequential")
    with torch.no_grad():
        eager = model(x, hx)
    monkeypatch.setenv("FUSEDLSTM_CUDA_DIRECTIONS", "concurrent")
    # Captured on zeros; the replay must read what is copied in after.
    static_x, static_h = torch.zeros_like(x), tuple(torch.zeros_like(h) for h in hx)
    warm = torch.cuda.Stream()
    warm.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(warm), torch.no_grad():
        model(static_x, static_h)  # makes the side stream outside the capture
    torch.cuda.current_stream().wait_stream(warm)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        captured = model(static_x, static_h)
    static_x.copy_(x)
    for static, value in zip(static_h, hx):
        static.copy_(value)
    graph.replay()
    torch.cuda.synchronize()
    assert len(directions_spy) == 2 * model.num_layers
    out, (h_n, c_n) = captured
    assert_bitwise([out, h_n, c_n], [eager[0], *eager[1]])


@pytest.mark.parametrize("sample", ["padded", "proj_packed_reverse", "no_bias"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bidirectional_inference_operator_runs_the_directions_in_turn(sample, dtype):
    """fusedlstm::lstm_bidirectional_inference on CUDA (its kernel for every
    backend but the CPU's, csrc/bidirectional_in_turn.cpp): the bits of two
    lstm_layer_inference calls."""
    from test_bidirectional import pair_args
    from test_ops import SAMPLES

    args = [a.to("cuda") if isinstance(a, torch.Tensor) and i != 15 else a
            for i, a in enumerate(pair_args(dict((s[0], s) for s in SAMPLES)[sample], dtype))]
    inference = torch.ops.fusedlstm.lstm_layer_inference
    expected = (*inference(args[0], *args[1:8], args[15], False),
                *inference(args[0], *args[8:15], args[15], True))
    got = torch.ops.fusedlstm.lstm_bidirectional_inference(*args)
    for g, e, name in zip(got, expected, ["output", "h_n", "c_n"] * 2):
        assert g.device.type == "cuda"
        assert_bitwise(g, e, name)


@pytest.mark.parametrize("sample", ["padded", "proj_packed_reverse", "no_bias"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bidirectional_training_operators_run_the_directions_in_turn(sample, dtype):
    """fusedlstm::lstm_bidirectional_forward and _backward on CUDA (their
    kernels for every backend but the CPU's): the bits of the one-direction
    calls; and, called with tensors that require grad, their autograd node's
    gradients are those of the two one-direction nodes."""
    from test_bidirectional import pair_args
    from test_bidirectional_training import backward_args, backward_in_two_calls
    from test_ops import SAMPLES

    def on_cuda(values, batch_sizes_at):
        return [a.to("cuda") if isinstance(a, torch.Tensor) and i != batch_sizes_at else a
                for i, a in enumerate(values)]

    args = on_cuda(pair_args(dict((s[0], s) for s in SAMPLES)[sample], dtype), 15)
    forward = torch.ops.fusedlstm.lstm_layer_forward
    expected = (*forward(args[0], *args[1:8], args[15], False),
                *forward(args[0], *args[8:15], args[15], True))
    got = torch.ops.fusedlstm.lstm_bidirectional_forward(*args)
    assert all(g.device.type == "cuda" for g in got)
    assert_bitwise(got, expected, "forward result")
    bargs = backward_args(args)
    assert_bitwise(torch.ops.fusedlstm.lstm_bidirectional_backward(*bargs),
                   backward_in_two_calls(bargs, torch.get_num_threads()), "gradient")

    leaves = [a.detach().requires_grad_() if isinstance(a, torch.Tensor) and i != 15 else a
              for i, a in enumerate(args)]
    o, h, c, _, _, o_r, h_r, c_r, _, _ = torch.ops.fusedlstm.lstm_bidirectional_forward(*leaves)
    loss = (o.float().square().sum() + h.float().sum() + c.float().sum()
            + o_r.float().square().sum() + h_r.float().sum() + c_r.float().sum())
    wrt = [t for t in leaves if isinstance(t, torch.Tensor) and t.requires_grad]
    got_grads = torch.autograd.grad(loss, wrt)
    o, h, c, _, _ = forward(leaves[0], *leaves[1:8], leaves[15], False)
    o_r, h_r, c_r, _, _ = forward(leaves[0], *leaves[8:15], leaves[15], True)
    loss = (o.float().square().sum() + h.float().sum() + c.float().sum()
            + o_r.float().square().sum() + h_r.float().sum() + c_r.float().sum())
    assert_bitwise(got_grads, torch.autograd.grad(loss, wrt), "gradient")
