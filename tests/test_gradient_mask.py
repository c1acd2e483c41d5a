"""lstm_layer_backward computes only the gradients autograd asks for.

Its ``output_mask`` (one entry per result: grad_input, grad_h0, grad_c0,
grad_w_ih, grad_w_hh, grad_bias, grad_w_hr) leaves a result out as an empty
tensor and skips its whole-sequence product: the first layer of a model fed
raw features needs no dX, a frozen layer no dW. Checked here:

* the operator: a result left out is empty, in the dtype it would have had,
  and every other result is bitwise the one of the full call, on each CPU
  path (fused float32 and bfloat16 recurrence, their few-row products, the
  float64 BLAS loop), padded and packed, with and without projection and
  bias; ``opcheck`` with masks, the double backward included;
* the autograd kernel: the mask it passes is what autograd asked for
  (a dispatch-mode spy reads the call), for ``.backward()`` with frozen
  leaves and for ``autograd.grad`` of a subset;
* the modules: gradients of every leaf that requires one equal
  ``nn.LSTM``'s and ``nn.LSTMCell``'s, and the others stay None, whichever
  leaves are frozen.

The same operator check runs on CUDA in tests/cuda/test_cuda_gradient_mask.py.
"""
from __future__ import annotations

import itertools

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from helpers import assert_bitwise, make_cell_pair, make_lstm_pair, seeded_randn

FWD = torch.ops.fusedlstm.lstm_layer_forward
BWD = torch.ops.fusedlstm.lstm_layer_backward
RESULTS = ("input", "h0", "c0", "w_ih", "w_hh", "bias", "w_hr")

# (name, T, B, I, H, P, bias, packed lengths or None, reverse). The large
# ones take the whole-sequence GEMMs, the small ones the few-row products.
SAMPLES = [
    ("small", 3, 2, 5, 6, 0, True, None, False),
    ("small_proj_packed", 4, 3, 4, 5, 3, True, [4, 2, 1], True),
    ("small_no_bias", 3, 2, 4, 5, 0, False, None, False),
    ("large", 12, 24, 40, 48, 0, True, None, True),
    ("large_proj", 10, 20, 36, 40, 24, True, None, False),
    ("large_packed_no_bias", 12, 20, 32, 48, 0, False,
     [12] * 6 + [9] * 6 + [5] * 5 + [1] * 3, False),
]
IDS = [s[0] for s in SAMPLES]

# Masks that leave out one result each, and the two that matter in practice:
# no dX (the first layer on raw features) and no weight gradients (frozen).
MASKS = (
    [tuple(j != i for j in range(7)) for i in range(7)]
    + [(False, True, True, True, True, True, True),
       (True, True, True, False, False, False, False),
       (False,) * 7]
)


def layer_args(sample, dtype, device="cpu", seed=0):
    """lstm_layer_forward's positional arguments for a sample."""
    _, T, B, I, H, P, bias, lengths, reverse = sample
    S = P or H
    counter = itertools.count(seed)

    def rand(*shape, scale=0.5):
        return (seeded_randn(*shape, dtype=torch.float64, seed=next(counter)) * scale).to(
            device=device, dtype=dtype)

    if lengths is None:
        x, batch_sizes = rand(T, B, I, scale=1.0), None
    else:
        batch_sizes = torch.tensor([sum(l > t for l in lengths) for t in range(T)])
        x = rand(int(batch_sizes.sum()), I, scale=1.0)
    return [x, rand(B, S), rand(B, H), rand(4 * H, I), rand(4 * H, S),
            rand(4 * H) if bias else None, rand(4 * H) if bias else None,
            rand(S, H) if P else None, batch_sizes, reverse]


def backward_args(args, seed=7):
    output, h_n, c_n, gates, cells = FWD(*args)
    cot = [seeded_randn(*t.shape, seed=seed + k).to(t) for k, t in enumerate((output, h_n, c_n))]
    return [*cot, *args[:8], output, gates, cells, *args[8:]]


def check_masked_backward(sample, dtype, device="cpu"):
    """Every mask of MASKS against the full call: left out means empty (in the
    full result's dtype); kept means bitwise equal."""
    bwd_args = backward_args(layer_args(sample, dtype, device))
    full = BWD(*bwd_args)
    for mask in MASKS:
        got = BWD(*bwd_args, list(mask))
        for name, wanted, g, f in zip(RESULTS, mask, got, full):
            if wanted:
                assert_bitwise([g], [f], f"{name} with mask {mask}")
            else:
                assert g.numel() == 0 and g.dtype == f.dtype and g.device == f.device, (
                    f"{name} left out by {mask}: got {tuple(g.shape)} {g.dtype}")


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64],
                         ids=["float32", "bfloat16", "float64"])
def test_results_left_out_are_empty_and_the_rest_unchanged(sample, dtype):
    check_masked_backward(sample, dtype)


def test_c0_of_float32_under_bfloat16_input_keeps_its_dtype_when_left_out():
    args = layer_args(SAMPLES[3], torch.bfloat16)
    args[2] = args[2].float()
    bwd_args = backward_args(args)
    full = BWD(*bwd_args)
    assert full[2].dtype == torch.float32
    got = BWD(*bwd_args, [True, True, False, True, True, True, True])
    assert got[2].numel() == 0 and got[2].dtype == torch.float32
    assert_bitwise([got[3]], [full[3]], "grad_w_ih")


@pytest.mark.parametrize("sample", [SAMPLES[0], SAMPLES[1], SAMPLES[2]], ids=IDS[:3])
@pytest.mark.parametrize("mask", [MASKS[0], MASKS[5], MASKS[8]], ids=["no_dx", "no_bias", "frozen"])
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_backward_with_mask(sample, mask, requires_grad):
    """Schema, fake kernel (empty results where left out), and with
    grad-requiring arguments the double backward through a masked call."""
    bwd_args = backward_args(layer_args(sample, torch.float32))
    if requires_grad:
        bwd_args = [t.clone().requires_grad_()
                    if i < 11 and isinstance(t, torch.Tensor) and t.is_floating_point() else t
                    for i, t in enumerate(bwd_args)]
    torch.library.opcheck(BWD, [*bwd_args, list(mask)])


class _MaskSpy(TorchDispatchMode):
    """Records the output_mask of every lstm_layer_backward call."""

    def __init__(self):
        super().__init__()
        self.masks = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is BWD.default:
            kwargs = kwargs or {}
            self.masks.append(tuple(args[16]) if len(args) > 16 else
                              tuple(kwargs.get("output_mask", (True,) * 7)))
        return func(*args, **(kwargs or {}))


def _asked(*names):
    return tuple(name in names for name in RESULTS)


# (which leaves autograd.grad asks for, the mask of the layer's one call)
REQUESTS = [
    (("x",), _asked("input")),
    (("weight_ih_l0",), _asked("w_ih")),
    (("weight_hh_l0", "bias_ih_l0"), _asked("w_hh", "bias")),
    (("bias_hh_l0",), _asked("bias")),
    (("weight_hr_l0",), _asked("w_hr")),
    (("h0",), _asked("h0")),
    (("c0", "x"), _asked("c0", "input")),
]


@pytest.mark.parametrize("wrt,expected", REQUESTS, ids=["+".join(r[0]) for r in REQUESTS])
def test_autograd_grad_of_a_subset_asks_only_for_it(wrt, expected):
    torch.manual_seed(0)
    _, lstm = make_lstm_pair(4, 6, proj_size=3)
    x = torch.randn(5, 2, 4, requires_grad=True)
    h0 = torch.randn(1, 2, 3, requires_grad=True)
    c0 = torch.randn(1, 2, 6, requires_grad=True)
    leaves = dict(lstm.named_parameters(), x=x, h0=h0, c0=c0)
    out, (h_n, c_n) = lstm(x, (h0, c0))
    loss = out.sum() + h_n.sum() + c_n.sum()
    with _MaskSpy() as spy:
        grads = torch.autograd.grad(loss, [leaves[name] for name in wrt])
    assert spy.masks == [expected]
    assert all(g is not None for g in grads)


def test_frozen_layers_and_raw_features_ask_per_layer():
    """.backward() on a 2-layer model: layer 0's input needs no gradient;
    with layer 1 frozen only its dX is asked (layer 0 needs it)."""
    torch.manual_seed(0)
    _, lstm = make_lstm_pair(4, 6, num_layers=2)
    lstm.weight_ih_l1.requires_grad_(False)
    lstm.weight_hh_l1.requires_grad_(False)
    lstm.bias_ih_l1.requires_grad_(False)
    lstm.bias_hh_l1.requires_grad_(False)
    x = torch.randn(5, 2, 4)
    out, _ = lstm(x)
    with _MaskSpy() as spy:
        out.sum().backward()
    # Backward runs the layers last to first.
    assert spy.masks == [_asked("input"), _asked("w_ih", "w_hh", "bias")]


# Which leaves require a gradient in the module tests.
FREEZES = {
    "input_only": lambda name: name == "x",
    "weights_only": lambda name: name.startswith(("weight", "bias")),
    "w_ih_only": lambda name: name.startswith("weight_ih"),
    "biases_and_states": lambda name: name.startswith("bias") or name in ("h0", "c0"),
    "projection_and_input": lambda name: name.startswith("weight_hr") or name == "x",
    "states_only": lambda name: name in ("h0", "c0"),
}
LSTM_CONFIGS = [
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=2, proj_size=3),
    dict(num_layers=1, bias=False),
]


def _module_grads(module, x, hx, requires, packed_lengths=None):
    leaves = {**dict(module.named_parameters()), "x": x}
    if hx is not None:
        leaves.update(h0=hx[0], c0=hx[1])
    leaves = {k: v.detach().clone().requires_grad_(requires(k)) for k, v in leaves.items()}
    params = {k: v for k, v in leaves.items() if k not in ("x", "h0", "c0")}
    inp = leaves["x"]
    if packed_lengths is not None:
        inp = torch.nn.utils.rnn.pack_padded_sequence(inp, packed_lengths, enforce_sorted=False)
    state = (leaves["h0"], leaves["c0"]) if hx is not None else None
    out, (h_n, c_n) = torch.func.functional_call(module, params, (inp, state))
    if packed_lengths is not None:
        out = out.data
    gen = torch.Generator().manual_seed(3)
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=t.dtype).to(t.device)).sum()
               for t in (out, h_n, c_n))
    live = {k: v for k, v in leaves.items() if v.requires_grad}
    grads = torch.autograd.grad(loss, list(live.values())) if live else []
    return dict(zip(live, grads))


@pytest.mark.parametrize("config", LSTM_CONFIGS, ids=["2layer_bidir", "proj", "no_bias"])
@pytest.mark.parametrize("freeze", list(FREEZES), ids=list(FREEZES))
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_module_gradients_of_the_leaves_that_require_them(config, freeze, packed, dtype):
    requires = FREEZES[freeze]
    if freeze == "projection_and_input" and not config.get("proj_size"):
        requires = FREEZES["input_only"]
    ref, ours = make_lstm_pair(5, 6, dtype=dtype, **config)
    layers = config["num_layers"] * (2 if config.get("bidirectional") else 1)
    S = config.get("proj_size") or 6
    x = seeded_randn(7, 3, 5, dtype=dtype)
    hx = (seeded_randn(layers, 3, S, dtype=dtype, seed=1),
          seeded_randn(layers, 3, 6, dtype=dtype, seed=2))
    lengths = [7, 3, 5] if packed else None
    expected = _module_grads(ref, x, hx, requires, lengths)
    actual = _module_grads(ours, x, hx, requires, lengths)
    assert actual.keys() == expected.keys() and actual
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("freeze", ["input_only", "weights_only", "states_only"])
def test_cell_gradients_of_the_leaves_that_require_them(freeze):
    requires = FREEZES[freeze]
    ref, ours = make_cell_pair(5, 6, dtype=torch.float64)
    results = []
    for module in (ref, ours):
        x = seeded_randn(3, 5, dtype=torch.float64).requires_grad_(requires("x"))
        h0 = seeded_randn(3, 6, dtype=torch.float64, seed=1).requires_grad_(requires("h0"))
        c0 = seeded_randn(3, 6, dtype=torch.float64, seed=2).requires_grad_(requires("c0"))
        params = {k: v.detach().clone().requires_grad_(requires(k))
                  for k, v in module.named_parameters()}
        h, c = torch.func.functional_call(module, params, (x, (h0, c0)))
        leaves = {**params, "x": x, "h0": h0, "c0": c0}
        live = {k: v for k, v in leaves.items() if v.requires_grad}
        grads = torch.autograd.grad(h.sum() + 2 * c.sum(), list(live.values()))
        results.append(dict(zip(live, grads)))
    assert results[1].keys() == results[0].keys() and results[0]
    torch.testing.assert_close(results[1], results[0])


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_training_with_raw_features_and_a_frozen_layer(backend):
    """torch.compile traces the masked backward (fake kernel with the mask):
    a 2-layer model fed raw features, its top layer frozen, gives eager's
    gradients bitwise with aot_eager, and to float32 rounding with inductor
    (which fuses the ops around the operator)."""
    torch._dynamo.reset()
    _, lstm = make_lstm_pair(5, 8, num_layers=2)
    for name, p in lstm.named_parameters():
        p.requires_grad_(name.endswith("l0"))
    x = seeded_randn(6, 3, 5)

    def run(module):
        lstm.zero_grad(set_to_none=True)
        out, (h, c) = module(x)
        (out.square().sum() + h.sum() + c.sum()).backward()
        return {n: p.grad for n, p in lstm.named_parameters() if p.requires_grad}

    eager = run(lstm)
    compiled = run(torch.compile(lstm, fullgraph=True, backend=backend))
    assert compiled.keys() == eager.keys() == {
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"}
    if backend == "aot_eager":
        assert_bitwise(list(compiled.values()), list(eager.values()), "gradient")
    else:
        torch.testing.assert_close(compiled, eager)
