"""torch.export of models containing fusedlstm.LSTM.

The exported program holds fusedlstm's operators (their fake kernels give the
shapes); it runs, differentiates, survives torch.export.save/load (the loader
needs the operators registered, which importing fusedlstm does) and
run_decompositions, and matches the same model on nn.LSTM, with static and
dynamic T and B, padded and packed. AOTInductor compiles it into a package
that a fresh process serves.
"""
from __future__ import annotations

import io
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.export import Dim
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fusedlstm
from fusedlstm import _state_dtypes
from helpers import assert_bitwise, assert_results_close


class Tagger(nn.Module):
    """Linear -> LSTM -> Linear head, with the state optional."""

    def __init__(self, lstm_cls=fusedlstm.LSTM, **lstm_kwargs):
        super().__init__()
        self.embed = nn.Linear(5, 6)
        self.lstm = lstm_cls(6, 8, **lstm_kwargs)
        width = (lstm_kwargs.get("proj_size") or 8) * (2 if lstm_kwargs.get("bidirectional") else 1)
        self.head = nn.Linear(width, 3)

    def forward(self, x, h0=None, c0=None):
        hx = None if h0 is None else (h0, c0)
        out, (h, c) = self.lstm(torch.tanh(self.embed(x)), hx)
        return self.head(out), h, c


class PackedModel(nn.Module):
    """Takes a PackedSequence's four tensors (export's inputs are tensors)."""

    def __init__(self, lstm_cls=fusedlstm.LSTM, **lstm_kwargs):
        super().__init__()
        self.lstm = lstm_cls(5, 8, **lstm_kwargs)

    def forward(self, data, batch_sizes, sorted_indices, unsorted_indices, h0=None, c0=None):
        packed = PackedSequence(data, batch_sizes, sorted_indices, unsorted_indices)
        out, (h, c) = self.lstm(packed, None if h0 is None else (h0, c0))
        return out.data, h, c


def _pair(cls, **config):
    ours = cls(**config)
    ref = cls(nn.LSTM, **config)
    ref.load_state_dict(ours.state_dict())
    return ref, ours


def _run(fn, params, args):
    """Outputs and the gradients of the floating inputs and ``params``."""
    leaves = [a.clone().requires_grad_() if a.is_floating_point() else a for a in args]
    for p in params.values():
        p.grad = None
    outs = fn(*leaves)
    sum((o * (i + 1)).sin().sum() for i, o in enumerate(outs)).backward()
    result = {f"out{i}": o.detach() for i, o in enumerate(outs)}
    result.update({f"grad_in{i}": t.grad for i, t in enumerate(leaves) if t.is_floating_point()})
    result.update({f"grad_{n}": p.grad for n, p in params.items()})
    return result


def _check(ep, ref, args_list):
    """Each args against nn.LSTM's model, before and after save/load."""
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    buf.seek(0)
    loaded = torch.export.load(buf)
    for program in (ep, loaded):
        module = program.module()
        params = dict(module.named_parameters())
        for args in args_list:
            got = _run(module, params, args)
            want = _run(ref, dict(ref.named_parameters()), args)
            assert_results_close(got, want)


def _states(config, B):
    layers = config.get("num_layers", 1) * (2 if config.get("bidirectional") else 1)
    return (torch.randn(layers, B, config.get("proj_size") or 8), torch.randn(layers, B, 8))


CONFIGS = [dict(), dict(num_layers=2, bidirectional=True, proj_size=4)]


def _layer_operator(config):
    # Parameters that require grad: the training operator, which for a
    # bidirectional CPU layer takes both directions (test_bidirectional_training.py).
    if config.get("bidirectional"):
        return "fusedlstm.lstm_bidirectional_forward.default"
    return "fusedlstm.lstm_layer_forward.default"


@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_export_static(config, with_hx):
    ref, ours = _pair(Tagger, **config)
    args = (torch.randn(4, 3, 5), *(_states(config, 3) if with_hx else ()))
    ep = torch.export.export(ours, args)
    ops = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert _layer_operator(config) in ops
    _check(ep, ref, [args])


@pytest.mark.parametrize("with_hx", [False, True])
def test_export_dynamic_t_and_b(with_hx):
    config = CONFIGS[1]
    ref, ours = _pair(Tagger, **config)
    T, B = Dim("T", min=2), Dim("B", min=2)
    shapes = {"x": {0: T, 1: B}}
    if with_hx:
        shapes.update(h0={1: B}, c0={1: B})

    def args(t, b):
        return (torch.randn(t, b, 5), *(_states(config, b) if with_hx else ()))

    ep = torch.export.export(ours, args(4, 3), dynamic_shapes=shapes)
    _check(ep, ref, [args(4, 3), args(7, 5), args(2, 9)])


@pytest.mark.parametrize("with_hx", [False, True])
def test_export_packed_dynamic(with_hx):
    config = dict(bidirectional=True)
    ref, ours = _pair(PackedModel, **config)

    def args(T, lengths):
        packed = pack_padded_sequence(torch.randn(T, len(lengths), 5), lengths, enforce_sorted=False)
        return (*packed, *(_states(config, len(lengths)) if with_hx else ()))

    N, T, B = Dim("N"), Dim("T"), Dim("B")
    shapes = [{0: N}, {0: T}, {0: B}, {0: B}] + ([{1: B}, {1: B}] if with_hx else [])
    ep = torch.export.export(ours, args(6, [2, 6, 3]), dynamic_shapes=shapes)
    _check(ep, ref, [args(6, [2, 6, 3]), args(4, [4, 1, 3, 2, 4])])


def test_export_run_decompositions_keeps_the_operator():
    ref, ours = _pair(Tagger, **CONFIGS[1])
    x = torch.randn(4, 3, 5)
    ep = torch.export.export(ours.eval(), (x,)).run_decompositions()
    ops = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert _layer_operator(CONFIGS[1]) in ops
    with torch.no_grad():
        assert_results_close(
            dict(enumerate(ep.module()(x))), dict(enumerate(ref.eval()(x))))


class _StateOut(nn.Module):
    def __init__(self, lstm):
        super().__init__()
        self.lstm = lstm

    def forward(self, x, h0, c0):
        out, (h, c) = self.lstm(x, (h0, c0))
        return out, h, c


def test_export_float32_c0_with_bfloat16_input():
    """oneDNN's mix (fusedlstm/_state_dtypes.py): torch.export turns oneDNN
    off while tracing, yet an exported nn.LSTM takes the call where oneDNN
    runs; the exported fusedlstm model takes it too, with eager's dtypes
    and bits."""
    lstm = fusedlstm.LSTM(3, 5, num_layers=2).bfloat16()
    ref = nn.LSTM(3, 5, num_layers=2).bfloat16()
    ref.load_state_dict(lstm.state_dict())
    args = (torch.randn(4, 2, 3).bfloat16(), torch.randn(2, 2, 5).bfloat16(),
            torch.randn(2, 2, 5))
    if not _state_dtypes.onednn_takes_float32_c0(args[0], args[1:], None, False):
        pytest.skip("no oneDNN bfloat16 on this CPU: nn.LSTM refuses the call")
    exported = torch.export.export(_StateOut(lstm), args).module()(*args)
    eager = _StateOut(lstm)(*args)
    theirs = torch.export.export(_StateOut(ref), args).module()(*args)
    assert [t.dtype for t in exported] == [t.dtype for t in theirs] == [
        torch.bfloat16, torch.bfloat16, torch.float32]
    assert_bitwise(exported, eager, "result")


def test_aot_inductor_package_serves_like_eager(tmp_path):
    """The serving path of torch.export: AOTInductor compiles the exported
    program ahead of time into a package, which a fresh process loads (after
    importing fusedlstm, which registers the operators the package calls)
    and runs at other lengths and batch sizes. Inductor compiles the layers
    around the LSTM in its own code (a tanh one ulp off eager's), so the
    comparison is at float32's default tolerance."""
    torch.manual_seed(0)
    model = Tagger(bidirectional=True, num_layers=2).eval()
    shapes = {"x": {0: Dim("T", min=2), 1: Dim("B", min=2)}}
    with torch.no_grad():
        ep = torch.export.export(model, (torch.randn(4, 3, 5),), dynamic_shapes=shapes)
    package = torch._inductor.aoti_compile_and_package(
        ep, package_path=str(tmp_path / "tagger.pt2"))
    inputs = [torch.randn(4, 3, 5), torch.randn(9, 2, 5)]
    with torch.no_grad():
        expected = [model(x) for x in inputs]
    torch.save(inputs, tmp_path / "inputs.pt")
    script = (
        "import sys, torch, fusedlstm\n"
        "run = torch._inductor.aoti_load_package(sys.argv[1])\n"
        "inputs = torch.load(sys.argv[2])\n"
        "torch.save([run(x) for x in inputs], sys.argv[3])\n"
    )
    subprocess.run([sys.executable, "-c", script, package, str(tmp_path / "inputs.pt"),
                    str(tmp_path / "outputs.pt")], check=True)
    served = torch.load(tmp_path / "outputs.pt")
    for got, want in zip(served, expected):
        torch.testing.assert_close(tuple(got), tuple(want))
