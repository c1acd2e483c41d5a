"""``replace_lstm`` and ``restore_lstm``: swap fusedlstm's modules into an
existing model, and back."""
from __future__ import annotations

from torch import nn

from .modules import LSTM, LSTMCell

# (from, to) module types, each way. Exact types only: a subclass may
# override forward, and swapping it would drop that.
_TO_FUSED = {nn.LSTM: LSTM, nn.LSTMCell: LSTMCell}
_TO_TORCH = {LSTM: nn.LSTM, LSTMCell: nn.LSTMCell}


def _convert(module: nn.Module, mapping: dict) -> nn.Module:
    target = mapping.get(type(module))
    if target is None:
        return module
    if issubclass(target, nn.LSTMCell):
        new = target(module.input_size, module.hidden_size, bias=module.bias,
                     device="meta")
    else:
        new = target(
            module.input_size, module.hidden_size, num_layers=module.num_layers,
            bias=module.bias, batch_first=module.batch_first,
            dropout=module.dropout, bidirectional=module.bidirectional,
            proj_size=module.proj_size, device="meta",
        )
    # Take the very Parameter objects, so optimizers and hooks holding them
    # keep working, and device, dtype and values are kept as they are.
    for name, param in module.named_parameters(recurse=False):
        setattr(new, name, param)
    if isinstance(new, nn.RNNBase):
        new._init_flat_weights()
    new.train(module.training)
    return new


def _swap(model: nn.Module, mapping: dict) -> nn.Module:
    converted = _convert(model, mapping)
    if converted is not model:
        return converted
    for name, child in list(model.named_children()):
        new = _swap(child, mapping)
        if new is not child:
            setattr(model, name, new)
    return model


def replace_lstm(model: nn.Module) -> nn.Module:
    """Replaces every ``nn.LSTM`` and ``nn.LSTMCell`` in ``model`` in place.

    Parameters (with their device, dtype and values) are carried over as the
    same ``Parameter`` objects. Returns ``model``; if ``model`` is itself an
    ``nn.LSTM`` or ``nn.LSTMCell``, returns its replacement. Subclasses of
    ``nn.LSTM`` are left alone: they may override ``forward``.
    """
    return _swap(model, _TO_FUSED)


def restore_lstm(model: nn.Module) -> nn.Module:
    """The inverse of :func:`replace_lstm`: replaces every
    ``fusedlstm.LSTM`` and ``fusedlstm.LSTMCell`` in ``model`` by
    ``nn.LSTM`` / ``nn.LSTMCell`` in place, with the same ``Parameter``
    objects. For code that needs torch's own modules, such as
    ``torch.jit.script`` of an ``LSTMCell`` (torch 2.13 cannot script
    ``nn.LSTM`` itself).
    """
    return _swap(model, _TO_TORCH)
