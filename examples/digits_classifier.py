"""(b) Sequence classification: scikit-learn's digits read row by row.

Each 8x8 image is a sequence of 8 steps with 8 features; an LSTM reads it and
a Linear head classifies its last step. CrossEntropy + Adam, fixed seed, so
--impl torch and --impl fused give the same loss curve and test accuracy.

    python examples/digits_classifier.py --impl fused
"""
import torch
from torch import nn

from common import (load_digits_rows, lstm_classes, parse_args, print_times,
                    seed_everything, shuffled_batches, train_epochs)


class RowReader(nn.Module):
    def __init__(self, lstm_cls, hidden, classes=10, features=8):
        super().__init__()
        self.lstm = lstm_cls(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, images):
        output, _ = self.lstm(images)
        return self.head(output[:, -1])


def add_flags(parser):
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-3)


def main(argv=None):
    args = parse_args(argv, __doc__.splitlines()[0], epochs=15, add_extra=add_flags)
    lstm_cls, _ = lstm_classes(args.impl)
    seed_everything(args.seed)
    x_train, y_train, x_test, y_test = (
        t.to(args.device) for t in load_digits_rows(args.limit, args.seed))
    model = RowReader(lstm_cls, args.hidden).to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(args.seed)
    print(f"digits: {len(x_train)} train, {len(x_test)} test sequences of shape "
          f"{tuple(x_train.shape[1:])}; {args.impl} LSTM on {args.device}")

    def run_epoch(_):
        model.train()
        total = 0.0
        for idx in shuffled_batches(len(x_train), args.batch_size, order):
            idx = idx.to(args.device)
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        return total / len(x_train)

    losses, times = train_epochs(args.epochs, run_epoch, args.device)
    print_times(times)
    model.eval()
    with torch.no_grad():
        predictions = model(x_test).argmax(1)
    accuracy = (predictions == y_test).float().mean().item()
    print(f"test accuracy {accuracy:.4f}")
    return {"losses": losses, "times": times, "accuracy": accuracy,
            "predictions": predictions.cpu()}


if __name__ == "__main__":
    main()
