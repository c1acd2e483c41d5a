"""Helpers shared by the examples: flags, choice of LSTM, seeding, timed epochs, data."""
import argparse
import random
import time

import numpy as np
import torch
from torch import nn


def parse_args(argv, description, epochs, add_extra=None):
    """The flags every example takes; `add_extra(parser)` adds a script's own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--impl", choices=["torch", "fused"], default="fused",
                        help="torch: nn.LSTM / nn.LSTMCell; fused: fusedlstm's")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--limit", type=int, default=None,
                        help="use at most this many samples (quick runs, tests)")
    if add_extra is not None:
        add_extra(parser)
    return parser.parse_args(argv)


def lstm_classes(impl):
    """(LSTM, LSTMCell) for --impl; the examples use nothing else from the library."""
    if impl == "torch":
        return nn.LSTM, nn.LSTMCell
    import fusedlstm  # imported late so --impl torch runs without the extension built
    return fusedlstm.LSTM, fusedlstm.LSTMCell


def seed_everything(seed):
    """Same seed, same initial weights and batch order, whichever --impl is chosen."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def shuffled_batches(n, batch_size, generator):
    """Index batches drawn from their own generator, so the model's RNG use
    (initialisation, dropout) cannot change the order of the data."""
    order = torch.randperm(n, generator=generator)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def _sync(device):
    # CUDA kernels run asynchronously; without this an epoch's time would be the launch time.
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def train_epochs(epochs, run_epoch, device):
    """Call run_epoch(epoch) -> mean loss `epochs` times, printing loss and wall time.

    Returns (losses, seconds per epoch)."""
    losses, times = [], []
    for epoch in range(epochs):
        _sync(device)
        start = time.perf_counter()
        loss = run_epoch(epoch)
        _sync(device)
        times.append(time.perf_counter() - start)
        losses.append(float(loss))
        print(f"epoch {epoch + 1:3d}  loss {loss:.6f}  time {times[-1] * 1e3:8.1f} ms")
    return losses, times


def print_times(times):
    # The first epoch pays for warm-up (allocations, kernel selection), so report it apart.
    rest = times[1:] or times
    print(f"time per epoch: first {times[0] * 1e3:.1f} ms, "
          f"then mean {sum(rest) / len(rest) * 1e3:.1f} ms")


def load_digits_rows(limit=None, seed=0):
    """scikit-learn's bundled 8x8 digits as sequences: 8 steps (rows) of 8 features.

    Returns x_train, y_train, x_test, y_test as tensors, split 75/25, stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0  # pixel values are 0..16
    labels = digits.target
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, random_state=seed, stratify=labels)
    return (torch.from_numpy(x_train), torch.from_numpy(y_train).long(),
            torch.from_numpy(x_test), torch.from_numpy(y_test).long())
