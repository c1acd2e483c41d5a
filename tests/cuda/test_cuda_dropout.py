"""Dropout between stacked layers on CUDA.

cuDNN draws the masks of nn.LSTM's multi-layer call from its own generator
state, which nothing else can reproduce, so fusedlstm's CUDA dropout is not
compared with that call mask for mask. fusedlstm applies torch's dropout
where nn.LSTM's native loop applies it (after every layer but the last,
on the concatenated directions, on the packed data), from the global
generator. So it is compared with nn.LSTM run one layer at a time (cuDNN
for each) with torch's dropout in between under the same seed: the same
masks, hence the same outputs, states and gradients. check_dropout_layerwise
runs on the CPU in CI as well (test_harness_on_cpu.py); there the multi-layer
nn.LSTM call itself is compared too (test_modules_parity.py,
test_dropout_masks_match_nn_lstm).
"""
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fusedlstm
from test_cuda_parity import TOL, close

CUDA_ONLY = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA device not present")

DROPOUT_CASES = [
    dict(num_layers=3),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=2, proj_size=3, bias=False),
    dict(num_layers=3, bidirectional=True, packed=True),
    dict(num_layers=2, batch_first=True, packed=True),
]


def layerwise_twins(ours: nn.Module) -> list:
    """One single-layer nn.LSTM per layer of ``ours``, holding its weights."""
    directions = 2 if ours.bidirectional else 1
    width = directions * (ours.proj_size or ours.hidden_size)
    param = next(ours.parameters())
    layers = []
    for layer in range(ours.num_layers):
        twin = nn.LSTM(ours.input_size if layer == 0 else width, ours.hidden_size,
                       bias=ours.bias, batch_first=ours.batch_first,
                       bidirectional=ours.bidirectional, proj_size=ours.proj_size,
                       device=param.device, dtype=param.dtype)
        pattern = re.compile(rf"_l{layer}(_reverse)?$")
        twin.load_state_dict({pattern.sub(lambda m: "_l0" + (m.group(1) or ""), k): v
                              for k, v in ours.state_dict().items() if pattern.search(k)})
        layers.append(twin)
    return layers


def run_layerwise(layers: list, inp, hx, p: float):
    """nn.LSTM's multi-layer forward spelt out: each layer, then dropout."""
    per_layer = hx[0].size(0) // len(layers)
    h_n, c_n = [], []
    for index, layer in enumerate(layers):
        rows = slice(index * per_layer, (index + 1) * per_layer)
        inp, (h, c) = layer(inp, (hx[0][rows], hx[1][rows]))
        h_n.append(h)
        c_n.append(c)
        if index < len(layers) - 1:
            if isinstance(inp, PackedSequence):
                inp = PackedSequence(F.dropout(inp.data, p, training=True), inp.batch_sizes,
                                     inp.sorted_indices, inp.unsorted_indices)
            else:
                inp = F.dropout(inp, p, training=True)
    return inp, (torch.cat(h_n), torch.cat(c_n))


def _forward_with_cotangents(module_call, x, hx, lengths, batch_first, seed):
    """The forward from fresh leaves x, h0, c0 (dropout drawn after ``seed``):
    the roots (output, padded; h_n; c_n), the leaves, and fixed cotangents
    for the roots."""
    x, h0, c0 = (t.detach().requires_grad_() for t in (x, *hx))
    inp = x if lengths is None else pack_padded_sequence(
        x, lengths, batch_first=batch_first, enforce_sorted=False)
    torch.manual_seed(seed)
    out, (h_n, c_n) = module_call(inp, (h0, c0))
    if lengths is not None:
        out = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first)[0]
    gen = torch.Generator().manual_seed(seed + 1)
    roots = (out, h_n, c_n)
    cotangents = [torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t) for t in roots]
    return roots, (x, h0, c0), cotangents


def check_dropout_layerwise(cfg: dict, dtype: torch.dtype, device: str, p: float = 0.4):
    """fusedlstm.LSTM in training with dropout ``p`` against its layers run
    by nn.LSTM with dropout between them, under the same seed."""
    cfg = dict(cfg)
    packed = cfg.pop("packed", False)
    I, H, B, T = 5, 6, 4, 7
    torch.manual_seed(0)
    ours = fusedlstm.LSTM(I, H, dropout=p, **cfg).to(device, dtype).train()
    layers = layerwise_twins(ours)
    directions = 2 if ours.bidirectional else 1
    shape = (B, T, I) if ours.batch_first else (T, B, I)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(device, dtype)
    hx = tuple(torch.randn(ours.num_layers * directions, B, width, generator=gen,
                           dtype=torch.float64).to(device, dtype)
               for width in (ours.proj_size or H, H))
    lengths = torch.tensor([T, 2, T - 1, 1]) if packed else None

    results = {}
    for name, call, params in (
            ("fusedlstm", ours, list(ours.parameters())),
            ("layerwise", lambda inp, hx: run_layerwise(layers, inp, hx, p),
             [q for layer in layers for q in layer.parameters()])):
        roots, leaves, cotangents = _forward_with_cotangents(call, x, hx, lengths,
                                                             ours.batch_first, 7)
        grads = torch.autograd.grad(roots, (*leaves, *params), cotangents)
        results[name] = [t.detach() for t in roots] + list(grads)
    vtol, gtol = TOL[dtype]
    for index, (a, r) in enumerate(zip(results["fusedlstm"], results["layerwise"])):
        close(a, r, vtol if index < 3 else gtol, f"tensor {index}")

    # The masks did drop something, and the same seed draws them again.
    with torch.no_grad():
        torch.manual_seed(7)
        first = ours(x, hx)[0]
        torch.manual_seed(7)
        again = ours(x, hx)[0]
        without = ours.eval()(x, hx)[0]
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.equal(first, without)
    return ours


@CUDA_ONLY
@pytest.mark.parametrize("path", ["stepwise", "persistent"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("cfg", DROPOUT_CASES, ids=lambda c: "-".join(
    f"{k}{v}" for k, v in c.items()))
def test_dropout_matches_nn_lstm_layer_by_layer(monkeypatch, path, dtype, cfg):
    if path == "persistent" and dtype == torch.float64:
        pytest.skip("float64 has no persistent kernel (see test_persistent_errors)")
    monkeypatch.setenv("FUSEDLSTM_CUDA_PATH", path)
    check_dropout_layerwise(cfg, dtype, "cuda")
