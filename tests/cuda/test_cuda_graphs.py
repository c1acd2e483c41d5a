"""fusedlstm.LSTM in CUDA graphs the ways users build them: a module made a
graphed callable (torch.cuda.make_graphed_callables: its forward and its
backward captured), and a whole training step (forward, backward, optimizer)
captured once and replayed. Replays run the kernels eager training runs, on
the same data: outputs, gradients and updated weights bitwise equal.
(test_cuda_parity.py captures the operators themselves.) Skipped, with the
reason shown, where CUDA is absent."""
import copy

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA device not present")

import fusedlstm  # noqa: E402
from helpers import assert_bitwise  # noqa: E402

CONFIGS = [
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=2, proj_size=5, batch_first=True),
]
T, B, I, H = 7, 4, 6, 16


class Flat(nn.Module):
    """The LSTM with a flat tuple of outputs, as make_graphed_callables wants."""

    def __init__(self, **config):
        super().__init__()
        self.lstm = fusedlstm.LSTM(I, H, **config)

    def forward(self, x, h0, c0):
        out, (h_n, c_n) = self.lstm(x, (h0, c0))
        return out, h_n, c_n


def _batch(model, seed):
    gen = torch.Generator().manual_seed(seed)
    lstm = model.lstm
    layers = lstm.num_layers * (2 if lstm.bidirectional else 1)
    shape = (B, T, I) if lstm.batch_first else (T, B, I)
    return [torch.randn(size, generator=gen).cuda() for size in
            (shape, (layers, B, lstm.proj_size or H), (layers, B, H))]


def _loss(outputs):
    return sum((o * (i + 1)).sin().sum() for i, o in enumerate(outputs))


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_make_graphed_callables_equals_eager(config):
    torch.manual_seed(0)
    eager = Flat(**config).cuda()
    graphed_module = copy.deepcopy(eager)
    sample = [t.requires_grad_() for t in _batch(eager, 0)]
    graphed = torch.cuda.make_graphed_callables(graphed_module, tuple(sample))
    for seed in range(1, 4):
        results = []
        for model in (eager, graphed):  # graphed is graphed_module, its forward replaced
            model.zero_grad(set_to_none=True)
            inputs = [t.requires_grad_() for t in _batch(eager, seed)]
            outputs = model(*inputs)
            _loss(outputs).backward()
            # Compared before the next replay overwrites the graph's buffers.
            results.append([o.detach().clone() for o in outputs]
                           + [t.grad for t in inputs] + [p.grad for p in model.parameters()])
        assert_bitwise(results[1], results[0], f"step {seed}")


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_whole_training_step_captured_and_replayed(config):
    torch.manual_seed(0)
    eager = Flat(**config).cuda()
    captured = copy.deepcopy(eager)
    opt_eager = torch.optim.SGD(eager.parameters(), lr=0.1)
    opt_captured = torch.optim.SGD(captured.parameters(), lr=0.1)
    static = _batch(captured, 0)

    def step(model, optimizer, inputs):
        optimizer.zero_grad(set_to_none=False)
        loss = _loss(model(*inputs))
        loss.backward()
        optimizer.step()
        return loss

    # Warm-up on a side stream (as torch's documentation does), then capture.
    # Both models take the same warm-up step, so their weights stay equal.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step(captured, opt_captured, static)
    torch.cuda.current_stream().wait_stream(side)
    step(eager, opt_eager, static)
    graph = torch.cuda.CUDAGraph()
    opt_captured.zero_grad(set_to_none=False)
    with torch.cuda.graph(graph):
        static_loss = step(captured, opt_captured, static)
    # Capturing ran nothing: the captured model is where the warm-up left it.
    for seed in range(1, 5):
        batch = _batch(eager, seed)
        for buffer, value in zip(static, batch):
            buffer.copy_(value)
        graph.replay()
        loss = step(eager, opt_eager, batch)
        torch.cuda.synchronize()
        assert_bitwise([static_loss], [loss], f"loss at step {seed}")
        assert_bitwise(list(captured.parameters()), list(eager.parameters()),
                        f"weights after step {seed}")
