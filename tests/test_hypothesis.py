"""A randomised sweep against torch.nn.LSTM, derandomized (reproducible in CI).

hypothesis draws a configuration, a dtype and an input (padded, packed or
unbatched, with or without hx); each example is checked like the grid's.
"""
from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import make_lstm_pair, parity_check, state_shapes


@st.composite
def lstm_cases(draw):
    hidden = draw(st.integers(1, 24))
    config = dict(
        input_size=draw(st.integers(1, 9)),
        hidden_size=hidden,
        num_layers=draw(st.integers(1, 3)),
        bias=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bidirectional=draw(st.booleans()),
        proj_size=draw(st.integers(0, hidden - 1)) if hidden > 1 else 0,
    )
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.bfloat16]))
    training = draw(st.booleans())
    dropout = draw(st.sampled_from([0.0, 0.2])) if config["num_layers"] > 1 else 0.0
    kind = draw(st.sampled_from(["padded", "packed", "unbatched"]))
    T = draw(st.integers(1, 8))
    B = draw(st.integers(1, 5))
    lengths = None
    if kind == "packed":
        lengths = draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
        lengths[draw(st.integers(0, B - 1))] = T
    with_hx = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return config, dtype, training, dropout, kind, T, B, lengths, with_hx, seed


@settings(max_examples=100, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(lstm_cases())
def test_random_configurations_match_nn_lstm(case):
    config, dtype, training, dropout, kind, T, B, lengths, with_hx, seed = case
    input_size = config.pop("input_size")
    hidden = config.pop("hidden_size")
    ref, ours = make_lstm_pair(input_size, hidden, dtype=dtype, dropout=dropout,
                               seed=seed, **config)
    ref.train(training)
    ours.train(training)
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    if kind == "unbatched":
        x = randn(T, input_size)
    elif config["batch_first"]:
        x = randn(B, T, input_size)
    else:
        x = randn(T, B, input_size)
    hx = None
    if with_hx:
        h_shape, c_shape = state_shapes(ours, None if kind == "unbatched" else B)
        hx = (randn(*h_shape), randn(*c_shape))
    parity_check(ref, ours, x, hx,
                 lengths=None if lengths is None else torch.tensor(lengths),
                 enforce_sorted=False, seed=seed)
