"""The implementations the benchmarks compare, side by side with identical
weights (``build_impls``): fusedlstm eager and CUDA-graph replay, torch.nn.LSTM
(cuDNN) eager and graph replay, native (nn.LSTM with cuDNN disabled), FlashRNN
when importable; on the CPU fusedlstm and nn.LSTM (oneDNN/ATen). Inputs come
from ``make_inputs``; the timing conventions are common.py's.
"""
from __future__ import annotations

import os

from typing import Callable, Optional

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from common import Shape


def make_reference(shape: Shape, dtype: torch.dtype, device, seed: int = 0) -> nn.LSTM:
    torch.manual_seed(seed)
    ref = nn.LSTM(shape.I, shape.H, num_layers=shape.layers,
                  bidirectional=shape.bidirectional, proj_size=shape.proj_size)
    return ref.to(device=device, dtype=dtype)


def make_inputs(shape: Shape, dtype, device, n_sets: int, seed: int = 1):
    """n_sets different inputs of the shape ([T, B, I], or PackedSequence)."""
    g = torch.Generator().manual_seed(seed)
    sets = []
    for _ in range(n_sets):
        x = torch.randn(shape.T, shape.B, shape.I, generator=g).to(device=device, dtype=dtype)
        if shape.packed:
            lengths = torch.tensor(shape.lengths)
            x = pack_padded_sequence(x, lengths, enforce_sorted=False)
        sets.append(x)
    return sets


def _data(x):
    return x.data if isinstance(x, PackedSequence) else x


def _with_data(x, data):
    if isinstance(x, PackedSequence):
        return PackedSequence(data, x.batch_sizes, x.sorted_indices, x.unsorted_indices)
    return data


def make_cotangent(out_like: torch.Tensor, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out_like.shape, generator=g).to(out_like)


class Impl:
    """A callable ``run(i)`` over input set i, plus what it needs for parity checks."""

    def __init__(self, name: str):
        self.name = name

    def setup(self, mode: str, inputs: list) -> None:  # may raise; caller records
        raise NotImplementedError

    def run(self, i: int):
        raise NotImplementedError

    def output(self, i: int) -> torch.Tensor:
        """The output (and in training the input gradient) for set i, for parity."""
        raise NotImplementedError

    def teardown(self) -> None:
        pass


class EagerModule(Impl):
    """Calls a module; ``context`` wraps every call (e.g. cuDNN disabled)."""

    def __init__(self, name, module, context: Optional[Callable] = None):
        super().__init__(name)
        self.module = module
        self.context = context or _null_context

    def setup(self, mode, inputs):
        self.mode = mode
        self.params = [p for p in self.module.parameters()]
        if mode == "training":
            self.inputs = [_with_data(x, _data(x).detach().clone().requires_grad_()) for x in inputs]
            with torch.no_grad(), self.context():
                out = self.module(inputs[0])[0]
            self.cot = make_cotangent(_data(out))
        else:
            self.inputs = inputs

    def run(self, i):
        x = self.inputs[i]
        with self.context():
            if self.mode == "inference":
                with torch.no_grad():
                    return self.module(x)
            out = _data(self.module(x)[0])
            grads = torch.autograd.grad(out, [_data(x), *self.params], self.cot)
            return out.detach(), grads

    def output(self, i):
        return parity_vector(self.mode, self.run(i))

    def teardown(self):
        self.inputs = None


def compared_tensors(mode: str, result) -> dict:
    """The tensors of an Impl.run result that implementations are compared
    on: the output (a PackedSequence's data), and in training the input
    gradient."""
    if mode == "inference":
        return {"output": _data(result[0])}
    out, grads = result
    return {"output": out, "grad_input": grads[0]}


def parity_vector(mode: str, result) -> torch.Tensor:
    """compared_tensors flattened into one float vector, for max-error
    comparison between impls."""
    return torch.cat([t.float().flatten() for t in compared_tensors(mode, result).values()])


class _null_context:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _cudnn_off():
    return torch.backends.cudnn.flags(enabled=False)


class _environment:
    """An environment variable set to ``value`` for the calls it wraps
    (fusedlstm reads FUSEDLSTM_CUDA_PATH and FUSEDLSTM_CUDA_DIRECTIONS on
    every call, and a CUDA graph keeps what its capture ran)."""

    def __init__(self, name, value):
        self.name, self.value = name, value

    def __enter__(self):
        self.old = os.environ.get(self.name)
        os.environ[self.name] = self.value
        return self

    def __exit__(self, *exc):
        if self.old is None:
            os.environ.pop(self.name, None)
        else:
            os.environ[self.name] = self.old
        return False


def _cuda_path(value):
    return _environment("FUSEDLSTM_CUDA_PATH", value)


class _environments:
    """Several variables at once, each as _environment sets it."""

    def __init__(self, **values):
        self.parts = [_environment(k, v) for k, v in values.items()]

    def __enter__(self):
        for part in self.parts:
            part.__enter__()
        return self

    def __exit__(self, *exc):
        for part in reversed(self.parts):
            part.__exit__(*exc)
        return False


def _concurrent_directions():
    return _environment("FUSEDLSTM_CUDA_DIRECTIONS", "concurrent")


class GraphReplay(Impl):
    """CUDA-graph replay of an EagerModule: one graph per input set (so that
    the input sets still rotate), captured after a warm-up on a side stream."""

    def __init__(self, name, eager: EagerModule):
        super().__init__(name)
        self.eager = eager

    def setup(self, mode, inputs):
        self.eager.setup(mode, inputs)
        n = len(inputs)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for i in range(3):
                self.eager.run(i % n)
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        self.graphs, self.results = [], []
        for i in range(n):
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                self.results.append(self.eager.run(i))
            self.graphs.append(g)
        torch.cuda.synchronize()

    def run(self, i):
        self.graphs[i].replay()

    def output(self, i):
        self.graphs[i].replay()
        torch.cuda.synchronize()
        return parity_vector(self.eager.mode, self.results[i])

    def teardown(self):
        self.graphs, self.results = [], []
        self.eager.teardown()


class FlashRNNImpl(Impl):
    """FlashRNN ``cuda_fused`` LSTM (only 1 layer, one direction, no packing or
    projection). The input projection x @ W_ihᵀ is included, so it does the
    same work as nn.LSTM. Weights come from the same nn.LSTM (gate order
    i, f, g, o is the same in both)."""

    def __init__(self, ref: nn.LSTM, shape: Shape, dtype: torch.dtype, device_info: dict):
        super().__init__("flashrnn")
        if shape.layers != 1 or shape.bidirectional or shape.proj_size or shape.packed:
            raise NotImplementedError("FlashRNN: 1 layer, unidirectional, unpacked, no projection only")
        import flashrnn  # noqa: F401
        self.fr = _flashrnn_with_device_info(device_info)
        H = shape.H
        self.H = H
        self.dtype_name = {torch.bfloat16: "bfloat16", torch.float16: "float16",
                           torch.float32: "float32"}[dtype]
        self.w_ih = ref.weight_ih_l0.detach().clone()
        self.R = ref.weight_hh_l0.detach().clone().view(4, 1, H, H)      # GHDP
        self.b = (ref.bias_ih_l0 + ref.bias_hh_l0).detach().clone().view(4, 1, H)  # GHD

    def setup(self, mode, inputs):
        self.mode = mode
        # batch-first [B, T, I] as FlashRNN takes its input
        self.inputs = [x.transpose(0, 1).contiguous() for x in inputs]
        if mode == "training":
            for t in (self.w_ih, self.R, self.b):
                t.requires_grad_(True)
            self.inputs = [x.requires_grad_(True) for x in self.inputs]
            out = self._forward(self.inputs[0])
            # the same cotangent as the time-major impls get, laid out batch-first
            self.cot = make_cotangent(out.detach().transpose(0, 1)).transpose(0, 1).contiguous()

    def _forward(self, x):
        B, T, _ = x.shape
        wx = (x @ self.w_ih.t()).view(B, T, 4, 1, self.H)  # BTGHD
        h, _last = self.fr.flashrnn(wx, self.R, self.b, function="lstm",
                                    backend="cuda_fused", dtype=self.dtype_name)
        h = h[0]  # states[0] = h: [B, T, NH, D]
        if h.shape[1] == T + 1:  # some versions keep the initial state
            h = h[:, 1:]
        return h.reshape(B, T, self.H)

    def run(self, i):
        x = self.inputs[i]
        if self.mode == "inference":
            with torch.no_grad():
                return self._forward(x)
        out = self._forward(x)
        grads = torch.autograd.grad(out, [x, self.w_ih, self.R, self.b], self.cot)
        return out.detach(), grads

    def output(self, i):
        r = self.run(i)
        # back to time-major, as nn.LSTM's output and input gradient are
        if self.mode == "inference":
            return r.transpose(0, 1).float().flatten()
        out, grads = r
        return torch.cat([out.transpose(0, 1).float().flatten(),
                          grads[0].transpose(0, 1).float().flatten()])


def flashrnn_device_info(overrides: Optional[dict] = None) -> dict:
    """The figures FlashRNN's device-query module would give (its C++ module
    does not build on CUDA 13), from torch's device properties; H100 values
    where torch does not expose a field. ``overrides`` wins."""
    info = {"maxThreadsPerBlock": 1024, "regsPerMultiprocessor": 65536,
            "multiProcessorCount": 132, "sharedMemPerBlockOptin": 232448}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(torch.cuda.current_device())
        for key, attr in (("multiProcessorCount", "multi_processor_count"),
                          ("regsPerMultiprocessor", "regs_per_multiprocessor"),
                          ("sharedMemPerBlockOptin", "shared_memory_per_block_optin"),
                          ("maxThreadsPerBlock", "max_threads_per_block")):
            value = getattr(p, attr, None)
            if value:
                info[key] = int(value)
    info.update(overrides or {})
    return info


def _flashrnn_with_device_info(device_info: dict):
    """FlashRNN's module with its device query answered at run time: every
    loaded flashrnn module's ``get_gpu_info`` is rebound in memory (nothing on
    disk changes). Returns the module whose ``flashrnn`` function we call."""
    import importlib
    import sys
    import types

    for name in ("flashrnn.flashrnn.flashrnn", "flashrnn.flashrnn", "flashrnn"):
        try:
            importlib.import_module(name)
        except Exception:
            pass

    def get_gpu_info(device_id=0, *args, **kwargs):
        return dict(device_info)

    target = None
    for name, mod in list(sys.modules.items()):
        if not (name == "flashrnn" or name.startswith("flashrnn.")) or mod is None:
            continue
        if hasattr(mod, "get_gpu_info"):
            mod.get_gpu_info = get_gpu_info
        if (target is None and isinstance(getattr(mod, "flashrnn", None), types.FunctionType)
                and hasattr(mod, "FlashRNNConfig") and hasattr(mod, "get_gpu_info")):
            target = mod
    if target is None:
        raise ImportError("could not locate FlashRNN's flashrnn() next to get_gpu_info")
    return target


def flashrnn_available() -> bool:
    try:
        import flashrnn  # noqa: F401
        return True
    except Exception:
        return False


def build_impls(shape: Shape, dtype: torch.dtype, device, names: list[str],
                flashrnn_info: Optional[dict] = None, seed: int = 0):
    """{name: Impl or Exception} for the requested names, all with the weights
    of one seeded nn.LSTM. A construction failure is returned, not raised."""
    import fusedlstm

    ref = make_reference(shape, dtype, device, seed)
    out = {}

    def fused():
        m = fusedlstm.LSTM(shape.I, shape.H, num_layers=shape.layers,
                           bidirectional=shape.bidirectional, proj_size=shape.proj_size)
        m = m.to(device=device, dtype=dtype)
        m.load_state_dict(ref.state_dict())
        return m

    def torch_copy():
        m = make_reference(shape, dtype, device, seed)
        m.load_state_dict(ref.state_dict())
        return m

    def fused_pair(name, context=None):
        """fusedlstm under `context`, eager as `name` and graph-replayed as
        `name`_graph."""
        def eager():
            return EagerModule(name, fused(), context=context)
        return {name: eager, name + "_graph": lambda: GraphReplay(name + "_graph", eager())}

    makers = {
        **fused_pair("fusedlstm"),
        **fused_pair("fusedlstm_cluster", lambda: _cuda_path("cluster")),
        # The cluster forward with one whole cluster.sync() a step, as before
        # its split-phase barrier (NOTES change 71): the two side by side.
        **fused_pair("fusedlstm_cluster_whole", lambda: _environments(
            FUSEDLSTM_CUDA_PATH="cluster", FUSEDLSTM_CLUSTER_SYNC="whole")),
        **fused_pair("fusedlstm_persistent", lambda: _cuda_path("persistent")),
        **fused_pair("fusedlstm_stepwise", lambda: _cuda_path("stepwise")),
        **fused_pair("fusedlstm_concurrent", _concurrent_directions),
        "cudnn": lambda: EagerModule("cudnn", torch_copy()),
        "cudnn_graph": lambda: GraphReplay("cudnn_graph", EagerModule("cudnn", torch_copy())),
        "native": lambda: EagerModule("native", torch_copy(), context=_cudnn_off),
        "nn_lstm": lambda: EagerModule("nn_lstm", torch_copy()),
        "flashrnn": lambda: FlashRNNImpl(ref, shape, dtype, flashrnn_info or {}),
    }
    for name in names:
        try:
            out[name] = makers[name]()
        except Exception as e:  # recorded by the caller
            out[name] = e
    return out
