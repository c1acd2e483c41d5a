"""(a) Shapes tour: Embedding -> LSTM(batch_first=True) -> loss on the last step.

Prints the shape of output, h_n and c_n; checks that h_n is the last step of
output; shows explicit zero h0/c0 and a stacked bidirectional LSTM; then trains
the toy classifier for a few epochs.

    python examples/shapes_tour.py --impl fused
"""
import torch
from torch import nn

from common import (lstm_classes, parse_args, print_times, seed_everything,
                    shuffled_batches, train_epochs)

VOCAB, EMBED, HIDDEN, CLASSES = 50, 16, 32, 3
BATCH, STEPS = 4, 7


class LastStepClassifier(nn.Module):
    def __init__(self, lstm_cls):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMBED)
        self.lstm = lstm_cls(EMBED, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, tokens, state=None):
        output, (h_n, c_n) = self.lstm(self.embed(tokens), state)
        return self.head(output[:, -1]), output, h_n, c_n


def show(shapes, name, tensor):
    shapes[name] = tuple(tensor.shape)
    print(f"  {name:<32} {shapes[name]}")


def tour(lstm_cls, device):
    """Print every shape on the way; return them by name."""
    shapes = {}
    model = LastStepClassifier(lstm_cls).to(device)
    tokens = torch.randint(VOCAB, (BATCH, STEPS), device=device)
    logits, output, h_n, c_n = model(tokens)
    print(f"single layer, batch_first=True, batch {BATCH}, {STEPS} steps, hidden {HIDDEN}:")
    show(shapes, "tokens (batch, steps)", tokens)
    show(shapes, "embedded (batch, steps, embed)", model.embed(tokens))
    show(shapes, "output (batch, steps, hidden)", output)
    show(shapes, "h_n (layers, batch, hidden)", h_n)
    show(shapes, "c_n (layers, batch, hidden)", c_n)
    show(shapes, "output[:, -1] (batch, hidden)", output[:, -1])
    show(shapes, "logits (batch, classes)", logits)
    # batch_first changes the input and output layout only; h_n/c_n stay layer-first.
    torch.testing.assert_close(h_n[-1], output[:, -1])
    print("  h_n[-1] == output[:, -1]: yes")

    # Passing zeros explicitly is what the default (no state) means.
    zeros = torch.zeros(1, BATCH, HIDDEN, device=device)
    _, output_zero, h_zero, c_zero = model(tokens, (zeros, zeros.clone()))
    torch.testing.assert_close(output_zero, output)
    torch.testing.assert_close((h_zero, c_zero), (h_n, c_n))
    print("  explicit zero (h0, c0) gives the same output, h_n, c_n: yes")

    layers = 2
    stacked = lstm_cls(EMBED, HIDDEN, num_layers=layers, bidirectional=True,
                       batch_first=True).to(device)
    output, (h_n, c_n) = stacked(model.embed(tokens))
    print(f"stacked bidirectional, {layers} layers:")
    show(shapes, "output (batch, steps, 2*hidden)", output)
    show(shapes, "h_n (2*layers, batch, hidden)", h_n)
    show(shapes, "c_n (2*layers, batch, hidden)", c_n)
    # h_n is ordered (layer 0 fwd, layer 0 bwd, layer 1 fwd, layer 1 bwd). The top
    # backward direction finishes at step 0, so its final state sits at output[:, 0].
    torch.testing.assert_close(h_n[-2], output[:, -1, :HIDDEN])
    torch.testing.assert_close(h_n[-1], output[:, 0, HIDDEN:])
    print("  h_n[-2] == output[:, -1, :hidden] and h_n[-1] == output[:, 0, hidden:]: yes")
    return shapes


def main(argv=None):
    args = parse_args(argv, __doc__.splitlines()[0], epochs=6)
    lstm_cls, _ = lstm_classes(args.impl)
    seed_everything(args.seed)
    shapes = tour(lstm_cls, args.device)

    # A toy task that needs memory: the label is the first token's class, read at the last step.
    seed_everything(args.seed)
    n = args.limit or 2048
    tokens = torch.randint(VOCAB, (n, STEPS), device=args.device)
    labels = tokens[:, 0] % CLASSES
    model = LastStepClassifier(lstm_cls).to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(args.seed)

    def run_epoch(_):
        total = 0.0
        for idx in shuffled_batches(n, 64, order):
            idx = idx.to(args.device)
            loss = loss_fn(model(tokens[idx])[0], labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        return total / n

    print(f"training on the toy task ({n} sequences, --impl {args.impl}):")
    losses, times = train_epochs(args.epochs, run_epoch, args.device)
    print_times(times)
    with torch.no_grad():
        accuracy = (model(tokens)[0].argmax(1) == labels).float().mean().item()
    print(f"train accuracy {accuracy:.4f}")
    return {"losses": losses, "times": times, "accuracy": accuracy, "shapes": shapes}


if __name__ == "__main__":
    main()
