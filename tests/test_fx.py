"""torch.fx.symbolic_trace: fusedlstm's modules are leaves, as torch.nn's are.

A model traced with fusedlstm's modules gives the graph that the same model
gives with nn.LSTM/nn.LSTMCell (one call_module node per call), and the
traced GraphModule runs fusedlstm's modules to nn's outputs and gradients."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fusedlstm


def pack_for_trace(x, lengths):
    # pack_padded_sequence reads its lengths' values, which torch.fx cannot
    # trace, with nn.LSTM as with ours; a wrapped function is the usual way.
    return pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)


torch.fx.wrap("pack_for_trace")


class Classifier(nn.Module):
    """The last layer's final h through a linear head."""

    def __init__(self, batched=True, **lstm_kwargs):
        super().__init__()
        self.last = (slice(None), -1) if lstm_kwargs.get("batch_first") and batched else -1
        self.rnn = nn.LSTM(4, 6, **lstm_kwargs)
        width = lstm_kwargs.get("proj_size") or 6
        self.head = nn.Linear(width * (2 if lstm_kwargs.get("bidirectional") else 1), 3)

    def forward(self, x):
        y, (h, c) = self.rnn(x)
        return self.head(y[self.last]) + c.sum()


class WithState(nn.Module):
    """hx given, made from the input's batch size."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 6, num_layers=2, batch_first=True)

    def forward(self, x):
        h0 = torch.ones(2, x.size(0), 6, dtype=x.dtype) * 0.5
        y, (h, c) = self.rnn(x, (h0, -h0))
        return y.sum(-1) + h.sum() + c.sum()


class Packed(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 6, bidirectional=True, batch_first=True)

    def forward(self, x, lengths):
        out = self.rnn(pack_for_trace(x, lengths))
        return out[0].data.sum(-1).sum() + out[1][0].sum() + out[1][1].sum()


class Decoder(nn.Module):
    """An LSTMCell unrolled over three steps. The first step's input is a
    constant: no traced argument reaches that call."""

    def __init__(self):
        super().__init__()
        self.cell = nn.LSTMCell(4, 4)

    def forward(self, x):
        h, c = self.cell(torch.full((2, 4), 0.25, dtype=torch.float64))
        outputs = []
        for step in range(3):
            h, c = self.cell(x[step] + h, (h, c))
            outputs.append(h)
        return torch.stack(outputs) + c.sum()


class Unbatched(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(4, 6)
        self.cell = nn.LSTMCell(6, 5)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.cell(y[-1])[0]


CASES = {
    "batch_first": (lambda: Classifier(batch_first=True), lambda: (torch.randn(3, 7, 4),)),
    "two_layers_bidirectional_proj": (
        lambda: Classifier(num_layers=2, bidirectional=True, proj_size=2),
        lambda: (torch.randn(5, 3, 4),)),
    "no_bias_unbatched": (lambda: Classifier(batched=False, bias=False, batch_first=True),
                          lambda: (torch.randn(5, 4),)),
    "hx_given": (WithState, lambda: (torch.randn(3, 5, 4),)),
    "packed": (Packed, lambda: (torch.randn(3, 5, 4), torch.tensor([2, 5, 3]))),
    "cell_decoder": (Decoder, lambda: (torch.randn(3, 2, 4),)),
    "unbatched_cell": (Unbatched, lambda: (torch.randn(5, 4),)),
}


def _float64_pair(make):
    torch.manual_seed(0)
    reference = make().double()
    ours = fusedlstm.replace_lstm(copy.deepcopy(reference))
    return reference, ours


def _results(model, args):
    args = [a.double().requires_grad_() if a.is_floating_point() else a for a in args]
    out = model(*args)
    leaves = [a for a in args if a.requires_grad] + list(model.parameters())
    return (out, *torch.autograd.grad(out.square().sum(), leaves))


@pytest.mark.parametrize("case", CASES)
def test_traced_graph_is_nn_lstms_and_runs_to_its_results(case):
    make, example = CASES[case]
    reference, ours = _float64_pair(make)
    traced_reference = torch.fx.symbolic_trace(reference)
    traced_ours = torch.fx.symbolic_trace(ours)

    assert traced_ours.code == traced_reference.code
    called = {n.target for n in traced_ours.graph.nodes if n.op == "call_module"}
    recurrent = {t for t in called if isinstance(traced_ours.get_submodule(t),
                                                 (fusedlstm.LSTM, fusedlstm.LSTMCell))}
    assert recurrent == {t for t in called if t in ("rnn", "cell")} != set()
    # The graph holds the model's own module objects (and so its Parameters).
    for target in recurrent:
        assert traced_ours.get_submodule(target) is ours.get_submodule(target)

    args = example()
    torch.testing.assert_close(_results(traced_ours, args), _results(reference, args))


def test_traced_constant_call_follows_later_weight_updates():
    # The decoder's first call has only constant arguments. Run at trace time,
    # its result would be frozen into the graph; as a call_module node it is
    # recomputed from the weights the module has when the graph runs.
    reference, ours = _float64_pair(Decoder)
    traced = torch.fx.symbolic_trace(ours)
    with torch.no_grad():
        for model in (reference, ours):
            model.cell.weight_ih.mul_(-2.0)
            model.cell.bias_hh.add_(0.5)
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    torch.testing.assert_close(traced(x), reference(x))


@pytest.mark.parametrize("make_pair", [
    lambda: (nn.LSTM(3, 4), fusedlstm.LSTM(3, 4)),
    lambda: (nn.LSTMCell(3, 4), fusedlstm.LSTMCell(3, 4)),
])
def test_tracing_the_module_itself_fails_as_for_torchs(make_pair):
    # torch.fx never makes the root a leaf, and traces into its forward.
    reference, ours = make_pair()
    with pytest.raises(torch.fx.proxy.TraceError) as expected:
        torch.fx.symbolic_trace(reference)
    with pytest.raises(type(expected.value), match=f"^{expected.value}$"):
        torch.fx.symbolic_trace(ours)


@pytest.mark.parametrize("module_class", [nn.LSTM, fusedlstm.LSTM])
def test_module_outside_the_traced_model_fails_as_for_torchs(module_class):
    class MadeInForward(nn.Module):
        def forward(self, x):
            return module_class(3, 4)(x)[0]

    with pytest.raises(NameError, match="^module is not installed as a submodule$"):
        torch.fx.symbolic_trace(MadeInForward())


@pytest.mark.parametrize("case", ["two_layers_bidirectional_proj", "cell_decoder"])
def test_make_fx_still_records_the_operators(case):
    # make_fx (torch.func, AOTAutograd) raises torch.fx's tracing flag too,
    # and calls modules with tensors, not Proxies: it must get fusedlstm's
    # operators, not a call_module node.
    from torch.fx.experimental.proxy_tensor import make_fx

    make, example = CASES[case]
    reference, ours = _float64_pair(make)
    args = [a.double() for a in example()]
    traced = make_fx(ours)(*args)
    graph = traced.graph
    assert not [n for n in graph.nodes if n.op == "call_module"]
    assert [n for n in graph.nodes if n.op == "call_function"
            and str(n.target).startswith("fusedlstm.")]
    torch.testing.assert_close(traced(*args), reference(*args))
