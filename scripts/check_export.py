#!/usr/bin/env python3
"""Checks that PyTorch computes what this project computes, with the same weights.

    python3 scripts/check_export.py EXPORT_DIR
        Loads EXPORT_DIR/model.safetensors (written by `train export`) into the PyTorch
        definitions of scripts/cnn_models.py with load_state_dict(strict=True) and compares
        their logits on the input of EXPORT_DIR/reference.json (same FMP regions) with the
        logits the Rust project computed.

    python3 scripts/check_export.py --from-torch CONFIG --train target/release/train
        The other way: initialises the PyTorch model of CONFIG with random weights and batch-norm
        statistics, saves it as safetensors, has `train export` load it into the Burn model, and
        compares the logits again.

Exit status 0 when the largest difference is within --tolerance, 1 otherwise.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import tomllib

import torch

import cnn_models


def logits_difference(model, export_dir):
    """Largest |PyTorch - Rust| logit on the export's reference input and regions."""
    with open(os.path.join(export_dir, "reference.json")) as f:
        reference = json.load(f)
    pools = model.pools() if isinstance(model, cnn_models.FmpNet) else []
    if len(pools) != len(reference["regions"]):
        raise SystemExit(
            f"reference.json has regions for {len(reference['regions'])} pooling layers, "
            f"the model has {len(pools)}"
        )
    for pool, regions in zip(pools, reference["regions"]):
        pool.regions = regions
    model.eval()
    x = torch.tensor(reference["input"], dtype=torch.float32).view(reference["input_shape"])
    with torch.no_grad():
        ours = model(x)
    theirs = torch.tensor(reference["logits"], dtype=torch.float32)
    return (ours - theirs).abs().max().item(), theirs.abs().max().item()


def load_config(path):
    with open(path, "rb") as f:
        return tomllib.load(f)


def check_export(export_dir):
    config = load_config(os.path.join(export_dir, "config.toml"))
    model = cnn_models.build(config)
    state = cnn_models.load_safetensors(os.path.join(export_dir, "model.safetensors"))
    model.load_state_dict(state, strict=True)
    return config["model"]["kind"], logits_difference(model, export_dir)


def check_from_torch(config_path, train):
    config = load_config(config_path)
    torch.manual_seed(3)
    model = cnn_models.build(config)
    with torch.no_grad():  # batch-norm statistics other than the initial 0 and 1
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "from_torch.safetensors")
        cnn_models.save_safetensors(model.state_dict(), weights)
        out = os.path.join(tmp, "export")
        subprocess.run(
            [train, "export", weights, "--config", config_path, "--backend", "flex",
             "--output", out],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return config["model"]["kind"], logits_difference(model, out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export_dir", nargs="?")
    parser.add_argument("--from-torch", metavar="CONFIG")
    parser.add_argument("--train", default="target/release/train", help="the train binary")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    args = parser.parse_args()
    if args.from_torch:
        kind, (difference, scale) = check_from_torch(args.from_torch, args.train)
        direction = "PyTorch weights loaded in Rust"
    elif args.export_dir:
        kind, (difference, scale) = check_export(args.export_dir)
        direction = "Rust export loaded in PyTorch (strict)"
    else:
        parser.error("give an export folder or --from-torch CONFIG")
    ok = difference <= args.tolerance * max(1.0, scale)
    print(
        f"{kind}: {direction}: largest logit difference {difference:.2e} "
        f"(logits up to {scale:.2f}, tolerance {args.tolerance:g}): {'OK' if ok else 'MISMATCH'}"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
