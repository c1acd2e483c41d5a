"""``replace_lstm``: swap fusedlstm's modules into an existing model."""
from __future__ import annotations

from torch import nn

from .modules import LSTM, LSTMCell


def _convert(module: nn.Module) -> nn.Module:
    if type(module) is nn.LSTM:
        new = LSTM(
            module.input_size, module.hidden_size, num_layers=module.num_layers,
            bias=module.bias, batch_first=module.batch_first,
            dropout=module.dropout, bidirectional=module.bidirectional,
            proj_size=module.proj_size, device="meta",
        )
    elif type(module) is nn.LSTMCell:
        new = LSTMCell(
            module.input_size, module.hidden_size, bias=module.bias, device="meta"
        )
    else:
        return module
    # Take the very Parameter objects, so optimizers and hooks holding them
    # keep working, and device, dtype and values are kept as they are.
    for name, param in module.named_parameters(recurse=False):
        setattr(new, name, param)
    if isinstance(new, LSTM):
        new._init_flat_weights()
    new.train(module.training)
    return new


def replace_lstm(model: nn.Module) -> nn.Module:
    """Replaces every ``nn.LSTM`` and ``nn.LSTMCell`` in ``model`` in place.

    Parameters (with their device, dtype and values) are carried over as the
    same ``Parameter`` objects. Returns ``model``; if ``model`` is itself an
    ``nn.LSTM`` or ``nn.LSTMCell``, returns its replacement. Subclasses of
    ``nn.LSTM`` are left alone: they may override ``forward``.
    """
    converted = _convert(model)
    if converted is not model:
        return converted
    for name, child in list(model.named_children()):
        new = replace_lstm(child)
        if new is not child:
            setattr(model, name, new)
    return model
