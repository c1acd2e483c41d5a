"""torch.compile(fullgraph=True) of models containing fusedlstm modules.

Dynamo refuses any nn.LSTM instance (unless a global flag is set), so
fusedlstm.LSTM derives from nn.RNNBase and not nn.LSTM; these tests pin
that design: the whole model compiles without a graph break, forward and
backward equal eager, and isinstance reports what the README says.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import fusedlstm
from fusedlstm import _state_dtypes
from helpers import assert_bitwise, assert_results_close


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


def test_compile_float32_c0_with_bfloat16_input():
    """oneDNN's mix (bfloat16 input and h0, float32 c0; fusedlstm/_state_dtypes.py)
    compiles without a graph break and returns eager's values and dtypes,
    forward and backward."""
    torch._dynamo.reset()
    lstm = fusedlstm.LSTM(5, 8, num_layers=2, bidirectional=True).bfloat16()
    x = torch.randn(4, 3, 5).bfloat16()
    hx = (torch.randn(4, 3, 8).bfloat16(), torch.randn(4, 3, 8))
    if not _state_dtypes.onednn_takes_float32_c0(x, hx, None, False):
        pytest.skip("no oneDNN bfloat16 on this CPU: nn.LSTM refuses the call")

    def run(module):
        leaves = [x.clone().requires_grad_(), hx[1].clone().requires_grad_()]
        out, (h, c) = module(leaves[0], (hx[0], leaves[1]))
        (out.float().square().sum() + c.square().sum()).backward()
        return [out, h, c, leaves[0].grad, leaves[1].grad]

    eager = run(lstm)
    got = run(torch.compile(lstm, fullgraph=True, backend="aot_eager"))
    assert [t.dtype for t in got] == [t.dtype for t in eager]
    assert eager[2].dtype == eager[4].dtype == torch.float32
    assert_bitwise(got, eager, "result")


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


# ------------------------------------------------- dynamic shapes (T and B)
#
# With dynamic=True one graph serves every T and B >= 2. Dynamo specializes
# sizes 0 and 1 by design (for every model, not only fusedlstm's), so T = 1
# and B = 1 add at most one graph each, and one for both.


def _twin_with_nn_lstm(model):
    """A copy of ``model`` with nn.LSTM in place of its fusedlstm.LSTM."""
    twin = copy.deepcopy(model)
    lstm = model.lstm
    ref = nn.LSTM(lstm.input_size, lstm.hidden_size, num_layers=lstm.num_layers,
                  bias=lstm.bias, batch_first=lstm.batch_first,
                  bidirectional=lstm.bidirectional, proj_size=lstm.proj_size)
    ref.load_state_dict(lstm.state_dict())
    twin.lstm = ref
    return twin


def _graphs(model_cls):
    return len(torch._dynamo.eval_frame._debug_get_cache_entry_list(model_cls.forward.__code__))


SHAPES = [(3, 2), (5, 4), (7, 3), (2, 6)]


@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[2]], ids=str)
def test_dynamic_shapes_compile_once(config):
    torch._dynamo.reset()
    model = Tagger(**config)
    twin = _twin_with_nn_lstm(model)
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="aot_eager")
    for index, (T, B) in enumerate(SHAPES):
        x = torch.randn((B, T, 5) if config.get("batch_first") else (T, B, 5))
        # After the first shape, any recompilation is an error.
        with torch._dynamo.config.patch(error_on_recompile=index > 0):
            got = _run(compiled, [x])
        assert_results_close(got, _run(twin, [x]))
    assert _graphs(Tagger) == 1


def test_dynamic_shapes_size_one_bounded():
    torch._dynamo.reset()
    model = Tagger()
    twin = _twin_with_nn_lstm(model)
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="aot_eager")
    for T, B in SHAPES[:2] + [(1, 3), (4, 1), (1, 1), (6, 1), (1, 5)]:
        x = torch.randn(T, B, 5)
        assert_results_close(_run(compiled, [x]), _run(twin, [x]))
    assert _graphs(Tagger) <= 4


def test_dynamic_shapes_inductor():
    torch._dynamo.reset()
    model = Tagger(num_layers=2, proj_size=4)
    twin = _twin_with_nn_lstm(model)
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    for index, (T, B) in enumerate(SHAPES[:3]):
        x = torch.randn(T, B, 5)
        with torch._dynamo.config.patch(error_on_recompile=index > 0):
            got = _run(compiled, [x])
        assert_results_close(got, _run(twin, [x]))
    assert _graphs(Tagger) == 1


# ------------------------------------------------------------ packed input
#
# batch_sizes[0] (the batch) is data-dependent under tracing; the module
# reads it once and relates a given state's batch to it with torch._check.


class PackedTagger(nn.Module):
    def __init__(self, lstm_cls=fusedlstm.LSTM, **lstm_kwargs):
        super().__init__()
        self.lstm = lstm_cls(5, 8, **lstm_kwargs)

    def forward(self, packed, hx=None):
        out, (h, c) = self.lstm(packed, hx)
        return out.data, h, c


@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_packed(dynamic, with_hx):
    torch._dynamo.reset()
    # The first call's T (6) and batch (3) differ from every fixed size:
    # dynamo gives equal sizes one symbol ("duck sizing"), so that a batch
    # equal to proj_size, say, would be specialized by the state's shape
    # check, in any model.
    config = dict(bidirectional=True, proj_size=4)
    model = PackedTagger(**config)
    twin = PackedTagger(nn.LSTM, **config)
    twin.load_state_dict(model.state_dict())
    compiled = torch.compile(model, fullgraph=True, dynamic=dynamic, backend="aot_eager")
    for T, lengths in [(6, [2, 6, 3]), (4, [4, 1, 3, 2]), (5, [5, 5, 3])]:
        x = torch.randn(T, len(lengths), 5)
        hx = [torch.randn(2, len(lengths), 4), torch.randn(2, len(lengths), 8)] if with_hx else []

        def run(m):
            m.zero_grad(set_to_none=True)
            leaves = [t.clone().requires_grad_() for t in [x, *hx]]
            packed = pack_padded_sequence(leaves[0], lengths, enforce_sorted=False)
            outs = m(packed, tuple(leaves[1:]) if hx else None)
            sum((o * (i + 1)).sin().sum() for i, o in enumerate(outs)).backward()
            result = {f"out{i}": o.detach() for i, o in enumerate(outs)}
            result.update({f"grad_in{i}": t.grad for i, t in enumerate(leaves)})
            result.update({f"grad_{n}": p.grad for n, p in getattr(m, "_orig_mod", m).named_parameters()})
            return result

        assert_results_close(run(compiled), run(twin))
    if dynamic:
        assert _graphs(PackedTagger) == 1
