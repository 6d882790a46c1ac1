#!/usr/bin/env python3
"""PyTorch reference timings for the project's networks, measured the way `train bench` measures.

    python3 scripts/torch_reference.py configs/fmp_mnist.toml [--steps 10 --warmup 2
        --device cpu|cuda --threads N --mode eager|channels_last|compile --json FILE]
    train bench configs/fmp_mnist.toml --backends flex --include FILE --chart both.svg

Reads the same TOML config, builds the same architecture in PyTorch (scripts/cnn_models.py:
LeNet modern, LeNet-5 classic, Graham's FMP net), and times training steps (forward, cross-entropy, backward, SGD step,
device synchronised) at the config's batch size. Prints one line like `train bench` and writes
the same JSON fields, so the two can be put side by side. `--mode` picks how PyTorch runs:
eager (as most users run it), channels_last (model and images in NHWC memory format) or compile
(`torch.compile`, compiled during the warm-up steps); the backend is then named
`torch-cpu-channels_last` or `torch-cpu-compile`. Inputs are random tensors of the
model's input shape (the step's cost does not depend on the pixel values). The FLOP count comes
from forward hooks on the convolution and linear layers, independently of the Rust count.
"""

import argparse
import json
import math
import pathlib
import statistics
import time
import tomllib

import torch
from torch import nn

from cnn_models import C3_TABLE, DATASETS, LeNet5Classic, build

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
    parser.add_argument("--mode", choices=["eager", "channels_last", "compile"], default="eager")
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
    images = torch.randn(batch, *shape, device=device)
    if args.mode == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=config["optimizer"]["learning_rate"], momentum=0.9, nesterov=True
    )
    loss_fn = nn.CrossEntropyLoss()
    if args.mode == "compile":
        model = torch.compile(model)
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
    # The device's practical ceiling, as `train bench` measures it: a 2048^3 f32 matrix product.
    a, b = (torch.rand(2048, 2048, device=device) for _ in range(2))
    matmul_times = []
    for step in range(args.warmup + args.steps):
        sync()
        began = time.perf_counter()
        torch.mm(a, b)
        sync()
        if step >= args.warmup:
            matmul_times.append(time.perf_counter() - began)
    matmul_gflops = 2 * 2048**3 / statistics.median_low(matmul_times) / 1e9
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"PyTorch {torch.__version__} CPU, {torch.get_num_threads()} threads"
    )
    timing = {
        "backend": f"torch-{device.type}" + ("" if args.mode == "eager" else f"-{args.mode}"),
        "config": pathlib.Path(args.config).stem,
        "device": name,
        "step_ms": times,
        "median_ms": median,
        "min_ms": min(times),
        "images_per_second": batch / (median / 1e3),
        "epoch_seconds": math.ceil(train_images / batch) * median / 1e3,
        "gflop_per_image": gflop_per_image,
        "gflop_per_second": gflop_per_image * batch / (median / 1e3),
        "matmul_gflop_per_second": matmul_gflops,
        "matmul_share": gflop_per_image * batch / (median / 1e3) / matmul_gflops,
        "eval_median_ms": eval_median,
        "eval_images_per_second": batch / (eval_median / 1e3),
    }
    print(
        f"{timing['backend']:>8}: median {median:8.1f} ms  min {min(times):8.1f} ms  "
        f"{timing['images_per_second']:8.1f} img/s  {timing['gflop_per_second']:7.1f} GFLOP/s  "
        f"~{timing['epoch_seconds']:7.1f} s/epoch  ({name})\n"
        f"{'':>8}  evaluation (forward only): {eval_median:.1f} ms per batch, "
        f"{timing['eval_images_per_second']:.1f} img/s\n"
        f"{'':>8}  {100 * timing['matmul_share']:.1f}% of the {matmul_gflops:.1f} GFLOP/s a "
        f"2048^3 matrix product reaches here"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump([timing], f, indent=2)


if __name__ == "__main__":
    main()
