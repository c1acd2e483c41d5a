"""The operators and the modules on CUDA under torch.library.opcheck and
torch.compile: what tests/test_ops.py, tests/test_inference_op.py and
tests/test_compile.py check on the CPU, with the CUDA kernels behind the
fake ones.

* opcheck on CUDA samples: the fake kernels must describe what the CUDA
  kernels return (shapes, strides, dtypes: the CUDA kernels keep a bfloat16
  layer's activations in bfloat16 where the CPU ones may keep float), and
  the autograd registration and AOT dispatch must hold there too;
* torch.compile(fullgraph=True), aot_eager and inductor, forward and
  backward, equal to eager;
* dynamic=True compiles once for varying T and B;
* mode="reduce-overhead" (Inductor's CUDA graphs) replays training steps
  equal to eager.

scripts/gpu_check.sh runs this file in a step of its own (Inductor's
compilation takes most of its time). Skipped, with the reason shown, where
CUDA is absent.
"""
from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch import nn

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA device not present")

from helpers import assert_results_close  # noqa: E402
from test_compile import CONFIGS, SHAPES, Tagger, _graphs, _run  # noqa: E402
from test_ops import SAMPLES, make_args  # noqa: E402

FWD = torch.ops.fusedlstm.lstm_layer_forward
INF = torch.ops.fusedlstm.lstm_layer_inference
BWD = torch.ops.fusedlstm.lstm_layer_backward
# Padded, packed and projected, in both directions; every sample takes a
# cluster or persistent kernel under auto (float32 and bfloat16; float64 runs
# stepwise).
CUDA_SAMPLES = [s for s in SAMPLES if s[0] in (
    "padded", "packed_reverse", "proj_packed_reverse", "no_bias", "single_step")]
IDS = [s[0] for s in CUDA_SAMPLES]
DTYPES = [torch.float32, torch.bfloat16, torch.float64]


def cuda_args(sample, dtype, requires_grad):
    """make_args' arguments on CUDA (batch_sizes stays on the CPU, as in
    PackedSequence)."""
    args = make_args(sample, dtype, requires_grad=False)
    moved = []
    for index, value in enumerate(args):
        if isinstance(value, torch.Tensor) and index != 8:
            value = value.to("cuda").requires_grad_(requires_grad)
        moved.append(value)
    return moved


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sample", CUDA_SAMPLES, ids=IDS)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_forward_cuda(sample, dtype, requires_grad):
    torch.library.opcheck(FWD, cuda_args(sample, dtype, requires_grad))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("sample", CUDA_SAMPLES, ids=IDS)
def test_opcheck_inference_cuda(sample, dtype):
    torch.library.opcheck(INF, cuda_args(sample, dtype, requires_grad=False))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("sample", CUDA_SAMPLES, ids=IDS)
def test_opcheck_backward_cuda(sample, dtype):
    args = cuda_args(sample, dtype, requires_grad=False)
    output, h_n, c_n, gates, cells = FWD(*args)
    gen = torch.Generator().manual_seed(5)
    grads = [torch.randn(t.shape, generator=gen).to(t) for t in (output, h_n, c_n)]
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, batch_sizes, reverse = args
    torch.library.opcheck(BWD, [*grads, x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, output,
                                gates, cells, batch_sizes, reverse])


def _cuda_inputs(config, T=4, B=3, with_hx=False):
    x = torch.randn((B, T, 5) if config.get("batch_first") else (T, B, 5), device="cuda")
    if not with_hx:
        return [x]
    layers = config.get("num_layers", 1) * (2 if config.get("bidirectional") else 1)
    return [x, torch.randn(layers, B, config.get("proj_size") or 8, device="cuda"),
            torch.randn(layers, B, 8, device="cuda")]


class WithState(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, h, c):
        return self.model(x, (h, c))


# aot_eager (no code generated) on every configuration; inductor, whose
# Triton compilation takes seconds per graph, on the bidirectional one.
BACKEND_CASES = ([("aot_eager", config) for config in CONFIGS]
                 + [("inductor", CONFIGS[1])])


@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("backend,config", BACKEND_CASES,
                         ids=[f"{b}-{c}" for b, c in BACKEND_CASES])
def test_compile_fullgraph_matches_eager_cuda(config, with_hx, backend):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = Tagger(**config).cuda()
    if with_hx:
        model = WithState(model)
    inputs = _cuda_inputs(config, with_hx=with_hx)
    eager = _run(model, inputs)
    got = _run(torch.compile(model, fullgraph=True, backend=backend), inputs)
    assert_results_close(got, eager)


@pytest.mark.parametrize("backend,config", [("aot_eager", CONFIGS[2]),
                                            ("inductor", CONFIGS[1])], ids=str)
def test_dynamic_shapes_compile_once_cuda(config, backend):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = Tagger(**config).cuda()
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend=backend)
    for index, (T, B) in enumerate(SHAPES):
        inputs = _cuda_inputs(config, T, B)
        # After the first shape, any recompilation is an error.
        with torch._dynamo.config.patch(error_on_recompile=index > 0):
            got = _run(compiled, inputs)
        assert_results_close(got, _run(model, inputs))
    assert _graphs(Tagger) == 1


def test_reduce_overhead_replays_training_steps_cuda():
    """Inductor's CUDA graphs: the first calls record, the later ones replay;
    every step equals eager."""
    config = CONFIGS[1]
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = Tagger(**config).cuda()
    compiled = torch.compile(model, fullgraph=True, mode="reduce-overhead")
    for step in range(4):
        torch.manual_seed(step)
        inputs = _cuda_inputs(config)
        eager = _run(model, inputs)
        got = _run(compiled, inputs)
        assert_results_close(got, eager)
