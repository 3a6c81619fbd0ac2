#!/usr/bin/env python3
"""Writes a held-out slice of Fashion-MNIST *training* images: class-balanced, none of them in
the shipped calibration subset, and none from the test set. `qvit sensitivity` and `qvit search`
measure accuracy on it while they choose bit widths, so that the test set is only ever used to
report the chosen designs.

    apt-get install dataset-fashion-mnist
    python3 tools/data/heldout.py --out assets/fashion-mnist/heldout-2000

Plain Python (gzip, random): the output is byte-identical on every run with the same seed.
"""
import argparse
import gzip
import random
import struct
import sys

SOURCE = "/usr/share/datasets/fashion-mnist"


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, count = struct.unpack(">II", data[:8])
    if magic == 2051:
        rows, cols = struct.unpack(">II", data[8:16])
        size = rows * cols
        return [data[16 + i * size: 16 + (i + 1) * size] for i in range(count)], (rows, cols)
    if magic == 2049:
        return list(data[8: 8 + count]), None
    sys.exit(f"{path}: not an IDX image or label file (magic {magic})")


def write_idx(path, header, payload):
    # No name and mtime 0 keep the file byte-identical across runs and paths.
    with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
        f.write(header + payload)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="prefix, e.g. assets/fashion-mnist/heldout-2000")
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--calibration", default="assets/fashion-mnist/calib-1024",
                    help="prefix of the calibration subset to exclude")
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()

    images, (rows, cols) = read_idx(f"{SOURCE}/train-images-idx3-ubyte.gz")
    labels, _ = read_idx(f"{SOURCE}/train-labels-idx1-ubyte.gz")
    calibration, _ = read_idx(f"{args.calibration}-images-idx3-ubyte.gz")
    excluded = set(calibration)
    rng = random.Random(args.seed)
    order = list(range(len(images)))
    rng.shuffle(order)
    chosen, taken = [], [0] * 10
    for i in order:
        if images[i] in excluded or taken[labels[i]] >= args.per_class:
            continue
        taken[labels[i]] += 1
        chosen.append(i)
    if min(taken) < args.per_class:
        sys.exit(f"only {taken} images per class are left after excluding the calibration set")
    chosen.sort()
    n = len(chosen)
    write_idx(f"{args.out}-images-idx3-ubyte.gz", struct.pack(">IIII", 2051, n, rows, cols),
              b"".join(images[i] for i in chosen))
    write_idx(f"{args.out}-labels-idx1-ubyte.gz", struct.pack(">II", 2049, n),
              bytes(labels[i] for i in chosen))
    print(f"wrote {n} training images ({args.per_class} per class), none of the "
          f"{len(excluded)} calibration images, to {args.out}-*", file=sys.stderr)


if __name__ == "__main__":
    main()
