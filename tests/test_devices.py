"""The meta device, and calls that mix devices, against torch.nn.

Meta tensors are how models are built without memory (``device="meta"``,
then ``to_empty`` and a checkpoint); a module whose weights were never
materialised must raise, as nn.LSTM does, and never compute. On a machine
without a GPU, meta is the second device that mismatches can be made with;
tests/cuda/test_cuda_devices.py makes them with CUDA.
"""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_sequence

import fusedlstm
from helpers import assert_results_close, outcome, run_lstm

META = torch.device("meta")


def _structure(tree):
    """Shapes, dtypes and devices of every tensor in a result."""
    if isinstance(tree, PackedSequence):
        return ("packed", _structure(tree.data), tree.batch_sizes.tolist())
    if isinstance(tree, torch.Tensor):
        return (tuple(tree.shape), tree.dtype, tree.device)
    return tuple(_structure(t) for t in tree)


META_CONFIGS = [
    dict(),
    dict(num_layers=2, bidirectional=True, proj_size=3, batch_first=True),
    dict(bias=False, dtype=torch.bfloat16),
]


@pytest.mark.parametrize("config", META_CONFIGS, ids=str)
@pytest.mark.parametrize("form", ["padded", "unbatched", "packed", "hx"])
def test_meta_module_like_nn_lstm(config, form):
    config = dict(config)
    dtype = config.pop("dtype", torch.float32)
    results = []
    for cls in (nn.LSTM, fusedlstm.LSTM):
        module = cls(3, 5, device=META, dtype=dtype, **config)
        x = torch.randn(2, 6, 3, device=META, dtype=dtype, requires_grad=True)
        if form == "unbatched":
            out = module(x[0])
        elif form == "packed":
            out = module(pack_sequence([x[0], x[1, :4]]))
        elif form == "hx":
            layers = module.num_layers * (2 if module.bidirectional else 1)
            h = torch.randn(layers, 2 if module.batch_first else 6,
                            module.proj_size or 5, device=META, dtype=dtype)
            c = torch.randn(layers, h.shape[1], 5, device=META, dtype=dtype)
            out = module(x, (h, c))
        else:
            out = module(x)
        output = out[0].data if form == "packed" else out[0]
        (output.sum() + out[1][1].sum()).backward()
        grads = [p.grad for p in module.parameters()] + [x.grad]
        results.append((_structure(out), _structure(grads)))
    assert results[1] == results[0]


@pytest.mark.parametrize("batched", [True, False])
def test_meta_cell_like_nn_lstm_cell(batched):
    results = []
    for cls in (nn.LSTMCell, fusedlstm.LSTMCell):
        module = cls(3, 5, device=META)
        x = torch.randn(*((2,) if batched else ()), 3, device=META, requires_grad=True)
        h, c = module(x)
        (h.sum() + c.sum()).backward()
        results.append((_structure((h, c)), _structure([p.grad for p in module.parameters()])))
    assert results[1] == results[0]


def test_built_on_meta_then_loaded_computes_like_nn_lstm():
    config = dict(num_layers=2, bidirectional=True, proj_size=3)
    torch.manual_seed(0)
    ref = nn.LSTM(3, 5, **config)
    ours = fusedlstm.LSTM(3, 5, device=META, **config).to_empty(device="cpu")
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(4, 2, 3)
    assert_results_close(run_lstm(ours, x), run_lstm(ref, x))


def test_parameters_put_in_place_behind_setattr_are_used():
    # How accelerate's init_empty_weights models are loaded: meta Parameters
    # replaced in module._parameters directly, bypassing nn.RNNBase's
    # __setattr__ that keeps _flat_weights current. nn.LSTM notices on the
    # next call (_update_flat_weights); so must fusedlstm, or it would run
    # on the meta weights.
    torch.manual_seed(0)
    ref = nn.LSTM(3, 5, num_layers=2, bidirectional=True)
    ours = fusedlstm.LSTM(3, 5, num_layers=2, bidirectional=True, device=META)
    for name, value in ref.state_dict().items():
        ours._parameters[name] = nn.Parameter(value.clone())
    x = torch.randn(4, 2, 3)
    assert_results_close(run_lstm(ours, x), run_lstm(ref, x))


# ------------------------------------------------------------- mismatches

def _lstm_call(weights, x, h=None, c=None, *, batch_first=False, unbatched=False,
               packed=False):
    def make(cls):
        def call():
            torch.manual_seed(0)
            module = cls(3, 4, batch_first=batch_first, device=weights)
            shape = (5, 3) if unbatched else ((2, 5, 3) if batch_first else (5, 2, 3))
            inp = torch.randn(shape, device=x)
            if packed:
                inp = pack_sequence([torch.randn(5, 3, device=x), torch.randn(3, 3, device=x)])
            if h is None:
                return module(inp)
            state = (4,) if unbatched else (2, 4)
            return module(inp, (torch.zeros(1, *state, device=h),
                                torch.zeros(1, *state, device=c)))
        return call
    return make


CPU = "cpu"
PADDED_MISMATCHES = {
    "weights_meta": _lstm_call(META, CPU),
    "input_meta": _lstm_call(CPU, META),
    "h0_meta": _lstm_call(CPU, CPU, META, CPU),
    "c0_meta": _lstm_call(CPU, CPU, CPU, META),
    "states_first": _lstm_call(META, CPU, META, META),
    "input_meta_states_meta": _lstm_call(CPU, META, META, META),
    "batch_first_weights_meta": _lstm_call(META, CPU, batch_first=True),
    "unbatched_h0_meta": _lstm_call(CPU, CPU, META, CPU, unbatched=True),
}


@pytest.mark.parametrize("case", list(PADDED_MISMATCHES), ids=list(PADDED_MISMATCHES))
def test_padded_device_mismatch_raises_nn_lstm_error(case):
    make = PADDED_MISMATCHES[case]
    ref_err, ref_res = outcome(make(nn.LSTM))
    our_err, our_res = outcome(make(fusedlstm.LSTM))
    assert ref_err is not None, f"nn.LSTM did not raise: {ref_res!r}"
    assert type(our_err) is type(ref_err) and str(our_err) == str(ref_err), (our_err, ref_err)


OTHER_MISMATCHES = {
    "packed_weights_meta": (_lstm_call(META, CPU, packed=True), nn.LSTM, fusedlstm.LSTM),
    "packed_input_meta": (_lstm_call(CPU, META, packed=True), nn.LSTM, fusedlstm.LSTM),
    "packed_c0_meta": (_lstm_call(CPU, CPU, CPU, META, packed=True), nn.LSTM, fusedlstm.LSTM),
}


def _cell_call(weights, x, h=None, c=None):
    def make(cls):
        def call():
            module = cls(3, 4, device=weights)
            hx = None if h is None else (torch.zeros(2, 4, device=h), torch.zeros(2, 4, device=c))
            return module(torch.randn(2, 3, device=x), hx)
        return call
    return make


for _name, _args in {"weights_meta": (META, CPU), "input_meta": (CPU, META),
                     "h_meta": (CPU, CPU, META, CPU), "c_meta": (CPU, CPU, CPU, META),
                     "states_cpu": (META, META, CPU, CPU)}.items():
    OTHER_MISMATCHES[f"cell_{_name}"] = (_cell_call(*_args), nn.LSTMCell, fusedlstm.LSTMCell)


@pytest.mark.parametrize("case", list(OTHER_MISMATCHES), ids=list(OTHER_MISMATCHES))
def test_packed_and_cell_device_mismatch_raise(case):
    # Packed input and cells have no device check of their own in torch:
    # its RuntimeError comes from whichever operation meets the mismatch
    # first ("Tensor on device meta is not on the expected device cpu!"
    # here, other words between CPU and CUDA). fusedlstm raises the same
    # type, naming the tensor; before, the meta kernel ran and returned
    # uninitialised memory.
    make, ref_cls, our_cls = OTHER_MISMATCHES[case]
    ref_err, _ = outcome(make(ref_cls))
    our_err, our_res = outcome(make(our_cls))
    assert isinstance(ref_err, RuntimeError) and "expected device" in str(ref_err), ref_err
    assert type(our_err) is RuntimeError, f"fusedlstm returned {our_res!r}"
    assert "is on meta but input is on cpu" in str(our_err) or \
        "is on cpu but input is on meta" in str(our_err), our_err


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64])
@pytest.mark.parametrize("on_meta", ["input", "h"])
def test_cell_without_units_refuses_mixed_devices(dtype, on_meta):
    # hidden_size 0 runs a composite instead of the fused kernels, and on meta
    # input torch's decompositions take the CPU weights without elements as
    # they take scalars: for integer input fusedlstm returned an int64
    # result where nn.LSTMCell raises (found by the long fuzz run). It now
    # makes the operators' device check, as for hidden_size >= 1; where
    # nn.LSTMCell accepts the mix (float input) that is the fuzz sweep's
    # known divergence device_mismatch_accepted.
    def call(cls):
        module = cls(0, 0, bias=False)
        x = torch.zeros(2, 0, dtype=dtype, device=META if on_meta == "input" else CPU)
        h = torch.zeros(2, 0, dtype=dtype, device=META if on_meta == "h" else CPU)
        return lambda: module(x, (h, torch.zeros(2, 0, dtype=dtype)))
    ref_err, _ = outcome(call(nn.LSTMCell))
    our_err, our_res = outcome(call(fusedlstm.LSTMCell))
    if dtype == torch.int64 and on_meta == "input":
        assert isinstance(ref_err, RuntimeError), "nn.LSTMCell accepted integer input"
    assert type(our_err) is RuntimeError, f"fusedlstm returned {our_res!r}"
    assert re.search(r"lstm_cell: \w+ is on (meta|cpu) but input is on (cpu|meta)",
                     str(our_err)), our_err


@pytest.mark.parametrize("op", ["forward", "inference", "backward"])
@pytest.mark.parametrize("on_meta", ["input", "w_hh", "c0", "b_ih"])
def test_operators_refuse_mixed_devices(op, on_meta):
    torch.manual_seed(0)
    args = dict(input=torch.randn(4, 2, 3), h0=torch.randn(2, 5), c0=torch.randn(2, 5),
                w_ih=torch.randn(20, 3), w_hh=torch.randn(20, 5),
                b_ih=torch.randn(20), b_hh=torch.randn(20))
    if op == "backward":
        out, h_n, c_n, gates, cells = torch.ops.fusedlstm.lstm_layer_forward(
            *args.values(), None, None, False)
    args[on_meta] = args[on_meta].to(META)
    values = list(args.values())
    with pytest.raises(RuntimeError, match=r"is on (meta|cpu) but input is on (cpu|meta)"):
        if op == "forward":
            torch.ops.fusedlstm.lstm_layer_forward(*values, None, None, False)
        elif op == "inference":
            torch.ops.fusedlstm.lstm_layer_inference(*values, None, None, False)
        else:
            torch.ops.fusedlstm.lstm_layer_backward(
                torch.ones_like(out), torch.ones_like(h_n), torch.ones_like(c_n),
                *values, None, out, gates, cells, None, False)

