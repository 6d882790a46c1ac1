#!/usr/bin/env python3
"""Cut the class-balanced MNIST sample committed in samples/mnist_sample/.

Takes the first N_TRAIN/10 training and N_TEST/10 test images of each digit, in file order, and
writes them as gzip IDX files (mtime 0, so the output is byte-for-byte reproducible), with a
SHA256SUMS of the decompressed files. Those digests are the ones built into
crates/data/src/dataset.rs.

Usage: python3 scripts/cut_mnist_sample.py [MNIST_DIR] [OUT_DIR]
(defaults: ../shared/data/mnist and samples/mnist_sample)
"""
import gzip
import hashlib
import os
import struct
import sys

N_TRAIN, N_TEST = 2000, 500


def read(path):
    with gzip.open(path, "rb") as f:
        return f.read()


def cut(images, labels, per_class):
    count, rows, cols = struct.unpack(">III", images[4:16])
    size = rows * cols
    taken = {d: 0 for d in range(10)}
    out_images, out_labels = [], []
    for i in range(count):
        label = labels[8 + i]
        if taken[label] < per_class:
            taken[label] += 1
            out_labels.append(label)
            out_images.append(images[16 + i * size:16 + (i + 1) * size])
    n = len(out_labels)
    image_file = struct.pack(">IIII", 2051, n, rows, cols) + b"".join(out_images)
    label_file = struct.pack(">II", 2049, n) + bytes(out_labels)
    return image_file, label_file


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/mnist"
    dst = sys.argv[2] if len(sys.argv) > 2 else "samples/mnist_sample"
    os.makedirs(dst, exist_ok=True)
    sums = []
    for split, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        images = read(os.path.join(src, f"{split}-images-idx3-ubyte.gz"))
        labels = read(os.path.join(src, f"{split}-labels-idx1-ubyte.gz"))
        image_file, label_file = cut(images, labels, n // 10)
        for name, data in ((f"{split}-images-idx3-ubyte", image_file), (f"{split}-labels-idx1-ubyte", label_file)):
            with open(os.path.join(dst, name + ".gz"), "wb") as f:
                with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as g:
                    g.write(data)
            sums.append(f"{hashlib.sha256(data).hexdigest()}  {name}")
    with open(os.path.join(dst, "SHA256SUMS"), "w") as f:
        f.write("\n".join(sums) + "\n")
    print("\n".join(sums))


if __name__ == "__main__":
    main()
