"""Complex LSTMs: nn.LSTM and nn.LSTMCell take complex64 and complex128 (on
the CPU through ATen's per-step loop), and so do fusedlstm's modules, through
the composite layer of fusedlstm/reference.py: results and gradients
(PyTorch's conjugate Wirtinger convention) as nn's, never the fused kernels,
which are for real floating types."""
from __future__ import annotations

import copy
import math
import statistics

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils._python_dispatch import TorchDispatchMode

import fusedlstm
from helpers import assert_same_outcome, make_cell_pair, make_lstm_pair

LSTM_CONFIGS = {
    "plain": dict(),
    "batch_first": dict(batch_first=True),
    "two_layers_bidirectional": dict(num_layers=2, bidirectional=True),
    "proj": dict(proj_size=2),
    "no_bias": dict(num_layers=2, bias=False),
    "dropout": dict(num_layers=2, dropout=0.5),
}


def _complex_randn(*shape, dtype, generator):
    real = torch.randn(*shape, 2, dtype=torch.float64, generator=generator)
    return torch.view_as_complex(real).to(dtype)


def _lstm_results(module, x, hx=None, lengths=None):
    """Outputs, and the gradients of every input and parameter for fixed
    complex cotangents."""
    gen = torch.Generator().manual_seed(7)
    if lengths is not None:
        # pack_padded_sequence cannot differentiate complex data: the packed
        # data itself is the leaf.
        packed = pack_padded_sequence(x, lengths, batch_first=module.batch_first,
                                      enforce_sorted=False)
        x = packed.data.clone().requires_grad_()
        inputs = packed._replace(data=x)
    else:
        x = x.clone().requires_grad_()
        inputs = x
    leaves = [x]
    if hx is not None:
        hx = tuple(t.clone().requires_grad_() for t in hx)
        leaves += list(hx)
    torch.manual_seed(3)  # dropout's masks
    out = module(inputs) if hx is None else module(inputs, hx)
    output, (h_n, c_n) = out
    output = output.data if lengths is not None else output
    roots = [output, h_n, c_n]
    cotangents = [_complex_randn(*r.shape, dtype=r.dtype, generator=gen) for r in roots]
    grads = torch.autograd.grad(roots, leaves + list(module.parameters()), cotangents)
    return (output, h_n, c_n, *grads)


def _states(module, batch, dtype):
    directions = 2 if module.bidirectional else 1
    layers = module.num_layers * directions
    gen = torch.Generator().manual_seed(5)
    return (_complex_randn(layers, batch, module.proj_size or module.hidden_size, dtype=dtype,
                           generator=gen),
            _complex_randn(layers, batch, module.hidden_size, dtype=dtype, generator=gen))


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["no_hx", "hx"])
@pytest.mark.parametrize("config", LSTM_CONFIGS)
def test_complex128_lstm_matches_nn_lstm(config, with_hx, packed):
    ref, ours = make_lstm_pair(3, 4, dtype=torch.complex128, **LSTM_CONFIGS[config])
    ref.train(), ours.train()
    gen = torch.Generator().manual_seed(1)
    shape = (3, 5, 3) if ref.batch_first else (5, 3, 3)
    x = _complex_randn(*shape, dtype=torch.complex128, generator=gen)
    hx = _states(ref, 3, torch.complex128) if with_hx else None
    lengths = [2, 5, 4] if packed else None
    ref_error = assert_same_outcome(lambda: _lstm_results(ref, x, hx, lengths),
                                    lambda: _lstm_results(ours, x, hx, lengths))
    # Dropout: before torch 2.15 ATen's dropout has no complex kernel, for
    # either module; from 2.15 both draw the same masks.
    dropout_fails = config == "dropout" and not _dropout_takes_complex()
    assert (ref_error is not None) == dropout_fails, ref_error


def _dropout_takes_complex() -> bool:
    try:
        torch.nn.functional.dropout(torch.ones(2, dtype=torch.complex128), 0.5, True)
    except RuntimeError:
        return False
    return True


def test_complex128_unbatched_lstm_matches_nn_lstm():
    ref, ours = make_lstm_pair(3, 4, dtype=torch.complex128, num_layers=2)
    x = _complex_randn(5, 3, dtype=torch.complex128, generator=torch.Generator().manual_seed(1))
    results = []
    for module in (ours, ref):
        leaf = x.clone().requires_grad_()
        output, (h_n, c_n) = module(leaf)
        loss = (output.abs() ** 2).sum() + h_n.real.sum() + c_n.imag.sum()
        results.append((output, h_n, c_n,
                        *torch.autograd.grad(loss, [leaf, *module.parameters()])))
    torch.testing.assert_close(results[0], results[1])


@pytest.mark.parametrize("hx", [False, True], ids=["no_hx", "hx"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_cell_matches_nn_lstmcell(dtype, batched, hx):
    ref, ours = make_cell_pair(3, 4, dtype=dtype)
    gen = torch.Generator().manual_seed(2)
    lead = (2,) if batched else ()
    x = _complex_randn(*lead, 3, dtype=dtype, generator=gen)
    state = tuple(_complex_randn(*lead, 4, dtype=dtype, generator=gen) for _ in range(2))
    results = []
    for module in (ours, ref):
        leaves = [x.clone().requires_grad_()] + ([t.clone().requires_grad_() for t in state]
                                                  if hx else [])
        h, c = module(leaves[0], tuple(leaves[1:])) if hx else module(leaves[0])
        loss = (h * c.conj()).real.sum() + h.imag.sum()
        results.append((h, c, *torch.autograd.grad(loss, leaves + list(module.parameters()))))
    torch.testing.assert_close(results[0], results[1])


def test_complex128_gradcheck_and_gradgradcheck():
    # gradcheck checks complex gradients against finite differences of the
    # real and imaginary parts (PyTorch's Wirtinger convention).
    torch.manual_seed(0)
    module = fusedlstm.LSTM(2, 3, proj_size=2, bidirectional=True, dtype=torch.complex128)
    weights = list(module.parameters())
    gen = torch.Generator().manual_seed(4)
    x = _complex_randn(3, 2, 2, dtype=torch.complex128, generator=gen).requires_grad_()

    def layer(x, *weights):
        output, (h_n, c_n) = torch.func.functional_call(
            module, dict(zip([n for n, _ in module.named_parameters()], weights)), (x,))
        return output, h_n, c_n

    assert torch.autograd.gradcheck(layer, (x, *weights))
    assert torch.autograd.gradgradcheck(layer, (x, *weights))


def test_complex64_error_is_nn_lstms_against_complex128():
    """Per output and gradient, the error of each complex64 module against
    nn.LSTM in complex128. Complex sigmoid and tanh are ill-conditioned
    near their poles, so one tensor's error ratio swings by 10x either way
    with the summation order alone (both modules sum in different orders):
    the rule is on the distribution over 30 calls, whose median ratio and
    geometric mean must be within 2x of 1."""
    log_ratios = []
    for seed in range(15):
        for config in ("batch_first", "two_layers_bidirectional"):
            ref, ours = make_lstm_pair(3, 4, dtype=torch.complex64, seed=seed,
                                       **LSTM_CONFIGS[config])
            exact = copy.deepcopy(ref).to(torch.complex128)
            gen = torch.Generator().manual_seed(100 + seed)
            shape = (3, 5, 3) if ref.batch_first else (5, 3, 3)
            x = _complex_randn(*shape, dtype=torch.complex64, generator=gen)
            expected = _lstm_results(exact, x.to(torch.complex128))
            for ours_t, ref_t, exact_t in zip(_lstm_results(ours, x), _lstm_results(ref, x),
                                              expected):
                ours_error = (ours_t.to(exact_t.dtype) - exact_t).abs().max().item()
                ref_error = (ref_t.to(exact_t.dtype) - exact_t).abs().max().item()
                log_ratios.append(math.log(max(ours_error, 1e-30) / max(ref_error, 1e-30)))
    median = math.exp(statistics.median(log_ratios))
    geometric_mean = math.exp(statistics.fmean(log_ratios))
    assert 0.5 <= median <= 2 and 0.5 <= geometric_mean <= 2, (median, geometric_mean)


class _OperatorLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.name())
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.float32])
def test_complex_layers_run_the_composite_and_real_ones_the_fused_kernels(dtype):
    module = fusedlstm.LSTM(3, 4, dtype=dtype)
    x = torch.randn(5, 2, 3, dtype=dtype, requires_grad=True)
    with _OperatorLog() as log:
        module(x)[0].abs().sum().backward()
    fused = {n for n in log.names if n.startswith("fusedlstm::")}
    if dtype.is_complex:
        assert not fused, fused
    else:
        assert {"fusedlstm::lstm_layer_forward", "fusedlstm::lstm_layer_backward"} <= fused
