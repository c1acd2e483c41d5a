#!/usr/bin/env python
"""Memory the autograd graph keeps for backward: fusedlstm against nn.LSTM.

    python benchmarks/saved_memory.py            # the table, T=100, I=H=256
    python benchmarks/saved_memory.py --hidden 512 --steps 50

Method. One training forward per module under
``torch.autograd.graph.saved_tensors_hooks``: every tensor an autograd node
saves passes through the pack hook, which records its untyped storage
(data_ptr -> nbytes; a storage saved several times, or by several nodes, or
as views, counts once, at its full size). Storages of the parameters and of
the caller's inputs (x, h0, c0, packed data and batch_sizes) are left out:
they exist whether or not anything is saved, and both modules save them
(or views of them) alike. What remains is what training costs on top of
inference: the activations, and any copies either implementation makes.
nn.LSTM runs as users get it (mkldnn enabled: oneDNN where it applies, the
native ATen path otherwise), fusedlstm on its CPU kernels; same weights,
same input, float32 unless --dtype says otherwise.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fusedlstm  # noqa: E402

MIB = 2.0 ** 20


@dataclass(frozen=True)
class Config:
    name: str
    batch: int
    layers: int = 1
    bidirectional: bool = False
    proj_size: int = 0
    packed: bool = False


CONFIGS = [
    Config(f"{name} B={b}", b, **kw)
    for name, kw in [
        ("1 layer", {}),
        ("2 layers bidirectional", dict(layers=2, bidirectional=True)),
        ("proj_size=H/4", dict(proj_size=-4)),
        ("packed", dict(packed=True)),
    ]
    for b in (1, 64)
]


def saved_bytes(module: nn.Module, inputs, exclude=()) -> int:
    """Bytes of the distinct storages the autograd graph of ``module(*inputs)``
    saves, leaving out those of ``module``'s parameters, of the tensors in
    ``inputs`` (PackedSequence fields included) and of ``exclude``."""
    skip = {t.untyped_storage().data_ptr() for t in module.parameters()}
    for t in _tensors(inputs) + list(exclude):
        skip.add(t.untyped_storage().data_ptr())
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(*inputs)
    del out
    return sum(saved.values())


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):  # PackedSequence is a tuple
        return [t for item in obj for t in _tensors(item)]
    return []


def build(config: Config, input_size: int, hidden: int, steps: int, dtype, seed=0):
    """(nn.LSTM, fusedlstm.LSTM, inputs) with equal weights; inputs require grad."""
    proj = hidden // -config.proj_size if config.proj_size < 0 else config.proj_size
    kwargs = dict(num_layers=config.layers, bidirectional=config.bidirectional, proj_size=proj)
    torch.manual_seed(seed)
    ref = nn.LSTM(input_size, hidden, **kwargs)
    ours = fusedlstm.LSTM(input_size, hidden, **kwargs)
    ours.load_state_dict(ref.state_dict())
    ref, ours = ref.to(dtype), ours.to(dtype)
    x = torch.randn(steps, config.batch, input_size, dtype=dtype, requires_grad=True)
    if not config.packed:
        return ref, ours, (x,)
    # Lengths spread from T down to T/4: a quarter to all of the padded work.
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(steps // 4, steps + 1, (config.batch,), generator=gen)
    lengths[0] = steps
    packed = pack_padded_sequence(x.detach(), lengths, enforce_sorted=False)
    data = packed.data.requires_grad_()
    return ref, ours, (PackedSequence(data, *packed[1:]),)


def measure(config: Config, input_size=256, hidden=256, steps=100, dtype=torch.float32):
    """(nn.LSTM bytes, fusedlstm bytes) saved for one training forward."""
    ref, ours, inputs = build(config, input_size, hidden, steps, dtype)
    return saved_bytes(ref, inputs), saved_bytes(ours, inputs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--native", action="store_true",
                        help="nn.LSTM with mkldnn disabled (its ATen path only)")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    torch.set_num_threads(1)
    flags = torch.backends.mkldnn.flags(enabled=False) if args.native else contextlib.nullcontext()
    print(f"Saved for backward, T={args.steps} I={args.input_size} H={args.hidden} "
          f"{args.dtype}, nn.LSTM {'native ATen' if args.native else 'as configured'}; "
          f"torch {torch.__version__}\n")
    print("| config | nn.LSTM MiB | fusedlstm MiB | fusedlstm / nn.LSTM |")
    print("|---|---:|---:|---:|")
    with flags:
        for config in CONFIGS:
            theirs, ours = measure(config, args.input_size, args.hidden, args.steps, dtype)
            print(f"| {config.name} | {theirs / MIB:.2f} | {ours / MIB:.2f} | {ours / theirs:.2f} |")


if __name__ == "__main__":
    main()
