"""torch.compile(fullgraph=True) of models containing fusedlstm modules.

Dynamo refuses any nn.LSTM instance (unless a global flag is set), so
fusedlstm.LSTM derives from nn.RNNBase and not nn.LSTM; these tests pin
that design: the whole model compiles without a graph break, forward and
backward equal eager, and isinstance reports what the README says.
"""
from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch import nn

import fusedlstm
from helpers import assert_results_close


class Tagger(nn.Module):
    def __init__(self, **lstm_kwargs):
        super().__init__()
        self.embed = nn.Linear(5, 6)
        self.lstm = fusedlstm.LSTM(6, 8, **lstm_kwargs)
        width = (lstm_kwargs.get("proj_size") or 8) * (2 if lstm_kwargs.get("bidirectional") else 1)
        self.head = nn.Linear(width, 3)

    def forward(self, x, hx=None):
        out, (h, c) = self.lstm(torch.tanh(self.embed(x)), hx)
        return self.head(out), h, c


class CellLoop(nn.Module):
    def __init__(self):
        super().__init__()
        self.cell = fusedlstm.LSTMCell(5, 7)

    def forward(self, x):
        h = c = x.new_zeros(x.size(1), 7)
        outs = []
        for t in range(x.size(0)):
            h, c = self.cell(x[t], (h, c))
            outs.append(h)
        return torch.stack(outs), c


def _run(model, inputs):
    """``model`` may be compiled; parameters are named as in the original."""
    model.zero_grad(set_to_none=True)
    leaves = [t.clone().requires_grad_() for t in inputs]
    outs = model(*leaves)
    loss = sum((o.double() * (i + 1)).sin().sum() for i, o in enumerate(outs))
    loss.backward()
    result = {f"out{i}": o.detach() for i, o in enumerate(outs)}
    result.update({f"grad_in{i}": t.grad for i, t in enumerate(leaves)})
    original = getattr(model, "_orig_mod", model)
    result.update({f"grad_{n}": p.grad for n, p in original.named_parameters()})
    return result


CONFIGS = [
    dict(),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=2, proj_size=4, batch_first=True),
    dict(bias=False, bidirectional=True, proj_size=3),
]


@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("with_hx", [False, True])
def test_compile_fullgraph_matches_eager(config, with_hx):
    torch._dynamo.reset()
    model = Tagger(**config)
    shape = (3, 4, 5) if config.get("batch_first") else (4, 3, 5)
    x = torch.randn(*shape)
    inputs = [x]
    if with_hx:
        D = 2 if config.get("bidirectional") else 1
        L = config.get("num_layers", 1) * D
        inputs += [torch.randn(L, 3, config.get("proj_size") or 8), torch.randn(L, 3, 8)]
        call = lambda m, x, h, c: m(x, (h, c))  # noqa: E731
    else:
        call = lambda m, x: m(x)  # noqa: E731

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args):
            return call(self.model, *args)

    wrapped = Wrapped()
    eager = _run(wrapped, inputs)
    compiled = torch.compile(wrapped, fullgraph=True, backend="aot_eager")
    got = _run(compiled, inputs)
    assert_results_close(got, eager)


def test_compile_inductor_forward_backward():
    """The default backend (inductor) too, forward and backward."""
    torch._dynamo.reset()
    model = Tagger(num_layers=2, bidirectional=True)
    x = torch.randn(4, 3, 5)
    eager = _run(model, [x])
    got = _run(torch.compile(model, fullgraph=True), [x])
    assert_results_close(got, eager)


def test_compile_cell_loop():
    torch._dynamo.reset()
    model = CellLoop()
    x = torch.randn(4, 2, 5)
    eager = _run(model, [x])
    got = _run(torch.compile(model, fullgraph=True, backend="aot_eager"), [x])
    assert_results_close(got, eager)


def test_no_graph_break():
    torch._dynamo.reset()
    model = Tagger(num_layers=2, bidirectional=True)
    explanation = torch._dynamo.explain(model)(torch.randn(4, 3, 5))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_nn_lstm_itself_does_not_fullgraph_compile():
    """The trap the design avoids: a model holding nn.LSTM fails fullgraph
    (if this starts passing, torch lifted the restriction)."""
    torch._dynamo.reset()

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(5, 8)

        def forward(self, x):
            return self.lstm(x)[0]

    with pytest.raises(Exception):
        torch.compile(M(), fullgraph=True, backend="eager")(torch.randn(4, 3, 5))


def test_isinstance_facts():
    lstm = fusedlstm.LSTM(3, 4)
    cell = fusedlstm.LSTMCell(3, 4)
    assert not isinstance(lstm, nn.LSTM)
    assert isinstance(lstm, nn.RNNBase)
    assert isinstance(lstm, nn.Module)
    assert lstm.mode == "LSTM"
    assert isinstance(cell, nn.LSTMCell)
    assert isinstance(cell, nn.RNNCellBase)
