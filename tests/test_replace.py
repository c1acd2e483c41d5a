"""fusedlstm.replace_lstm: swaps nn.LSTM / nn.LSTMCell in place."""
from __future__ import annotations

import torch
from torch import nn

import fusedlstm
from helpers import assert_results_close, run_lstm


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True)
        self.blocks = nn.Sequential(nn.Linear(12, 5), nn.ReLU())
        self.inner = nn.ModuleDict({"cell": nn.LSTMCell(5, 3), "proj": nn.LSTM(5, 8, proj_size=2)})
        self.layers = nn.ModuleList([nn.LSTM(3, 3, bias=False), nn.GRU(3, 3)])

    def forward(self, x):
        out, _ = self.encoder(x)
        out = self.blocks(out)
        h, c = self.inner["cell"](out[:, 0])
        p, _ = self.inner["proj"](out.transpose(0, 1))
        q, _ = self.layers[0](h.unsqueeze(0))
        r, _ = self.layers[1](q)
        return p.sum() + h.sum() + c.sum() + r.sum()


def _grads(model, x):
    model.zero_grad(set_to_none=True)
    xi = x.clone().requires_grad_()
    loss = model(xi)
    loss.backward()
    return {"loss": loss.detach(), "grad_x": xi.grad,
            **{n: p.grad for n, p in model.named_parameters()}}


def test_replace_everything_keeps_weights_and_results():
    torch.manual_seed(0)
    model = Model()
    x = torch.randn(2, 5, 4)
    expected = _grads(model, x)
    params_before = {n: p for n, p in model.named_parameters()}
    returned = fusedlstm.replace_lstm(model)
    assert returned is model
    assert type(model.encoder) is fusedlstm.LSTM
    assert type(model.inner["cell"]) is fusedlstm.LSTMCell
    assert type(model.inner["proj"]) is fusedlstm.LSTM
    assert type(model.layers[0]) is fusedlstm.LSTM
    assert type(model.layers[1]) is nn.GRU
    # The very same Parameter objects (optimizers keep working).
    after = dict(model.named_parameters())
    assert list(after) == list(params_before)
    assert all(after[n] is params_before[n] for n in after)
    assert_results_close(_grads(model, x), expected)
    # Attributes carried over.
    assert model.encoder.batch_first and model.encoder.bidirectional
    assert model.inner["proj"].proj_size == 2 and model.layers[0].bias is False


def test_replace_keeps_dtype_training_mode_and_repr():
    torch.manual_seed(0)
    model = nn.Sequential(nn.LSTM(3, 4, num_layers=2, dropout=0.1)).double().eval()
    r = repr(model)
    fusedlstm.replace_lstm(model)
    assert repr(model) == r
    assert not model[0].training
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert model[0]._flat_weights[0] is model[0].weight_ih_l0


def test_replace_top_level_module_is_swapped_in_place():
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 4)
    torch.manual_seed(0)
    twin = nn.LSTM(3, 4)
    assert fusedlstm.replace_lstm(lstm) is lstm
    assert type(lstm) is fusedlstm.LSTM
    x = torch.randn(5, 2, 3)
    assert_results_close(run_lstm(lstm, x), run_lstm(twin, x))
    cell = nn.LSTMCell(3, 4)
    assert fusedlstm.replace_lstm(cell) is cell and type(cell) is fusedlstm.LSTMCell


def test_replace_leaves_subclasses_and_optimizer_works():
    class MyLSTM(nn.LSTM):
        pass

    torch.manual_seed(0)
    model = nn.Sequential(MyLSTM(3, 4))
    fusedlstm.replace_lstm(model)
    assert type(model[0]) is MyLSTM

    model = nn.ModuleList([nn.LSTM(3, 4)])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fusedlstm.replace_lstm(model)
    w = model[0].weight_ih_l0.detach().clone()
    model[0](torch.randn(2, 1, 3))[0].sum().backward()
    opt.step()
    assert not torch.equal(model[0].weight_ih_l0, w)  # the optimizer's param is ours


def test_replace_is_idempotent_and_shared_modules():
    torch.manual_seed(0)
    shared = nn.LSTM(3, 4)
    model = nn.ModuleDict({"a": shared, "b": shared})
    fusedlstm.replace_lstm(model)
    fusedlstm.replace_lstm(model)
    assert type(model["a"]) is fusedlstm.LSTM
    assert model["a"].weight_ih_l0 is model["b"].weight_ih_l0


def test_restore_undoes_replace_with_the_same_parameters():
    torch.manual_seed(0)
    model = Model().double()
    model.encoder.eval()
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    expected = _grads(model, x)
    r = repr(model)
    params = dict(model.named_parameters())
    fusedlstm.replace_lstm(model)
    assert fusedlstm.restore_lstm(model) is model
    assert type(model.encoder) is nn.LSTM
    assert type(model.inner["cell"]) is nn.LSTMCell
    assert type(model.inner["proj"]) is nn.LSTM
    assert type(model.layers[0]) is nn.LSTM
    assert repr(model) == r
    assert not model.encoder.training and model.inner["proj"].training
    after = dict(model.named_parameters())
    assert list(after) == list(params) and all(after[n] is params[n] for n in after)
    assert model.encoder._flat_weights[0] is model.encoder.weight_ih_l0
    # Both are torch's own modules again, on the same weights: bit for bit.
    torch.testing.assert_close(_grads(model, x), expected, rtol=0, atol=0)


def test_restore_top_level_and_leaves_others_alone():
    class MyLSTM(fusedlstm.LSTM):
        pass

    torch.manual_seed(0)
    ours = fusedlstm.LSTM(3, 4, proj_size=2, batch_first=True)
    torch.manual_seed(0)
    twin = fusedlstm.LSTM(3, 4, proj_size=2, batch_first=True)
    weight = ours.weight_hr_l0
    assert fusedlstm.restore_lstm(ours) is ours
    assert type(ours) is nn.LSTM and ours.proj_size == 2 and ours.batch_first
    assert ours.weight_hr_l0 is weight
    x = torch.randn(2, 5, 3)
    assert_results_close(run_lstm(ours, x), run_lstm(twin, x))
    cell = fusedlstm.LSTMCell(3, 4, bias=False)
    assert fusedlstm.restore_lstm(cell) is cell
    assert type(cell) is nn.LSTMCell and cell.bias is False
    model = nn.Sequential(MyLSTM(3, 4), nn.LSTM(3, 4))
    fusedlstm.restore_lstm(model)
    assert type(model[0]) is MyLSTM and type(model[1]) is nn.LSTM


def test_replace_keeps_hooks_buffers_attributes_and_references():
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 4)
    calls = []
    pre = lstm.register_forward_pre_hook(lambda m, args: calls.append(("pre", type(m))))
    lstm.register_forward_hook(lambda m, args, out: calls.append(("forward", type(m))))
    lstm.register_full_backward_hook(lambda m, gin, gout: calls.append(("backward", type(m))))
    lstm.register_buffer("steps_seen", torch.arange(3.0))
    lstm.note = "kept"
    holder = {"lstm": lstm}  # a reference outside the module tree
    model = nn.Sequential(lstm)
    fusedlstm.replace_lstm(model)
    assert model[0] is lstm and holder["lstm"] is lstm and type(lstm) is fusedlstm.LSTM
    out, _ = model(torch.randn(2, 1, 3, requires_grad=True))
    out.sum().backward()
    ours = fusedlstm.LSTM
    assert calls == [("pre", ours), ("forward", ours), ("backward", ours)]
    assert torch.equal(model.state_dict()["0.steps_seen"], torch.arange(3.0))
    assert lstm.note == "kept"
    # A handle taken before the swap still removes its hook.
    pre.remove()
    calls.clear()
    model(torch.randn(2, 1, 3))
    assert calls == [("forward", ours)]
