"""``fusedlstm.LSTM`` and ``fusedlstm.LSTMCell``: drop-ins for torch.nn's.

``LSTM`` derives from ``nn.RNNBase`` rather than ``nn.LSTM``. That keeps
``nn.LSTM``'s constructor, validation, parameters, initialisation,
``state_dict``, ``repr`` and ``flatten_parameters`` (they all live in
``RNNBase``), while ``isinstance(m, nn.LSTM)`` is False: TorchDynamo refuses
to trace any ``nn.LSTM`` instance, so a subclass of it could never compile
without a graph break. ``isinstance(m, nn.RNNBase)`` is True.

``LSTMCell`` derives from ``nn.LSTMCell`` (Dynamo traces cells), so
``isinstance(m, nn.LSTMCell)`` is True.
"""
from __future__ import annotations

import torch
from torch import Tensor, _VF, nn
from torch.nn.utils.rnn import PackedSequence

from . import _autocast, functional, ops
from ._tracing import (
    fx_leaf_call, is_fx_symbolic_tracing, onnx_exporting, shapes_fixed_by_module,
    tracing_or_compiling,
)
from . import _state_dtypes
from ._dtype_names import aten_name


class LSTM(nn.RNNBase):
    __doc__ = (
        "Drop-in for :class:`torch.nn.LSTM`, on fusedlstm's fused kernels.\n\n"
        "Takes the same arguments, inputs and state_dict and returns the same "
        "outputs; see torch.nn.LSTM for their meaning.\n"
    )

    def __init__(self, *args, **kwargs):
        super().__init__("LSTM", *args, **kwargs)

    def __prepare_scriptable__(self):
        _refuse_torchscript(self)

    # nn.LSTM's own shape checks, so that errors read exactly the same.
    get_expected_cell_size = nn.LSTM.get_expected_cell_size
    check_forward_args = nn.LSTM.check_forward_args
    permute_hidden = nn.LSTM.permute_hidden

    def _check_forward_args(self, input, hx, batch_sizes, batch) -> None:
        # nn.LSTM.check_forward_args, with the batch size passed in rather
        # than read again from batch_sizes (see forward).
        self.check_input(input, batch_sizes)
        if batch_sizes is not None and torch.compiler.is_compiling():
            # Tell the tracer how the given state's batch relates to the
            # data-dependent batch; the checks below then trace statically.
            for value in hx[:2]:
                if isinstance(value, Tensor) and value.dim() == 3:
                    torch._check(value.size(1) == batch)
        layers = self.num_layers * (2 if self.bidirectional else 1)
        state = self.proj_size if self.proj_size > 0 else self.hidden_size
        self.check_hidden_size(
            hx[0], (layers, batch, state), "Expected hidden[0] size {}, got {}"
        )
        self.check_hidden_size(
            hx[1], (layers, batch, self.hidden_size), "Expected hidden[1] size {}, got {}"
        )

    def _check_hx_like_kernel(self, input, hx, weights, batch_sizes) -> None:
        """What torch.lstm makes of hx before it computes: its argument
        parser takes only a tuple or list of tensors, then it wants two."""
        if not (isinstance(hx, (tuple, list)) and all(isinstance(t, Tensor) for t in hx)):
            # torch's own parser words the TypeError (it lists the overloads
            # and the argument types received); it raises before computing.
            args = (hx, weights, self.bias, self.num_layers, float(self.dropout),
                    self.training, self.bidirectional)
            if batch_sizes is not None:
                _VF.lstm(input, batch_sizes, *args)
            else:
                _VF.lstm(input, *args, self.batch_first)
            raise TypeError(f"lstm(): hx must be a tuple of Tensors, not {type(hx).__name__}")
        if len(hx) != 2:
            raise RuntimeError("lstm expects two hidden states")

    def _refreshed_flat_weights(self) -> list:
        """The weights to compute with, refreshed as nn.LSTM's forward
        refreshes them first thing (_update_flat_weights). A weight computed
        on access (parametrize, torch.func.functional_call) is then read as
        many times as nn.LSTM reads it, and the last value read is used: a
        spectral norm's power iteration runs on every read.

        Those reads cost about 0.5 us a weight (Module.__getattr__). Where
        every weight is a registered Parameter of this exact class, a read has
        no side effect and returns the registered Parameter, so comparing
        the registry with the weak references is enough (NOTES change 41)."""
        if type(self) is LSTM:
            params = self._parameters
            for ref, name in zip(self._flat_weight_refs, self._flat_weights_names):
                if ref is None or ref() is not params.get(name):
                    break
            else:
                return list(self._flat_weights)
        self._update_flat_weights()
        return list(self._flat_weights)

    def _zero_state(self, input: Tensor, batch: int) -> tuple[Tensor, Tensor]:
        layers = self.num_layers * (2 if self.bidirectional else 1)
        state = self.proj_size if self.proj_size > 0 else self.hidden_size
        kwargs = dict(dtype=input.dtype, device=input.device)
        return (
            torch.zeros(layers, batch, state, **kwargs),
            torch.zeros(layers, batch, self.hidden_size, **kwargs),
        )

    def forward(self, input, hx=None):
        leaf = fx_leaf_call(self, input, hx)
        if leaf is not None:
            return leaf
        if onnx_exporting():
            return nn.LSTM.forward(self, input, hx)
        weights = self._refreshed_flat_weights()
        packed = isinstance(input, PackedSequence)
        batch_sizes = sorted_indices = unsorted_indices = None
        is_batched = True
        if packed:
            input, batch_sizes, sorted_indices, unsorted_indices = input
            # Read once: under torch.compile it is data-dependent, and every
            # read would be a new, unrelated symbol.
            batch = batch_sizes[0].item()
            if hx is None:
                hx = self._zero_state(input, batch)
            else:
                hx = self.permute_hidden(hx, sorted_indices)
        else:
            if input.dim() not in (2, 3):
                raise ValueError(
                    f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead"
                )
            is_batched = input.dim() == 3
            if not is_batched:
                input = input.unsqueeze(0 if self.batch_first else 1)
            batch = input.size(0 if self.batch_first else 1)
            if hx is None:
                hx = self._zero_state(input, batch)
            else:
                want = 3 if is_batched else 2
                if hx[0].dim() != want or hx[1].dim() != want:
                    kind = "batched 3-D" if is_batched else "unbatched 2-D"
                    raise RuntimeError(
                        f"For {kind} input, hx and cx should also be {want}-D but "
                        f"got ({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
                    )
                if not is_batched:
                    hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        lower = _autocast.lower_dtype(input, cell=False)
        if packed:
            # nn.LSTM checks nothing of packed input itself: what its kernel
            # meets first, in order, is hx's structure, the third size of
            # each state, then (in the input projection) a dtype mismatch.
            self._check_hx_like_kernel(input, hx, weights, batch_sizes)
            hx[0].size(2), hx[1].size(2)  # raise the IndexError torch raises
            if lower is None:
                _check_matmul_dtypes(input, weights[0])
            else:
                _autocast.check_input(input, weights[0], lower)
        self._check_forward_args(input, hx, batch_sizes, batch)
        if not packed:
            self._check_hx_like_kernel(input, hx, weights, batch_sizes)
            if input.device.type != "cuda":
                _check_devices_like_native_lstm(input, hx, weights)
        # Under torch.jit.trace this comparison would be frozen into the
        # trace (with a TracerWarning); the operator raises the same error.
        if (not packed and not torch.jit.is_tracing()
                and input.size(1 if self.batch_first else 0) == 0):
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        plan = None
        if lower is None:
            if (input.device.type == "cpu" and weights[0].dtype == input.dtype
                    and (hx[0].dtype != input.dtype or hx[1].dtype != input.dtype)
                    and _state_dtypes.nn_runs_native_loop(input, batch_sizes,
                                                          self.proj_size > 0)):
                hx = _state_dtypes.native_loop_states(
                    input, hx, weights[1], proj=self.proj_size > 0, bias=self.bias,
                    single_step=functional._one_step_of_one_layer(
                        input, batch_sizes, self.num_layers, self.batch_first))
            elif not _state_dtypes.onednn_takes_float32_c0(input, hx, batch_sizes,
                                                           self.proj_size > 0):
                _check_state_dtypes(input, hx)
        else:
            plan = _autocast.lstm_plan(
                lower, input, hx, weights[0], weights[1], proj=self.proj_size > 0,
                single_step=functional._one_step_of_one_layer(
                    input, batch_sizes, self.num_layers, self.batch_first),
            )
            input = input.to(plan.compute)
            hx = (hx[0].to(plan.compute), hx[1].to(plan.compute))
            weights = [w.to(plan.compute) for w in weights]

        output, h_n, c_n = functional.lstm(
            input,
            hx,
            weights,
            num_layers=self.num_layers,
            bias=self.bias,
            bidirectional=self.bidirectional,
            proj_size=self.proj_size,
            dropout=self.dropout,
            training=self.training,
            batch_first=self.batch_first,
            batch_sizes=batch_sizes,
        )
        if plan is not None:
            output, h_n, c_n = output.to(plan.output), h_n.to(plan.output), c_n.to(plan.state)
        if packed:
            output = PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices)
            return output, self.permute_hidden((h_n, c_n), unsorted_indices)
        if not is_batched:
            output = output.squeeze(0 if self.batch_first else 1)
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return output, (h_n, c_n)


class LSTMCell(nn.LSTMCell):
    __doc__ = (
        "Drop-in for :class:`torch.nn.LSTMCell`, on fusedlstm's fused kernels.\n\n"
        "Takes the same arguments, inputs and state_dict and returns the same "
        "outputs; see torch.nn.LSTMCell for their meaning.\n"
    )

    def __prepare_scriptable__(self):
        _refuse_torchscript(self)

    def forward(self, input: Tensor, hx=None):
        direct = self._direct_step(input, hx)
        if direct is not None:
            return direct
        leaf = fx_leaf_call(self, input, hx)
        if leaf is not None:
            return leaf
        if onnx_exporting():
            return super().forward(input, hx)
        # nn.LSTMCell.forward's own steps, in its order, so that odd hx
        # (a bare tensor, a 3-tuple) meets the same checks and errors.
        if input.dim() not in (1, 2):
            raise ValueError(
                f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead"
            )
        if hx is not None:
            for index, value in enumerate(hx):
                if value.dim() not in (1, 2):
                    raise ValueError(
                        f"LSTMCell: Expected hx[{index}] to be 1D or 2D, got "
                        f"{value.dim()}D instead"
                    )
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
        if hx is None:
            zeros = input.new_zeros(input.size(0), self.hidden_size)
            hx = (zeros, zeros)
        elif not is_batched:
            hx = (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        # Then what torch.lstm_cell's argument parser and kernel check.
        if not isinstance(hx, (tuple, list)):
            raise TypeError(
                "lstm_cell(): argument 'hx' (position 2) must be tuple of Tensors, "
                f"not {type(hx).__name__}"
            )
        if len(hx) != 2:
            raise RuntimeError("lstm_cell expects two hidden states")
        with shapes_fixed_by_module():
            _check_cell_args(input, hx, self.input_size, self.hidden_size)
        weights = (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        lower = _autocast.lower_dtype(input, cell=True)
        plan = None
        if lower is None:
            # h must match; a c of another dtype is promoted, as by
            # nn.LSTMCell (functional.lstm_cell).
            _check_state_dtypes(input, hx[:1])
        else:
            plan = _autocast.cell_plan(lower, input, hx, self.weight_ih, self.weight_hh)
            input = input.to(plan.compute)
            hx = (hx[0].to(plan.compute), hx[1].to(plan.compute))
            weights = tuple(None if w is None else w.to(plan.compute) for w in weights)
        h, c = functional.lstm_cell(input, hx, *weights)
        if plan is not None:
            h, c = h.to(plan.output), c.to(plan.state)
        if not is_batched:
            h, c = h.squeeze(0), c.squeeze(0)
        return h, c

    def _direct_step(self, input: Tensor, hx):
        """The common call, straight to the operator; None where the call needs
        forward's general path below.

        A decoder calls a small cell thousands of times, and there the Python
        around the operator is most of a step: at H = 64, batch 1 the general
        path's checks, three calls deep, cost about as much as the operator,
        and `self.weight_ih` (Module.__getattr__) a microsecond each. This
        path takes a batch with both states given as a tuple, all of the
        input's dtype and of the module's sizes, with no autocast, tracing or
        compiling, and the weights read from `_parameters`: the general path
        would pass every check and make the same operator call. Anything else
        (unbatched input, a list or None for hx, a mismatch to raise about, a
        subclass, including those that torch.nn.utils.parametrize makes, or a
        weight moved out of `_parameters` by weight_norm, pruning or a weight
        drop) takes the general path."""
        if (type(hx) is not tuple or len(hx) != 2 or type(self) is not LSTMCell
                or tracing_or_compiling() or is_fx_symbolic_tracing()
                or torch._C._is_any_autocast_enabled()):
            return None
        params = self._parameters
        try:
            w_ih, w_hh = params["weight_ih"], params["weight_hh"]
            b_ih, b_hh = params["bias_ih"], params["bias_hh"]
        except KeyError:
            return None
        h0, c0 = hx
        if not (
            input.dim() == 2 and h0.dim() == 2 and c0.dim() == 2
            and h0.dtype == input.dtype and c0.dtype == input.dtype
            and w_ih is not None and w_ih.shape[0] != 0
            and input.shape[1] == self.input_size
            and h0.shape == c0.shape == (input.shape[0], self.hidden_size)
        ):
            return None
        _, h, c = ops.lstm_layer(input.unsqueeze(0), h0, c0, w_ih, w_hh, b_ih, b_hh)
        return h, c


def _lstm_cell_checks_state_dims() -> bool:
    """Whether torch.lstm_cell checks that each state is 2-D before it
    compares sizes (torch 2.15 does: "Expected 2D hidden0 (batch x
    hidden_size), but got 1D tensor"; 2.11-2.14 compare the sizes alone, so
    a 1-D state fails on its batch size), asked of the kernel itself with a
    1-D h of 2 elements beside a batch of 1."""
    try:
        with torch.no_grad():
            torch.lstm_cell(torch.zeros(1, 1), (torch.zeros(2), torch.zeros(1, 1)),
                            torch.zeros(4, 1), torch.zeros(4, 1))
    # Whatever a later torch raises here, the import must not fail.
    except Exception as error:
        return str(error).startswith("Expected 2D hidden0")
    return False


# Read once: a property of this torch.
_CELL_CHECKS_STATE_DIMS = _lstm_cell_checks_state_dims()


def _check_cell_args(input: Tensor, hx, input_size: int, hidden_size: int) -> None:
    # The checks that torch.nn.LSTMCell's kernel makes, in its order and with
    # its messages: the input, then each state in turn.
    if input.size(1) != input_size:
        raise RuntimeError(
            f"input has inconsistent input_size: got {input.size(1)} expected {input_size}"
        )
    for index, value in enumerate(hx):
        if _CELL_CHECKS_STATE_DIMS and value.dim() != 2:
            raise RuntimeError(
                f"Expected 2D hidden{index} (batch x hidden_size), but got {value.dim()}D tensor"
            )
        if input.size(0) != value.size(0):
            raise RuntimeError(
                f"Input batch size {input.size(0)} doesn't match hidden{index} "
                f"batch size {value.size(0)}"
            )
        if value.size(1) != hidden_size:
            raise RuntimeError(
                f"hidden{index} has inconsistent hidden_size: got {value.size(1)}, "
                f"expected {hidden_size}"
            )


def _check_devices_like_native_lstm(input: Tensor, hx, weights) -> None:
    # torch.lstm's check before its native loop (check_attributes in
    # ATen's RNN.cpp), which every padded call whose input is not on CUDA
    # reaches: states first, then parameters. (On CUDA, cuDNN's path meets a
    # mismatch first, with its own message.) On every padded CPU call: each
    # .device builds a torch.device, so the input's is read once.
    device = input.device
    for kind, tensors in (("hidden", hx), ("parameter", weights)):
        for t in tensors:
            if t is not None and t.device != device:
                raise RuntimeError(
                    f"Input and {kind} tensors are not at the same device, found input "
                    f"tensor at {device} and {kind} tensor at {t.device}"
                )


def _check_state_dtypes(input: Tensor, hx) -> None:
    for value in hx:
        if value.dtype != input.dtype:
            raise RuntimeError(
                f"expected scalar type {aten_name(input.dtype)} but found "
                f"{aten_name(value.dtype)}"
            )


def _check_matmul_dtypes(input: Tensor, weight: Tensor) -> None:
    # The message of torch's input projection (a matmul) on mismatched dtypes.
    if input.dtype != weight.dtype:
        raise RuntimeError(
            "mat1 and mat2 must have the same dtype, but got "
            f"{aten_name(input.dtype)} and {aten_name(weight.dtype)}"
        )


def _refuse_torchscript(module: nn.Module) -> None:
    # TorchScript (deprecated in PyTorch) cannot compile the Python around
    # the operators; without this, scripting fails with messages that do not
    # name the cause.
    name = type(module).__name__
    raise NotImplementedError(
        f"fusedlstm.{name} does not support torch.jit.script. Use "
        "torch.compile or torch.export (both supported) or torch.jit.trace; "
        f"fusedlstm.restore_lstm(model) swaps torch.nn.{name} back in (same "
        "parameters, torch's kernels) for code that needs torch's own module."
    )
