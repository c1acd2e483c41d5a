"""Weights that something else computes before each call: torch.nn.utils'
parametrize, weight_norm, spectral_norm and pruning, and AWD-LSTM's weight
drop. fusedlstm's modules, built as such or swapped in by replace_lstm, must
give nn.LSTM's outputs and gradients (float64, default tolerances) in
training and in eval mode."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrizations, parametrize, prune

import fusedlstm
from helpers import assert_results_close, run_lstm


class Halved(nn.Module):
    def forward(self, weight):
        return 0.5 * weight


class WeightDrop(nn.Module):
    """AWD-LSTM's DropConnect on W_hh: the Parameter is replaced by a plain
    tensor that the wrapper sets, dropped out, before every call."""

    def __init__(self, module: nn.Module, name: str, p: float):
        super().__init__()
        self.module, self.name, self.p = module, name, p
        raw = getattr(module, name)
        del module._parameters[name]
        self.register_parameter(f"{name}_raw", nn.Parameter(raw.detach().clone()))
        setattr(module, name, raw.detach().clone())

    def forward(self, *args):
        raw = getattr(self, f"{self.name}_raw")
        setattr(self.module, self.name, F.dropout(raw, self.p, self.training))
        return self.module(*args)


def _hook_weight_norm(m, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated, still used
        return torch.nn.utils.weight_norm(m, name)


# Each applies one reparametrization to `name` of a module and returns what
# to call. Those that draw random numbers when applied are applied under the
# same seed on both sides.
REPARAMETRIZATIONS = {
    "parametrize": lambda m, name: parametrize.register_parametrization(m, name, Halved()),
    "parametrizations.weight_norm": lambda m, name: parametrizations.weight_norm(m, name),
    "parametrizations.spectral_norm": lambda m, name: parametrizations.spectral_norm(m, name),
    "parametrizations.orthogonal": lambda m, name: parametrizations.orthogonal(m, name),
    "weight_norm (hook)": _hook_weight_norm,
    "spectral_norm (hook)": lambda m, name: torch.nn.utils.spectral_norm(m, name),
    "prune.l1_unstructured": lambda m, name: prune.l1_unstructured(m, name, amount=0.5),
    "weight drop": lambda m, name: WeightDrop(m, name, p=0.3),
}


def _build(cls, kind: str, name: str, cell: bool):
    torch.manual_seed(0)
    if cell:
        module = cls(3, 5, dtype=torch.float64)
    else:
        module = cls(3, 5, num_layers=2, bidirectional=True, dtype=torch.float64)
    torch.manual_seed(1)
    return REPARAMETRIZATIONS[kind](module, name)


def _calls(module, x):
    """Two training calls (a spectral norm's power iteration moves between
    them, a weight drop draws new masks) and one eval call."""
    module.train()
    results = [run_lstm(module, x, seed=s) for s in (10, 11)]
    module.eval()
    results.append(run_lstm(module, x, seed=12))
    return results


CASES = [(kind, name, False) for kind in REPARAMETRIZATIONS
         for name in ("weight_hh_l0", "weight_ih_l1_reverse")]
CASES += [(kind, "weight_hh", True) for kind in
          ("parametrize", "parametrizations.weight_norm", "weight_norm (hook)",
           "prune.l1_unstructured", "weight drop")]


@pytest.mark.parametrize("kind,name,cell", CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("how", ["constructed", "replaced"])
def test_reparametrized_weight_like_nn_lstm(kind, name, cell, how):
    torch_cls = nn.LSTMCell if cell else nn.LSTM
    ours_cls = fusedlstm.LSTMCell if cell else fusedlstm.LSTM
    expected_module = _build(torch_cls, kind, name, cell)
    if how == "constructed":
        module = _build(ours_cls, kind, name, cell)
    else:
        module = fusedlstm.replace_lstm(_build(torch_cls, kind, name, cell))
    lstm = module.module if isinstance(module, WeightDrop) else module
    assert isinstance(lstm, ours_cls)
    x = torch.randn(4, 2, 3, dtype=torch.float64) if not cell else torch.randn(2, 3, dtype=torch.float64)
    for got, expected in zip(_calls(module, x), _calls(expected_module, x)):
        assert_results_close(got, expected)


@pytest.mark.parametrize("cell", [False, True])
def test_parametrized_module_swaps_both_ways_and_unparametrizes_to_its_class(cell):
    torch_cls = nn.LSTMCell if cell else nn.LSTM
    ours_cls = fusedlstm.LSTMCell if cell else fusedlstm.LSTM
    name = "weight_hh" if cell else "weight_hh_l0"
    module = parametrizations.weight_norm(torch_cls(3, 4), name)
    originals = list(module.parametrizations[name].parameters())
    fusedlstm.replace_lstm(module)
    assert isinstance(module, ours_cls) and parametrize.is_parametrized(module, name)
    assert parametrize.type_before_parametrizations(module) is ours_cls
    assert list(module.parametrizations[name].parameters()) == originals
    fusedlstm.restore_lstm(module)
    assert parametrize.type_before_parametrizations(module) is torch_cls
    fusedlstm.replace_lstm(module)
    parametrize.remove_parametrizations(module, name)
    assert type(module) is ours_cls


def test_subclass_with_parametrization_is_left_alone():
    class Custom(nn.LSTM):
        def forward(self, input, hx=None):
            return super().forward(input, hx)

    module = parametrizations.weight_norm(Custom(3, 4), "weight_hh_l0")
    cls = type(module)
    fusedlstm.replace_lstm(module)
    assert type(module) is cls
    # A class deriving from parametrize's that adds its own forward is a
    # subclass too.
    module = parametrizations.weight_norm(nn.LSTM(3, 4), "weight_hh_l0")
    module.__class__ = type(type(module).__name__, (type(module),), {"forward": Custom.forward})
    cls = type(module)
    fusedlstm.replace_lstm(module)
    assert type(module) is cls
