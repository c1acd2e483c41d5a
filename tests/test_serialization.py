"""state_dict, save/load, deepcopy, pickle, .to() and friends, repr,
flatten_parameters: fusedlstm modules behave as torch.nn's."""
from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn

import fusedlstm
from helpers import make_cell_pair, make_lstm_pair, parity_check

LSTM_CONFIGS = [
    dict(),
    dict(num_layers=3, bias=False),
    dict(num_layers=2, bidirectional=True, proj_size=3, batch_first=True, dropout=0.25),
]


def _forward(module, x):
    out = module(x)
    return out if isinstance(module, nn.LSTMCell) else (out[0], *out[1])


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and sa[k].shape == sb[k].shape, k
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("config", LSTM_CONFIGS, ids=str)
def test_state_dict_both_ways(config):
    torch.manual_seed(1)
    ref = nn.LSTM(4, 6, **config)
    ours = fusedlstm.LSTM(4, 6, **config)  # different initial weights
    ours.load_state_dict(ref.state_dict())  # nn -> ours
    _same_state(ours, ref)
    parity_check(ref.eval(), ours.eval(), torch.randn(3, 5, 4))
    torch.manual_seed(2)
    ours2 = fusedlstm.LSTM(4, 6, **config)
    back = nn.LSTM(4, 6, **config)
    back.load_state_dict(ours2.state_dict())  # ours -> nn
    _same_state(back, ours2)
    parity_check(back.eval(), ours2.eval(), torch.randn(3, 5, 4))


def test_cell_state_dict_both_ways():
    ref, ours = make_cell_pair(4, 6)
    _same_state(ours, ref)
    back = nn.LSTMCell(4, 6)
    back.load_state_dict(fusedlstm.LSTMCell(4, 6).state_dict())
    assert list(back.state_dict()) == list(ref.state_dict())


def test_state_dict_mismatch_errors_alike():
    """Loading a 1-layer state_dict into 2 layers fails alike (the message
    differs only in the class name)."""
    bad = nn.LSTM(4, 6, num_layers=1).state_dict()
    errors = []
    for m in (nn.LSTM(4, 6, num_layers=2), fusedlstm.LSTM(4, 6, num_layers=2)):
        with pytest.raises(RuntimeError) as e:
            m.load_state_dict(bad)
        errors.append(str(e.value))
    assert errors[1] == errors[0]


@pytest.mark.parametrize("config", LSTM_CONFIGS, ids=str)
def test_save_load_deepcopy_pickle(config):
    _, ours = make_lstm_pair(4, 6, **config)
    ours.eval()
    x = torch.randn(5, 3, 4)
    expected = _forward(ours, x)

    buf = io.BytesIO()
    torch.save(ours, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    copied = copy.deepcopy(ours)
    pickled = pickle.loads(pickle.dumps(ours))
    buf = io.BytesIO()
    torch.save(ours.state_dict(), buf)
    buf.seek(0)
    fresh = fusedlstm.LSTM(4, 6, **config).eval()
    fresh.load_state_dict(torch.load(buf, weights_only=True))

    for other in (loaded, copied, pickled, fresh):
        assert type(other) is fusedlstm.LSTM
        assert repr(other) == repr(ours)
        _same_state(other, ours)
        # Independent parameters, live flat weights.
        assert all(p.data_ptr() != q.data_ptr() for p, q in zip(other.parameters(), ours.parameters()))
        torch.testing.assert_close(_forward(other, x), expected, rtol=0, atol=0)
        with torch.no_grad():
            other.weight_ih_l0.add_(1.0)
        assert not torch.equal(_forward(other, x)[0], expected[0])


def test_cell_save_load_deepcopy_pickle():
    _, ours = make_cell_pair(4, 6)
    x = torch.randn(3, 4)
    expected = ours(x)
    buf = io.BytesIO()
    torch.save(ours, buf)
    buf.seek(0)
    for other in (torch.load(buf, weights_only=False), copy.deepcopy(ours),
                  pickle.loads(pickle.dumps(ours))):
        assert type(other) is fusedlstm.LSTMCell
        torch.testing.assert_close(other(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("config", LSTM_CONFIGS, ids=str)
def test_repr_equal(config):
    assert repr(fusedlstm.LSTM(4, 6, **config)) == repr(nn.LSTM(4, 6, **config))
    assert repr(fusedlstm.LSTMCell(4, 6, bias=False)) == repr(nn.LSTMCell(4, 6, bias=False))
    assert fusedlstm.LSTM(4, 6, **config).extra_repr() == nn.LSTM(4, 6, **config).extra_repr()


@pytest.mark.parametrize("convert", ["double", "half", "bfloat16", "to_double", "to_kw", "float"])
def test_dtype_conversions(convert):
    ref, ours = make_lstm_pair(4, 6, num_layers=2, bidirectional=True, proj_size=2)
    apply = {
        "double": lambda m: m.double(),
        "half": lambda m: m.half(),
        "bfloat16": lambda m: m.bfloat16(),
        "to_double": lambda m: m.to(torch.float64),
        "to_kw": lambda m: m.to(dtype=torch.bfloat16, device="cpu"),
        "float": lambda m: m.double().float(),
    }[convert]
    ref, ours = apply(ref), apply(ours)
    assert [p.dtype for p in ours.parameters()] == [p.dtype for p in ref.parameters()]
    _same_state(ours, ref)
    # _flat_weights follow the conversion (forward uses the converted tensors).
    for w, p in zip(ours._flat_weights, ours.parameters()):
        assert w is p
    dtype = next(ours.parameters()).dtype
    parity_check(ref, ours, torch.randn(3, 2, 4, dtype=torch.float64).to(dtype))


def test_flatten_parameters_and_assignment():
    ref, ours = make_lstm_pair(4, 6, num_layers=2)
    x = torch.randn(3, 2, 4)
    ours.flatten_parameters()
    ref.flatten_parameters()
    parity_check(ref, ours, x)
    # Assigning a new Parameter is picked up by forward, as in nn.LSTM.
    new = nn.Parameter(torch.randn_like(ref.weight_hh_l1))
    ref.weight_hh_l1 = new
    ours.weight_hh_l1 = nn.Parameter(new.detach().clone())
    assert ours._flat_weights[ours._flat_weights_names.index("weight_hh_l1")] is ours.weight_hh_l1
    parity_check(ref, ours, x)


def test_parameters_share_storage_after_to():
    _, ours = make_lstm_pair(4, 6)
    ours = ours.to(torch.float64)
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    before = ours(x)[0]
    with torch.no_grad():
        for p in ours.parameters():
            p.zero_()
    after = ours(x)[0]
    assert not torch.equal(before, after)
    torch.testing.assert_close(after, torch.zeros_like(after))


def test_train_eval_and_module_api():
    ref, ours = make_lstm_pair(4, 6, num_layers=2, dropout=0.5)
    assert ours.training
    ours.eval()
    assert not ours.training
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in ref.named_modules()]
    assert ours.all_weights.__len__() == ref.all_weights.__len__()
    for a, b in zip(ours.all_weights, ref.all_weights):
        assert [t.shape for t in a] == [t.shape for t in b]


MAP_LOCATIONS = {
    "str": "cpu",
    "device": torch.device("cpu"),
    "dict": {"cpu": "cpu"},
    "callable": lambda storage, location: storage,
}


@pytest.mark.parametrize("where", list(MAP_LOCATIONS), ids=list(MAP_LOCATIONS))
def test_save_load_map_location(where):
    """Whole modules and state_dicts load through every form of map_location
    and keep working as nn.LSTM's twin (values, gradients)."""
    map_location = MAP_LOCATIONS[where]
    ref, ours = make_lstm_pair(4, 6, **LSTM_CONFIGS[2])
    cell_ref, cell = make_cell_pair(4, 6)
    x = torch.randn(5, 3, 4)

    def round_trip(obj, weights_only):
        buf = io.BytesIO()
        torch.save(obj, buf)
        buf.seek(0)
        return torch.load(buf, map_location=map_location, weights_only=weights_only)

    loaded = round_trip(ours, False)
    fresh = fusedlstm.LSTM(4, 6, **LSTM_CONFIGS[2])
    fresh.load_state_dict(round_trip(ours.state_dict(), True))
    for other in (loaded, fresh):
        assert all(p.device.type == "cpu" for p in other.parameters())
        _same_state(other, ours)
        parity_check(ref, other, x)
    loaded_cell = round_trip(cell, False)
    assert type(loaded_cell) is fusedlstm.LSTMCell
    parity_check(cell_ref, loaded_cell, x[0])
