"""``replace_lstm`` and ``restore_lstm``: swap fusedlstm's modules into an
existing model, and back.

The swap changes the class of each module object in place rather than
building a new module and copying parameters into it. Everything that lives
on the module therefore stays: parameters, buffers (a pruning mask, a
spectral norm's vectors), forward/backward/state_dict hooks and the handles
that remove them, weights that a hook recomputes before each call
(``torch.nn.utils.weight_norm``, pruning, AWD-LSTM's weight drop), attributes
set by the user, and every other reference to the module. Copying only the
parameters lost all of that, and a module whose weight a hook computes ran on
a weight that was never set.

fusedlstm's modules hold exactly the state of torch's (``LSTM`` keeps
``nn.RNNBase``'s, ``LSTMCell`` is an ``nn.LSTMCell``), so the swap is a
change of methods only.
"""
from __future__ import annotations

from torch import nn
from torch.nn.utils import parametrize

from .modules import LSTM, LSTMCell

# (from, to) module types, each way. Exact types only: a subclass may
# override forward, and swapping it would drop that.
_TO_FUSED = {nn.LSTM: LSTM, nn.LSTMCell: LSTMCell}
_TO_TORCH = {LSTM: nn.LSTM, LSTMCell: nn.LSTMCell}

# What torch.nn.utils.parametrize puts in the subclass it derives for a
# parametrized module, besides one property per parametrized tensor.
_PARAMETRIZE_CLASS_KEYS = {"__module__", "__doc__", "__getstate__", "__deepcopy__"}


def _parametrized_base(module: nn.Module) -> type | None:
    """The class that ``parametrize`` derived ``type(module)`` from, if it is
    such a derived class and adds nothing else (no forward of its own)."""
    cls = type(module)
    if not parametrize.is_parametrized(module) or len(cls.__bases__) != 1:
        return None
    base = cls.__bases__[0]
    own = set(cls.__dict__) - _PARAMETRIZE_CLASS_KEYS - set(module.parametrizations)
    if cls.__name__ != f"Parametrized{base.__name__}" or own:
        return None
    return base


def _target_class(module: nn.Module, mapping: dict) -> type | None:
    target = mapping.get(type(module))
    if target is not None:
        return target
    base = _parametrized_base(module)
    if base not in mapping:
        return None
    # The same derivation over the other base: the parametrized tensors'
    # properties move across, and remove_parametrizations, which restores
    # the single base, lands on the right class.
    cls = type(module)
    return type(cls.__name__, (mapping[base],), dict(cls.__dict__))


def _swap(model: nn.Module, mapping: dict, seen: set) -> None:
    if id(model) in seen:
        return
    seen.add(id(model))
    target = _target_class(model, mapping)
    if target is not None:
        model.__class__ = target
    for child in model.children():
        _swap(child, mapping, seen)


def replace_lstm(model: nn.Module) -> nn.Module:
    """Turns every ``nn.LSTM`` and ``nn.LSTMCell`` in ``model`` into
    fusedlstm's, in place, and returns ``model``.

    Each module object stays the same object and keeps all of its state:
    parameters (the same ``Parameter`` objects, so optimizers keep working),
    buffers, hooks, ``torch.nn.utils.parametrize`` parametrizations and any
    attribute set on it. Only its class changes. Subclasses of ``nn.LSTM``
    are left alone, since they may override ``forward``; the subclass that
    ``parametrize`` derives is not such a subclass and is swapped.
    """
    _swap(model, _TO_FUSED, set())
    return model


def restore_lstm(model: nn.Module) -> nn.Module:
    """The inverse of :func:`replace_lstm`: turns every ``fusedlstm.LSTM``
    and ``fusedlstm.LSTMCell`` in ``model`` back into ``nn.LSTM`` /
    ``nn.LSTMCell`` in place, keeping all their state. For code that needs
    torch's own modules, such as ``torch.jit.script`` of an ``LSTMCell``
    (torch 2.13 cannot script ``nn.LSTM`` itself).
    """
    _swap(model, _TO_TORCH, set())
    return model
