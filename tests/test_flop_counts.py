"""torch.utils.flop_counter counts fusedlstm's layers (fusedlstm/_flop_formulas.py).

The counts must equal those of torch's native LSTM for the same work:
nn.LSTM with oneDNN switched off, every input and state requiring grad (so
that its backward also computes every gradient, as fusedlstm's does).
nn.LSTM on oneDNN, its default here, reports no FLOPs at all.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_sequence
from torch.utils.flop_counter import FlopCounterMode

import fusedlstm

CONFIGS = [
    dict(),
    dict(num_layers=2, bidirectional=True),
    dict(proj_size=16),
    dict(num_layers=2, proj_size=16, bidirectional=True, batch_first=True, bias=False),
]


def _count(module, make_args, backward, counted_ops=None):
    args = make_args()
    with FlopCounterMode(display=False) as counter:
        out = module(*args)[0]
        if backward:
            (out.data if isinstance(out, PackedSequence) else out).sum().backward()
    if counted_ops is not None:
        counted_ops.update(str(op) for ops in counter.get_flop_counts().values() for op in ops)
    return counter.get_total_flops()


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "forward_backward"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_lstm_flops_equal_torch_native_lstm(config, packed, backward):
    torch.manual_seed(0)
    ref = nn.LSTM(24, 32, **config)
    ours = fusedlstm.LSTM(24, 32, **config)
    ours.load_state_dict(ref.state_dict())
    layers = ref.num_layers * (2 if ref.bidirectional else 1)

    def make_args():
        if packed:
            x = pack_sequence([torch.randn(n, 24, requires_grad=True) for n in (7, 5, 2)])
        else:
            x = torch.randn((3, 7, 24) if ref.batch_first else (7, 3, 24), requires_grad=True)
        return x, (torch.randn(layers, 3, ref.proj_size or 32, requires_grad=True),
                   torch.randn(layers, 3, 32, requires_grad=True))

    with torch.backends.mkldnn.flags(enabled=False):
        expected = _count(ref, make_args, backward)
    assert expected > 0
    counted = set()
    assert _count(ours, make_args, backward, counted) == expected
    if ref.bidirectional:
        # Both directions of a layer are one call of each training operator
        # (test_bidirectional_training.py), counted as the two layers it runs.
        expected_ops = {"fusedlstm.lstm_bidirectional_forward"}
        if backward:
            expected_ops.add("fusedlstm.lstm_bidirectional_backward")
        assert {op for op in counted if op.startswith("fusedlstm.")} == expected_ops


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("config", [c for c in CONFIGS if c.get("bidirectional")], ids=str)
def test_no_grad_bidirectional_flops_equal_torch_native_lstm(config, packed):
    # Without grad both directions of a layer are one operator call
    # (lstm_bidirectional_inference), counted as the two layers it runs.
    torch.manual_seed(0)
    ref = nn.LSTM(24, 32, **config)
    ours = fusedlstm.LSTM(24, 32, **config)
    ours.load_state_dict(ref.state_dict())
    x = (pack_sequence([torch.randn(n, 24) for n in (7, 5, 2)]) if packed
         else torch.randn((3, 7, 24) if ref.batch_first else (7, 3, 24)))
    counts = []
    for module, onednn in ((ref, False), (ours, True)):
        with torch.no_grad(), torch.backends.mkldnn.flags(enabled=onednn), \
                FlopCounterMode(display=False) as counter:
            module(x)
        counts.append(counter.get_total_flops())
    assert counts[0] > 0 and counts[1] == counts[0]
    assert "fusedlstm.lstm_bidirectional_inference" in {
        str(op) for ops in counter.get_flop_counts().values() for op in ops}


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "forward_backward"])
@pytest.mark.parametrize("bias", [True, False])
def test_cell_flops_equal_nn_lstm_cell(bias, backward):
    counts = []
    for cls in (nn.LSTMCell, fusedlstm.LSTMCell):
        torch.manual_seed(0)
        cell = cls(24, 32, bias=bias)

        def make_args():
            return (torch.randn(5, 24, requires_grad=True),
                    (torch.randn(5, 32, requires_grad=True), torch.randn(5, 32, requires_grad=True)))

        counts.append(_count(cell, make_args, backward))
    assert counts[0] > 0 and counts[1] == counts[0]
