"""(d) Retrofitting: put fusedlstm into an existing nn.LSTM model and its checkpoint.

A digits classifier written with plain nn.LSTM and nn.LSTMCell is trained
briefly and its state_dict saved with torch.save. The same model is then built
again, `fusedlstm.replace_lstm(model)` swaps its LSTM modules in place, the saved
checkpoint is loaded unchanged, and its outputs equal the original's. Training
then goes on for a few epochs. With --impl torch the swap is skipped, which
gives the baseline to compare against.

    python examples/retrofit.py --impl fused
"""
import os
import tempfile

import torch
from torch import nn

from common import (load_digits_rows, parse_args, print_times, seed_everything,
                    shuffled_batches, train_epochs)


class DigitsWithRefinement(nn.Module):
    """Existing user code: written against torch.nn only."""

    def __init__(self, hidden=32, refine_steps=3):
        super().__init__()
        self.encoder = nn.LSTM(8, hidden, batch_first=True)
        # A few more recurrent steps over the encoded summary, started from the
        # encoder's final state: the usual place people reach for an LSTMCell.
        self.refine = nn.LSTMCell(hidden, hidden)
        self.head = nn.Linear(hidden, 10)
        self.refine_steps = refine_steps

    def forward(self, images):
        output, (h_n, c_n) = self.encoder(images)
        summary, h, c = output.mean(1), h_n[-1], c_n[-1]
        for _ in range(self.refine_steps):
            h, c = self.refine(summary, (h, c))
        return self.head(h)


def add_flags(parser):
    parser.add_argument("--more-epochs", type=int, default=3,
                        help="epochs trained after the checkpoint is loaded")


def train(model, x, y, epochs, seed, device):
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(seed)

    def run_epoch(_):
        total = 0.0
        for idx in shuffled_batches(len(x), 64, order):
            idx = idx.to(device)
            loss = loss_fn(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        return total / len(x)

    losses, times = train_epochs(epochs, run_epoch, device)
    print_times(times)
    return losses, times


def main(argv=None):
    args = parse_args(argv, __doc__.splitlines()[0], epochs=3, add_extra=add_flags)
    seed_everything(args.seed)
    x_train, y_train, x_test, y_test = (
        t.to(args.device) for t in load_digits_rows(args.limit, args.seed))

    print("1. train the original nn.LSTM model")
    original = DigitsWithRefinement().to(args.device)
    train(original, x_train, y_train, args.epochs, args.seed, args.device)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = os.path.join(tmp, "digits_lstm.pt")
        torch.save(original.state_dict(), checkpoint)

        print("2. rebuild it, swap the LSTMs, load the nn.LSTM checkpoint")
        torch.manual_seed(args.seed + 1)  # fresh weights: the checkpoint must supply them all
        model = DigitsWithRefinement().to(args.device)
        if args.impl == "fused":
            import fusedlstm
            model = fusedlstm.replace_lstm(model)
        model.load_state_dict(torch.load(checkpoint, map_location=args.device))
    print(f"   encoder: {type(model.encoder).__module__}.{type(model.encoder).__name__}, "
          f"refine: {type(model.refine).__module__}.{type(model.refine).__name__}")

    with torch.no_grad():
        expected, actual = original(x_test), model(x_test)
    torch.testing.assert_close(actual, expected)
    max_diff = (actual - expected).abs().max().item()
    print(f"   outputs on {len(x_test)} test digits equal the original's "
          f"(max |difference| {max_diff:.2e})")

    print(f"3. keep training the retrofitted model for {args.more_epochs} epochs")
    losses, times = train(model, x_train, y_train, args.more_epochs, args.seed, args.device)
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    print(f"test accuracy {accuracy:.4f}")
    return {"expected": expected.cpu(), "actual": actual.cpu(), "max_diff": max_diff,
            "losses": losses, "times": times, "accuracy": accuracy}


if __name__ == "__main__":
    main()
