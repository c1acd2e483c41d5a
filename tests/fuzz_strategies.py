"""What the fuzz sweeps draw (tests/test_fuzz.py on the CPU,
tests/cuda/test_cuda_fuzz.py on CUDA): module configurations, calls
(tests/fuzz_harness.Call) with their memory layouts, the mistakes that break
a call, and one example of each sweep, run and judged by
fuzz_harness.check_call. ``device`` is where the modules and the call's
tensors live; a device mistake moves some of them elsewhere (to the meta
device from the CPU, to the CPU from CUDA)."""
from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, Phase, assume, event, settings
from hypothesis import strategies as st

from fuzz_harness import LAYOUTS, Call, TensorSpec, check_call
from helpers import make_cell_pair, make_lstm_pair

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
OTHER_DTYPES = DTYPES + (torch.int64,)

# FUSEDLSTM_FUZZ_EXAMPLES=N: a long run, N fresh random examples per sweep.
_LONG_RUN = int(os.environ.get("FUSEDLSTM_FUZZ_EXAMPLES", "0"))
# FUSEDLSTM_FUZZ_NO_SHRINK=1: a failure is reported as first drawn, without
# hypothesis's search for a smaller one. For a run with a hard time limit
# (scripts/gpu_check.sh), where shrinking an example whose every try runs on
# the device can outlast the limit and the example is never printed.
_NO_SHRINK = os.environ.get("FUSEDLSTM_FUZZ_NO_SHRINK", "") not in ("", "0")


def fuzz_settings(examples: int):
    """hypothesis settings of a sweep: ``examples`` derandomised examples
    (the same every run), or a long run's fresh ones."""
    common = dict(deadline=None, suppress_health_check=list(HealthCheck), print_blob=True)
    if _NO_SHRINK:
        common["phases"] = (Phase.explicit, Phase.reuse, Phase.generate)
    if _LONG_RUN:
        return settings(max_examples=_LONG_RUN, derandomize=False, **common)
    return settings(max_examples=examples, derandomize=True, database=None, **common)


# --------------------------------------------------------------- strategies


@st.composite
def tensor_spec(draw, shape, dtype, *, requires_grad=True, device="cpu"):
    return TensorSpec(
        shape=tuple(shape), dtype=dtype,
        layout=draw(st.sampled_from(LAYOUTS)),
        expand_dim=draw(st.integers(0, 3)),
        requires_grad=requires_grad,
        seed=draw(st.integers(0, 2**20)),
        device=device,
    )


@st.composite
def lstm_config(draw):
    hidden = draw(st.integers(1, 5))
    return dict(
        input_size=draw(st.integers(1, 4)),
        hidden_size=hidden,
        num_layers=draw(st.integers(1, 3)),
        bias=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bidirectional=draw(st.booleans()),
        proj_size=draw(st.integers(0, hidden - 1)),
        dropout=draw(st.sampled_from([0.0, 0.0, 0.5, 1.0])),
    )


def state_shape(config, batch, width_key):
    layers = config["num_layers"] * (2 if config["bidirectional"] else 1)
    width = (config["proj_size"] or config["hidden_size"]) if width_key == "h" \
        else config["hidden_size"]
    return [layers] + ([] if batch is None else [batch]) + [width]


@st.composite
def lstm_call(draw, config, dtype, device="cpu"):
    kind = draw(st.sampled_from(["padded", "unbatched", "packed"]))
    T = draw(st.integers(1, 4))
    B = draw(st.integers(1 if kind == "packed" else 0, 4))
    I = config["input_size"]
    lengths = None
    enforce_sorted = draw(st.booleans())
    if kind == "unbatched":
        shape = [T, I]
    elif config["batch_first"]:
        shape = [B, T, I]
    else:
        shape = [T, B, I]
    if kind == "packed":
        lengths = draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
        if enforce_sorted:
            lengths.sort(reverse=True)
    x = draw(tensor_spec(shape, dtype, requires_grad=draw(st.booleans()), device=device))
    hx = draw(st.sampled_from(["none", "tuple", "tuple", "list"]))
    h = c = None
    if hx != "none":
        batch = None if kind == "unbatched" else B
        grad = draw(st.booleans())
        h = draw(tensor_spec(state_shape(config, batch, "h"), dtype, requires_grad=grad,
                             device=device))
        c = draw(tensor_spec(state_shape(config, batch, "c"), dtype, requires_grad=grad,
                             device=device))
    return Call(
        kind=kind, x=x, h=h, c=c, hx=hx, lengths=lengths,
        batch_first=config["batch_first"], enforce_sorted=enforce_sorted,
        packed_data_layout=draw(st.sampled_from(["contiguous", "transposed"])),
        device=device,
    )


def pair_and_mode(draw, config, dtype, make_pair, device="cpu"):
    """(torch.nn module, fusedlstm twin) of ``config`` on ``device``, in
    training or eval, the grad mode of the call and the seed."""
    seed = draw(st.integers(0, 2**16))
    training = draw(st.booleans())
    if device != "cpu" and training:
        # cuDNN draws its dropout masks from its own generator state, which
        # no other implementation can reproduce: training calls on CUDA are
        # compared without dropout (tests/cuda/test_cuda_dropout.py compares
        # fusedlstm's with nn.LSTM run layer by layer instead).
        config["dropout"] = 0.0
    pair = make_pair(config.pop("input_size"), config.pop("hidden_size"),
                     dtype=dtype, seed=seed, **config)
    pair = tuple(module.to(device) for module in pair)
    for module in pair:
        module.train(training)
    mode = draw(st.sampled_from(["grad", "grad", "no_grad", "inference_mode"]))
    return pair, mode, seed


# -------------------------------------------------------------------- LSTM


def lstm_valid_example(draw, device: str = "cpu") -> None:
    """Well-formed calls: results and gradients match nn.LSTM."""
    config = draw(lstm_config())
    dtype = draw(st.sampled_from(DTYPES))
    call = draw(lstm_call(config, dtype, device))
    pair, mode, seed = pair_and_mode(draw, dict(config), dtype, make_lstm_pair, device)
    event(check_call(pair, call, mode=mode, seed=seed))
    event(f"kind: {call.kind}")


# Each mistake: (kinds it applies to, whether torch's message for it can be
# a backend accident; see fuzz_harness.BACKEND_MESSAGES).
LSTM_MISTAKES = {
    "seq_len_zero": (("padded", "unbatched"), False),
    "input_size": (("padded", "unbatched", "packed"), False),
    "input_dtype": (("padded", "unbatched", "packed"), False),
    # nn.LSTM aborts the process (heap corruption or segfault, torch 2.13)
    # on a packed call whose h0 and c0 disagree in their number of layers:
    # packed calls never get it.
    "hx_layers": (("padded", "unbatched"), False),
    "hx_batch": (("padded", "packed"), False),
    "hx_width": (("padded", "unbatched", "packed"), False),
    "hx_dtype": (("padded", "unbatched", "packed"), True),
    # Input or states on another device than the module's (the meta device
    # for a module on the CPU, the CPU for one on CUDA). Packed input keeps
    # its data where it is (pack_padded_sequence runs before the module):
    # only its states move.
    "device": (("padded", "unbatched", "packed"), False),
    # Last: they change ranks and structure, which the others assume.
    "input_rank": (("padded", "unbatched"), False),
    "hx_rank": (("padded", "unbatched", "packed"), False),
    "hx_structure": (("padded", "unbatched", "packed"), False),
}
# nn.LSTM hands packed input whose sequences all have the same length to
# oneDNN as a padded batch, with no shape check at all: a wrong input_size
# or state shape there reads and writes out of bounds (heap corruption,
# "corrupted size vs. prev_size", with torch 2.13). Such calls get only the
# other mistakes.
UNCHECKED_ON_ONEDNN = {"input_size", "hx_rank", "hx_batch", "hx_width"}
# On packed input nn.LSTM checks no state shape itself: its kernel meets them.
# (A dtype mismatch included: oneDNN takes bfloat16 input with float32
# weights, and fails with its own message.)
PACKED_BACKEND = {"input_size", "input_dtype", "hx_batch", "hx_width", "device"}
# On CUDA, a state of another dtype or on another device than CUDA input
# meets cuDNN's checks (or the dispatcher's device check) before any of
# nn.LSTM's own: fuzz_harness.CUDA_BACKEND_MESSAGES.
CUDA_BACKEND = {"hx_dtype", "device"}


def _which_states(draw):
    return draw(st.sampled_from([("h",), ("c",), ("h", "c")]))


def _with_rank(shape, rank):
    """``shape`` cut to its last ``rank`` sizes, or padded with leading 1s."""
    return shape[len(shape) - rank:] if rank <= len(shape) else [1] * (rank - len(shape)) + shape


def _respec(spec: TensorSpec, **changes) -> TensorSpec:
    values = dict(vars(spec))
    values.update(changes)
    return TensorSpec(**values)


def _delta(draw, size, low=0):
    """A size other than ``size``, at least ``low``."""
    return draw(st.sampled_from([s for s in (size - 1, size + 1, size + 2, 0) if s >= low
                                 and s != size]))


def _move_off_device(draw, call: Call, *, movable_input: bool) -> None:
    """Puts some of the call's tensors on another device than the module's:
    the input (where it may move), a state or both; the meta device for a
    call on the CPU, the CPU for one on CUDA."""
    other = "meta" if call.device == "cpu" else "cpu"
    # A packed call is given states before (test_fuzz_lstm_malformed_calls).
    names = (["x"] if movable_input else []) + (["h", "c"] if call.hx != "none" else [])
    for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=len(names),
                              unique=True)):
        setattr(call, name, _respec(getattr(call, name), device=other))


def give_lstm_hx(draw, call: Call, config) -> None:
    """Well-formed h0 and c0 for a call that has none (before any mistake)."""
    x = call.x
    if call.kind == "packed":
        batch = len(call.lengths)
    else:
        batch = None if call.kind == "unbatched" else x.shape[0 if call.batch_first else 1]
    call.hx = "tuple"
    call.h = draw(tensor_spec(state_shape(config, batch, "h"), x.dtype, device=x.device))
    call.c = draw(tensor_spec(state_shape(config, batch, "c"), x.dtype, device=x.device))


def apply_lstm_mistake(draw, call: Call, config, mistake: str) -> Call:
    x = call.x
    time_dim = 0 if (call.kind == "unbatched" or not call.batch_first) else 1
    if mistake == "seq_len_zero":
        shape = list(x.shape)
        shape[time_dim] = 0
        call.x = _respec(x, shape=tuple(shape))
    elif mistake == "input_size":
        shape = list(x.shape)
        # pack_padded_sequence itself refuses 0 features ("Cannot pack empty
        # tensors"): such a call never reaches the module.
        shape[-1] = _delta(draw, shape[-1], low=1 if call.kind == "packed" else 0)
        call.x = _respec(x, shape=tuple(shape))
    elif mistake == "input_rank":
        call.kind = "raw"
        padded = list(x.shape) if len(x.shape) == 3 else [1] + list(x.shape)
        rank = draw(st.sampled_from([0, 1, 4]))
        call.x = _respec(x, shape=tuple({0: [], 1: padded[-1:], 4: [2] + padded}[rank]))
    elif mistake == "input_dtype":
        dtype = draw(st.sampled_from([d for d in OTHER_DTYPES if d != x.dtype]))
        call.x = _respec(x, dtype=dtype)
        if call.hx != "none" and draw(st.booleans()):
            call.h, call.c = _respec(call.h, dtype=dtype), _respec(call.c, dtype=dtype)
    elif mistake == "hx_structure":
        call.hx = draw(st.sampled_from(["single", "one", "three", "nones"]))
    elif mistake == "device":
        _move_off_device(draw, call, movable_input=call.kind != "packed")
    else:
        for which in _which_states(draw):
            spec = getattr(call, which)
            shape = list(spec.shape)
            if mistake == "hx_rank":
                # A 4-D state with packed input reaches nn.LSTM's kernel,
                # which splits it by its first size, a number of layers, as
                # in the hx_layers case (and segfaults): packed calls get
                # fewer dimensions only.
                ranks = {"unbatched": (0, 1, 3), "packed": (0, 1, 2)}.get(call.kind, (0, 1, 2, 4))
                shape = _with_rank(shape, draw(st.sampled_from(ranks)))
            elif mistake == "hx_layers":
                shape[0] = _delta(draw, shape[0])
            elif mistake == "hx_batch":
                shape[1] = _delta(draw, shape[1])
            elif mistake == "hx_width":
                other = config["hidden_size"] if which == "h" else (
                    config["proj_size"] or config["hidden_size"])
                choices = {shape[-1] - 1, shape[-1] + 1, other} - {shape[-1]}
                shape[-1] = draw(st.sampled_from(sorted(s for s in choices if s >= 0)))
            elif mistake == "hx_dtype":
                dtype = draw(st.sampled_from([d for d in OTHER_DTYPES if d != spec.dtype]))
                setattr(call, which, _respec(spec, dtype=dtype))
                continue
            setattr(call, which, _respec(spec, shape=tuple(shape)))
    return call


def lstm_malformed_example(draw, device: str = "cpu") -> None:
    """Calls with one or two mistakes: the same error as nn.LSTM (or, where
    nn.LSTM accepts the call after all, the same results)."""
    config = draw(lstm_config())
    dtype = draw(st.sampled_from(DTYPES))
    call = draw(lstm_call(config, dtype, device))
    applicable = [m for m, (kinds, _) in LSTM_MISTAKES.items() if call.kind in kinds]
    if call.kind == "packed" and len(set(call.lengths)) == 1:
        applicable = [m for m in applicable if m not in UNCHECKED_ON_ONEDNN]
    mistakes = draw(st.lists(st.sampled_from(applicable), min_size=1, max_size=2, unique=True))
    mistakes.sort(key=list(LSTM_MISTAKES).index)
    kind = call.kind
    if call.hx == "none" and any(m.startswith("hx_") or (m == "device" and kind == "packed")
                                 for m in mistakes):
        give_lstm_hx(draw, call, config)
    for mistake in mistakes:
        call = apply_lstm_mistake(draw, call, config, mistake)
        event(f"mistake: {mistake} ({kind})")
    backend = any(LSTM_MISTAKES[m][1] or (kind == "packed" and m in PACKED_BACKEND)
                  or (device != "cpu" and m in CUDA_BACKEND) for m in mistakes)
    pair, mode, seed = pair_and_mode(draw, dict(config), dtype, make_lstm_pair, device)
    outcome = check_call(pair, call, mode=mode, seed=seed, backend_message=backend)
    event(outcome)
    if (outcome.startswith("same results") and call.c is not None
            and call.c.dtype == torch.float32 and call.x.dtype in (torch.bfloat16, torch.float16)):
        event("computed: float32 c0 with bfloat16/float16 input (oneDNN's mix)")


# -------------------------------------------------------------------- cell

# In the order they are applied: rank and structure last.
CELL_MISTAKES = ("input_size", "input_dtype", "hx_batch", "hx_width", "hx_dtype",
                 "device", "input_rank", "hx_rank", "hx_structure")


def cell_example(draw, device: str = "cpu") -> None:
    """LSTMCell, well-formed or with up to two mistakes; input_size and
    hidden_size from 0 (nn.LSTMCell accepts 0)."""
    I, H = draw(st.integers(0, 4)), draw(st.integers(0, 5))
    dtype = draw(st.sampled_from(DTYPES))
    batched = draw(st.booleans())
    B = draw(st.integers(0, 4))
    lead = [B] if batched else []
    x = draw(tensor_spec(lead + [I], dtype, requires_grad=draw(st.booleans()), device=device))
    hx = draw(st.sampled_from(["none", "tuple", "list"]))
    h = c = None
    if hx != "none":
        grad = draw(st.booleans())
        h = draw(tensor_spec(lead + [H], dtype, requires_grad=grad, device=device))
        c = draw(tensor_spec(lead + [H], dtype, requires_grad=grad, device=device))
    call = Call(kind="cell", x=x, h=h, c=c, hx=hx, device=device)
    mistakes = draw(st.lists(st.sampled_from(CELL_MISTAKES), max_size=2, unique=True))
    mistakes.sort(key=CELL_MISTAKES.index)
    for mistake in mistakes:
        call = apply_cell_mistake(draw, call, H, mistake)
        event(f"mistake: {mistake} (cell)")
    # nn.LSTMCell lets 1-D input take 2-D states and unsqueezes them to 3-D;
    # its kernel then checks only their first two sizes, and where those
    # fit (a state of shape [hidden_size, n]) it runs on the 3-D state
    # out of bounds: a segfault, or garbage results (torch 2.13).
    assume(not (len(call.x.shape) == 1 and call.hx in ("tuple", "list", "three") and any(
        len(s.shape) == 2 and s.shape[0] == H for s in (call.h, call.c))))
    # torch.nn's cell multiplies before it checks dtypes: its dtype messages
    # come from addmm or mm (tests/test_errors.py, CELL_BACKEND_CASES).
    # So do its device mismatches (TensorIterator's "expected device").
    backend = any(m in ("input_dtype", "hx_dtype", "device") for m in mistakes)
    pair, mode, seed = pair_and_mode(
        draw, dict(input_size=I, hidden_size=H, bias=draw(st.booleans())), dtype,
        make_cell_pair, device)
    event(check_call(pair, call, mode=mode, seed=seed, backend_message=backend))


def apply_cell_mistake(draw, call: Call, hidden: int, mistake: str) -> Call:
    x = call.x
    if call.hx == "none" and mistake.startswith("hx_"):
        call.hx = "tuple"
        lead = list(x.shape[:-1])
        call.h = draw(tensor_spec(lead + [hidden], x.dtype, device=x.device))
        call.c = draw(tensor_spec(lead + [hidden], x.dtype, device=x.device))
    if mistake == "input_rank":
        rank = draw(st.sampled_from([0, 3]))
        call.x = _respec(x, shape=() if rank == 0 else (2, 1) + tuple(x.shape[-1:]))
    elif mistake == "input_size":
        call.x = _respec(x, shape=tuple(x.shape[:-1]) + (_delta(draw, x.shape[-1]),))
    elif mistake == "input_dtype":
        call.x = _respec(x, dtype=draw(st.sampled_from(
            [d for d in OTHER_DTYPES if d != x.dtype])))
    elif mistake == "hx_structure":
        call.hx = draw(st.sampled_from(["single", "one", "three", "nones"]))
    elif mistake == "device":
        _move_off_device(draw, call, movable_input=True)
    else:
        for which in _which_states(draw):
            spec = getattr(call, which)
            shape = list(spec.shape)
            if mistake == "hx_rank":
                rank = draw(st.sampled_from([r for r in (0, 1, 2, 3) if r != len(shape)]))
                shape = _with_rank(shape, rank)
            elif mistake == "hx_batch":
                if not shape[:-1]:
                    shape = [1] + shape
                shape[0] = _delta(draw, shape[0])
            elif mistake == "hx_width":
                shape[-1] = _delta(draw, shape[-1])
            elif mistake == "hx_dtype":
                setattr(call, which, _respec(spec, dtype=draw(st.sampled_from(
                    [d for d in OTHER_DTYPES if d != spec.dtype]))))
                continue
            setattr(call, which, _respec(spec, shape=tuple(shape)))
    return call


