#!/usr/bin/env python3
"""PyTorch reference timings for the project's networks, measured the way `train bench` measures.

    python3 scripts/torch_reference.py configs/fmp_mnist.toml [--steps 10 --warmup 2
        --device cpu|cuda --threads N --json FILE]
    train bench configs/fmp_mnist.toml --backends flex --include FILE --chart both.svg

Reads the same TOML config, builds the same architecture in PyTorch (LeNet modern, LeNet-5
classic, Graham's FMP net), and times training steps (forward, cross-entropy, backward, SGD step,
device synchronised) at the config's batch size. Prints one line like `train bench` and writes
the same JSON fields, so the two can be put side by side. Inputs are random tensors of the
model's input shape (the step's cost does not depend on the pixel values). The FLOP count comes
from forward hooks on the convolution and linear layers, independently of the Rust count.
"""

import argparse
import json
import math
import statistics
import time
import tomllib

import torch
from torch import nn

DATASETS = {  # training images and image shape (channels, side)
    "mnist": (60_000, 1, 28),
    "fashion_mnist": (60_000, 1, 28),
    "mnist_sample": (2_000, 1, 28),
    "cifar10": (50_000, 3, 32),
}

C3_TABLE = [
    [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5], [0, 4, 5], [0, 1, 5],
    [0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 5], [0, 3, 4, 5], [0, 1, 4, 5], [0, 1, 2, 5],
    [0, 1, 3, 4], [1, 2, 4, 5], [0, 2, 3, 5], [0, 1, 2, 3, 4, 5],
]


def fmp_sizes(alpha, layers):
    """Spatial sizes from input to output, walked back from 1x1 (as `fmp_sizes` in Rust)."""
    sizes, size = [1, 2], 2
    for _ in range(layers):
        pooled_from = math.floor(alpha * size + 0.5)
        if pooled_from == size:
            pooled_from += 1
        sizes.append(pooled_from)
        size = pooled_from + 1
        sizes.append(size)
    return sizes[::-1]


class LeNet5Modern(nn.Module):
    input_size = 28

    def __init__(self, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5, padding=2)
        self.conv2 = nn.Conv2d(20, 50, 5, padding=2)
        self.fc1 = nn.Linear(50 * 7 * 7, 500)
        self.fc2 = nn.Linear(500, classes)

    def forward(self, x):
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


class Squash(nn.Module):
    def forward(self, x):
        return 1.7159 * torch.tanh(2.0 * x / 3.0)


class Subsampling(nn.Module):
    """Sum of each 2x2 block times a trainable per-map coefficient, plus a per-map bias."""

    def __init__(self, maps):
        super().__init__()
        self.coefficient = nn.Parameter(torch.ones(maps))
        self.bias = nn.Parameter(torch.zeros(maps))

    def forward(self, x):
        s = nn.functional.avg_pool2d(x, 2) * 4.0
        return s * self.coefficient.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class PartialConv(nn.Module):
    """C3: one 5x5 kernel per link of the table (60), the rest zero."""

    def __init__(self):
        super().__init__()
        links = [(o, i) for o, row in enumerate(C3_TABLE) for i in row]
        self.kernels = nn.Parameter(torch.randn(len(links), 25) * 0.1)
        self.bias = nn.Parameter(torch.zeros(16))
        rows = torch.full((16 * 6,), len(links), dtype=torch.long)
        for k, (o, i) in enumerate(links):
            rows[o * 6 + i] = k
        self.register_buffer("rows", rows)

    def forward(self, x):
        kernels = torch.cat([self.kernels, self.kernels.new_zeros(1, 25)])
        weight = kernels[self.rows].view(16, 6, 5, 5)
        return nn.functional.conv2d(x, weight, self.bias)


class LeNet5Classic(nn.Module):
    input_size = 32

    def __init__(self, classes):
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 5)
        self.s2 = Subsampling(6)
        self.c3 = PartialConv()
        self.s4 = Subsampling(16)
        self.c5 = nn.Conv2d(16, 120, 5)
        self.f6 = nn.Linear(120, 84)
        self.out = nn.Linear(84, classes)
        self.squash = Squash()

    def forward(self, x):
        x = self.squash(self.s2(self.squash(self.c1(x))))
        x = self.squash(self.s4(self.squash(self.c3(x))))
        x = self.squash(self.c5(x)).flatten(1)
        return self.out(self.squash(self.f6(x)))


class FmpNet(nn.Module):
    """Graham's net: blocks of (2x2 conv k*n, BN, leaky ReLU, dropout, FMP), 2x2 conv, 1x1 conv.

    PyTorch's FractionalMaxPool2d is the pseudorandom overlapping kind with one draw per image
    and channel; the other kinds exist only in the Rust project.
    """

    def __init__(self, channels, classes, layers, filters, alpha, max_dropout, slope, batch_norm):
        super().__init__()
        sizes = fmp_sizes(alpha, layers)
        self.input_size = sizes[0]
        blocks = []
        for i in range(layers):
            inputs = channels if i == 0 else filters * i
            out = filters * (i + 1)
            blocks += [nn.Conv2d(inputs, out, 2)]
            blocks += [nn.BatchNorm2d(out)] if batch_norm else []
            blocks += [
                nn.LeakyReLU(slope),
                nn.Dropout(max_dropout * i / layers),
                nn.FractionalMaxPool2d(2, output_size=sizes[2 + 2 * i]),
            ]
        head = filters * (layers + 1)
        blocks += [nn.Conv2d(filters * layers, head, 2)]
        blocks += [nn.BatchNorm2d(head)] if batch_norm else []
        blocks += [nn.LeakyReLU(slope), nn.Dropout(max_dropout), nn.Conv2d(head, classes, 1)]
        self.net = nn.Sequential(*blocks)

    def forward(self, x):
        return self.net(x).flatten(1)


def build(config):
    model = config["model"]
    _, channels, _ = DATASETS[config["dataset"]]
    kind = model["kind"]
    if kind == "lenet5_modern":
        return LeNet5Modern(10)
    if kind == "lenet5_classic":
        return LeNet5Classic(10)
    if kind == "fmp":
        return FmpNet(
            channels,
            10,
            model.get("layers", 6),
            model.get("filters", 32),
            model.get("alpha", math.sqrt(2)),
            model.get("max_dropout", 0.5),
            model.get("leaky_slope", 1 / 3),
            model.get("batch_norm", True),
        )
    raise SystemExit(f"unknown model kind {kind!r}")


def forward_flops(model, shape):
    """Two FLOPs per multiply-add of the convolution and linear layers, for one image."""
    total = 0

    def conv(module, _inputs, output):
        nonlocal total
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        total += 2 * output[0].numel() * per_output

    def linear(module, _inputs, output):
        nonlocal total
        total += 2 * output[0].numel() * module.in_features

    hooks = [
        m.register_forward_hook(conv if isinstance(m, nn.Conv2d) else linear)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model.eval()
        model(torch.zeros(1, *shape))
    for hook in hooks:
        hook.remove()
    if isinstance(model, LeNet5Classic):
        total += 2 * 10 * 10 * sum(map(len, C3_TABLE)) * 25  # the partial C3 by its links
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with open(args.config, "rb") as f:
        config = tomllib.load(f)
    batch = args.batch_size or config["batch_size"]
    train_images, channels, _ = DATASETS[config["dataset"]]
    train_images -= round(train_images * config.get("validation_fraction", 1 / 12))
    device = torch.device(args.device)
    torch.manual_seed(config.get("seed", 42))
    model = build(config)
    shape = (channels, model.input_size, model.input_size)
    gflop_per_image = 3 * forward_flops(model, shape) / 1e9
    model = model.to(device).train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config["optimizer"]["learning_rate"], momentum=0.9, nesterov=True
    )
    loss_fn = nn.CrossEntropyLoss()
    images = torch.randn(batch, *shape, device=device)
    targets = torch.randint(0, 10, (batch,), device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for step in range(args.warmup + args.steps):
        sync()
        began = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), targets)
        loss.backward()
        optimizer.step()
        sync()
        if step >= args.warmup:
            times.append((time.perf_counter() - began) * 1e3)
    median = statistics.median_low(times)
    # Evaluation: forward only, no autograd, eval mode (FMP still draws fresh regions).
    model.eval()
    eval_times = []
    with torch.no_grad():
        for step in range(args.warmup + args.steps):
            sync()
            began = time.perf_counter()
            model(images)
            sync()
            if step >= args.warmup:
                eval_times.append((time.perf_counter() - began) * 1e3)
    eval_median = statistics.median_low(eval_times)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"PyTorch {torch.__version__} CPU, {torch.get_num_threads()} threads"
    )
    timing = {
        "backend": f"torch-{device.type}",
        "device": name,
        "step_ms": times,
        "median_ms": median,
        "min_ms": min(times),
        "images_per_second": batch / (median / 1e3),
        "epoch_seconds": math.ceil(train_images / batch) * median / 1e3,
        "gflop_per_image": gflop_per_image,
        "gflop_per_second": gflop_per_image * batch / (median / 1e3),
        "eval_median_ms": eval_median,
        "eval_images_per_second": batch / (eval_median / 1e3),
    }
    print(
        f"{timing['backend']:>8}: median {median:8.1f} ms  min {min(times):8.1f} ms  "
        f"{timing['images_per_second']:8.1f} img/s  {timing['gflop_per_second']:7.1f} GFLOP/s  "
        f"~{timing['epoch_seconds']:7.1f} s/epoch  ({name})\n"
        f"{'':>8}  evaluation (forward only): {eval_median:.1f} ms per batch, "
        f"{timing['eval_images_per_second']:.1f} img/s"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump([timing], f, indent=2)


if __name__ == "__main__":
    main()
