"""The project's networks in PyTorch, with the Rust models' parameter names and layouts.

    import cnn_models, tomllib
    config = tomllib.load(open("exports/fmp/config.toml", "rb"))
    model = cnn_models.build(config)
    model.load_state_dict(cnn_models.load_safetensors("exports/fmp/model.safetensors"))

`train export RUN --output DIR` writes DIR/model.safetensors for these definitions (loaded with
strict=True), and weights trained here can go the other way: save `model.state_dict()` with
`save_safetensors` and `train eval FILE --config CONFIG` evaluates them in Rust.
Used by scripts/torch_reference.py (timings) and scripts/check_export.py (export check).
"""

import ctypes
import json
import math
import struct

import torch
from torch import nn

DATASETS = {  # training images, channels, image side
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


def squash(x):
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
    """C3: one 5x5 kernel per link of the table (60, in table order), the rest zero."""

    def __init__(self):
        super().__init__()
        links = [(o, i) for o, row in enumerate(C3_TABLE) for i in row]
        self.kernels = nn.Parameter(torch.randn(len(links), 25) * 0.1)
        self.bias = nn.Parameter(torch.zeros(16))
        rows = torch.full((16 * 6,), len(links), dtype=torch.long)
        for k, (o, i) in enumerate(links):
            rows[o * 6 + i] = k
        # Derived from the table, not a weight: kept out of the state dict.
        self.register_buffer("rows", rows, persistent=False)

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
        self.output = nn.Linear(84, classes)

    def forward(self, x):
        x = squash(self.s2(squash(self.c1(x))))
        x = squash(self.s4(squash(self.c3(x))))
        x = squash(self.c5(x)).flatten(1)
        return self.output(squash(self.f6(x)))


class FractionalMaxPool(nn.Module):
    """2x2-ish fractional max-pooling to `output_size`.

    By default PyTorch's own layer (pseudorandom overlapping regions, one draw per image and
    channel). Set `regions` to a layer entry of an export's reference.json to pool over exactly
    those regions instead: `groups` per image, and per image and group `[start, length]` of
    every output row (`rows`) and column (`cols`).
    """

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size
        self.regions = None

    def forward(self, x):
        if self.regions is None:
            return nn.functional.fractional_max_pool2d(x, 2, output_size=self.output_size)
        n, c, h, w = x.shape
        groups = self.regions["groups"]

        def indices(spans):
            # [n * groups, out, longest]: every index of a region, the last one repeated to pad
            # (a repeat does not change a maximum).
            spans = torch.tensor(spans, dtype=torch.long)
            longest = int(spans[..., 1].max())
            k = torch.arange(longest).view(1, 1, -1)
            index = spans[..., :1] + torch.minimum(k, spans[..., 1:] - 1)
            # One entry per image and channel.
            index = index.view(n, groups, *index.shape[1:])
            return index.expand(n, c, *index.shape[2:]).reshape(n * c, *index.shape[2:])

        rows, cols = indices(self.regions["rows"]), indices(self.regions["cols"])
        planes = x.reshape(n * c, h, w)
        g = torch.arange(n * c).view(-1, 1, 1, 1, 1)
        windows = planes[g, rows[:, :, None, :, None], cols[:, None, :, None, :]]
        return windows.amax(dim=(-2, -1)).view(n, c, rows.shape[1], cols.shape[1])


class FmpBlock(nn.Module):
    def __init__(self, inputs, filters, batch_norm, slope, dropout, output_size):
        super().__init__()
        self.conv = nn.Conv2d(inputs, filters, 2)
        self.norm = nn.BatchNorm2d(filters) if batch_norm else None
        self.slope = slope
        self.dropout = nn.Dropout(dropout)
        self.pool = FractionalMaxPool(output_size)

    def forward(self, x):
        x = self.conv(x)
        x = self.norm(x) if self.norm is not None else x
        x = nn.functional.leaky_relu(x, self.slope)
        return self.pool(self.dropout(x))


class FmpNet(nn.Module):
    """Graham's net: blocks of (2x2 conv k*n, BN, leaky ReLU, dropout, FMP), a 2x2 conv to 1x1
    (head), a 1x1 conv to the classes (classifier); dropout rising linearly to `max_dropout`."""

    def __init__(self, channels, classes, layers, filters, alpha, max_dropout, slope, batch_norm):
        super().__init__()
        sizes = fmp_sizes(alpha, layers)
        self.input_size = sizes[0]
        self.slope = slope
        self.blocks = nn.ModuleList(
            FmpBlock(
                channels if i == 0 else filters * i,
                filters * (i + 1),
                batch_norm,
                slope,
                max_dropout * i / layers,
                sizes[2 + 2 * i],
            )
            for i in range(layers)
        )
        head = filters * (layers + 1)
        self.head = nn.Conv2d(filters * layers, head, 2)
        self.head_norm = nn.BatchNorm2d(head) if batch_norm else None
        self.head_dropout = nn.Dropout(max_dropout)
        self.classifier = nn.Conv2d(head, classes, 1)

    def pools(self):
        return [block.pool for block in self.blocks]

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        x = self.head(x)
        x = self.head_norm(x) if self.head_norm is not None else x
        x = nn.functional.leaky_relu(x, self.slope)
        return self.classifier(self.head_dropout(x)).flatten(1)


def build(config):
    """The network of a run config (the TOML of configs/ or of an export), as the Rust
    project builds it; defaults are those of crates/models (FmpNetConfig)."""
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


DTYPES = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16,
          "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32}


def load_safetensors(path):
    """A safetensors file as a state dict (the format is an 8-byte header length, a JSON header
    and raw little-endian data; `safetensors.torch.load_file` reads it the same way)."""
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    body = memoryview(data)[8 + length:]
    state = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        start, end = entry["data_offsets"]
        dtype = DTYPES[entry["dtype"]]
        tensor = torch.frombuffer(bytearray(body[start:end]), dtype=dtype) if end > start \
            else torch.empty(0, dtype=dtype)
        state[name] = tensor.reshape(entry["shape"])
    return state


def save_safetensors(state, path):
    """A state dict as a safetensors file that `train eval/predict --config` read."""
    header, chunks, offset = {}, [], 0
    names = {v: k for k, v in DTYPES.items()}
    for name, tensor in sorted(state.items()):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        raw = ctypes.string_at(flat.data_ptr(), flat.numel() * flat.element_size())
        header[name] = {"dtype": names[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))
