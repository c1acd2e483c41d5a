"""(c) Stacked bidirectional LSTM forecasting a real series: GOOG daily volatility.

Data: matplotlib's bundled sample `goog.npz` (Google daily prices, 2004-08-19
to 2008-10-14, 1047 trading days, from Yahoo Finance), read offline through
`matplotlib.cbook.get_sample_data`. From the past `--window` days of
(log return, log high/low range, log volume change) the model forecasts the
next day's log high/low range, a standard volatility proxy. A 2-layer
bidirectional LSTM reads the window; both directions' final states of the top
layer go to a Linear head. The split is chronological (last 20% is test), and
the test RMSE is compared with persistence (tomorrow's range = today's).

    python examples/forecast_bidirectional.py --impl fused
"""
import numpy as np
import torch
from matplotlib import cbook
from torch import nn

from common import (lstm_classes, parse_args, print_times, seed_everything,
                    shuffled_batches, train_epochs)


def load_goog_features():
    """Per-day features (days, 3) and the target series (days,), both float32."""
    prices = cbook.get_sample_data("goog.npz")["price_data"]
    log_return = np.diff(np.log(prices["adj_close"]))
    log_range = np.log(prices["high"] / prices["low"])[1:]
    log_volume_change = np.diff(np.log(prices["volume"].astype(np.float64)))
    features = np.stack([log_return, log_range, log_volume_change], axis=1)
    return features.astype(np.float32), log_range.astype(np.float32)


def make_windows(features, target, window, limit):
    """x[i] = features[i:i+window], y[i] = target[i+window], split chronologically.

    Features are standardised with the training part's statistics only, so no
    information from the test period leaks into training."""
    n = len(features) - window
    if limit is not None:
        n = min(n, limit)
    split = int(n * 0.8)
    mean = features[:split + window].mean(0)
    std = features[:split + window].std(0)
    scaled = (features - mean) / std
    x = np.stack([scaled[i:i + window] for i in range(n)])
    y = target[window:window + n]
    y_mean, y_std = y[:split].mean(), y[:split].std()
    to_tensor = torch.from_numpy
    return (to_tensor(x[:split]), to_tensor((y[:split] - y_mean) / y_std),
            to_tensor(x[split:]), to_tensor(y[split:]), float(y_mean), float(y_std),
            to_tensor(target[window - 1:window - 1 + n][split:]))


class BiForecaster(nn.Module):
    def __init__(self, lstm_cls, features, hidden, layers=2):
        super().__init__()
        # No inter-layer dropout: it would draw random numbers, and the point of
        # the --impl comparison is that nothing but the LSTM differs.
        self.lstm = lstm_cls(features, hidden, num_layers=layers,
                             bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * hidden, 1)

    def forward(self, x):
        _, (h_n, _) = self.lstm(x)
        # h_n[-2]: top layer forward (ends at the last day); h_n[-1]: top layer
        # backward (ends at the first day). Both have read the whole window.
        return self.head(torch.cat([h_n[-2], h_n[-1]], dim=1)).squeeze(1)


def add_flags(parser):
    parser.add_argument("--window", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)


def main(argv=None):
    args = parse_args(argv, __doc__.splitlines()[0], epochs=20, add_extra=add_flags)
    lstm_cls, _ = lstm_classes(args.impl)
    seed_everything(args.seed)
    features, target = load_goog_features()
    x_train, y_train, x_test, y_test, y_mean, y_std, today = make_windows(
        features, target, args.window, args.limit)
    x_train, y_train, x_test = (t.to(args.device) for t in (x_train, y_train, x_test))
    model = BiForecaster(lstm_cls, features.shape[1], args.hidden).to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.MSELoss()
    order = torch.Generator().manual_seed(args.seed)
    print(f"goog.npz: {len(x_train)} train, {len(x_test)} test windows of "
          f"{args.window} days x {features.shape[1]} features; "
          f"{args.impl} 2-layer bidirectional LSTM on {args.device}")

    def run_epoch(_):
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
    with torch.no_grad():
        forecast = model(x_test).cpu() * y_std + y_mean
    rmse = (forecast - y_test).pow(2).mean().sqrt().item()
    persistence_rmse = (today - y_test).pow(2).mean().sqrt().item()
    print(f"test RMSE of next-day log range: LSTM {rmse:.5f}, "
          f"persistence {persistence_rmse:.5f}")
    return {"losses": losses, "times": times, "rmse": rmse,
            "persistence_rmse": persistence_rmse, "forecast": forecast}


if __name__ == "__main__":
    main()
