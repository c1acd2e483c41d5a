"""torch.onnx.export of models holding fusedlstm's modules.

ONNX has an LSTM operator and no kernel of fusedlstm's, so under export the
modules run nn.LSTM's forward: the graph must be exactly the one nn.LSTM's
model gives (same nodes, same initializers), with both exporters, and run
in onnxruntime to fusedlstm's eager results. Outside export the fused
kernels run again. onnx, onnxscript and onnxruntime are test dependencies
(scripts/quickstart.sh test installs them).
"""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import fusedlstm

onnx = pytest.importorskip("onnx", reason="onnx not installed (a test dependency)")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (a test dependency)")
numpy_helper = onnx.numpy_helper


class Net(nn.Module):
    def __init__(self, cls, with_state, **kwargs):
        super().__init__()
        self.rnn = cls(3, 4, **kwargs)
        self.with_state = with_state

    def forward(self, x, h=None, c=None):
        out = self.rnn(x, (h, c)) if self.with_state else self.rnn(x)
        if isinstance(self.rnn, nn.LSTMCell):
            return out
        return out[0], out[1][0], out[1][1]


# name: (cell, ctor kwargs, argument shapes)
CASES = {
    "default": (False, dict(), [(5, 2, 3)]),
    "layers_bidirectional_batch_first": (
        False, dict(num_layers=2, bidirectional=True, batch_first=True), [(2, 5, 3)]),
    "no_bias_dropout_eval": (False, dict(num_layers=2, bias=False, dropout=0.3), [(5, 2, 3)]),
    "hx": (False, dict(num_layers=2), [(5, 2, 3), (2, 2, 4), (2, 2, 4)]),
    "unbatched": (False, dict(), [(5, 3)]),
    # ONNX's LSTM has no projection: the TorchScript exporter refuses it,
    # the dynamo exporter decomposes it.
    "projection": (False, dict(proj_size=2), [(5, 2, 3)]),
    "cell": (True, dict(), [(2, 3)]),
    "cell_hx": (True, dict(bias=False), [(2, 3), (2, 4), (2, 4)]),
}


def _export(model, args, path, dynamo):
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated; both are still supported.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, path, dynamo=dynamo)
    return onnx.load(path)


def _graph(model_proto):
    graph = model_proto.graph
    return ([(n.op_type, list(n.attribute)) for n in graph.node],
            [numpy_helper.to_array(t).tolist() for t in graph.initializer])


def _run(path, args):
    session = ort.InferenceSession(str(path))
    feeds = {i.name: a.numpy() for i, a in zip(session.get_inputs(), args)}
    return [torch.from_numpy(r) for r in session.run(None, feeds)]


def _pair(case):
    cell, kwargs, shapes = CASES[case]
    models = []
    for cls in ((nn.LSTMCell, fusedlstm.LSTMCell) if cell else (nn.LSTM, fusedlstm.LSTM)):
        torch.manual_seed(0)
        models.append(Net(cls, len(shapes) > 1, **kwargs).eval())
    torch.manual_seed(1)
    args = tuple(torch.randn(s) for s in shapes)
    return models, args


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("case", list(CASES))
def test_onnx_graph_is_nn_lstms_and_runs_to_our_results(case, dynamo, tmp_path):
    (theirs, ours), args = _pair(case)
    try:
        expected = _export(theirs, args, tmp_path / "theirs.onnx", dynamo)
    except Exception as refusal:  # noqa: BLE001 - compared below
        with pytest.raises(type(refusal)):
            _export(ours, args, tmp_path / "ours.onnx", dynamo)
        return
    exported = _export(ours, args, tmp_path / "ours.onnx", dynamo)
    assert _graph(exported) == _graph(expected)
    try:
        _run(tmp_path / "theirs.onnx", args)
    except Exception as failure:  # noqa: BLE001 - compared below
        # The dynamo exporter's graph of a projection gives ONNX's LSTM a
        # cell state of the projected size, which onnxruntime refuses.
        with pytest.raises(type(failure)):
            _run(tmp_path / "ours.onnx", args)
        return
    results = _run(tmp_path / "ours.onnx", args)
    with torch.no_grad():
        eager = ours(*args)
    torch.testing.assert_close(tuple(results), tuple(eager))


def test_onnx_export_with_dynamic_length_and_batch(tmp_path):
    (_, ours), (x,) = _pair("layers_bidirectional_batch_first")
    path = str(tmp_path / "dynamic.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ours, (x,), path, dynamo=False, input_names=["x"],
                          dynamic_axes={"x": {0: "batch", 1: "length"}})
    for shape in [(3, 9, 3), (1, 2, 3)]:
        x = torch.randn(shape)
        results = _run(path, (x,))
        with torch.no_grad():
            torch.testing.assert_close(tuple(results), tuple(ours(x)))


def test_fused_kernels_run_again_after_export(tmp_path):
    (_, ours), args = _pair("default")
    _export(ours, args, tmp_path / "ours.onnx", dynamo=True)
    out = ours.rnn(args[0].requires_grad_())[0]
    assert "fusedlstm" in out.grad_fn.name(), out.grad_fn.name()

