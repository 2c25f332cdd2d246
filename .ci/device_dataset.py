"""A dataset in the npz layout packed into one file under the device tool's 64 MiB carry limit (with
the repository beside it), and unpacked on the device machine.

    python .ci/device_dataset.py pack $MN40 .device/modelnet40_f16.npz
    python3 .ci/device_dataset.py unpack .device/modelnet40_f16.npz /tmp/modelnet40

The training split's points are rounded to float16, each cloud's points sorted by x (the networks
are permutation-invariant), x delta-coded, each coordinate plane byte-shuffled, deflated: ModelNet40's
9,843 training clouds of 1,024 points take 38.5 MiB. Labels and class names are exact. The test
split keeps the first shape of each class: the device's own test pass is a smoke check, and a teacher
trained there is tested on the full float32 test split where the data lives."""

import os
import sys

import numpy as np


def encode(points: np.ndarray) -> np.ndarray:
    """float32 [S, P, 3] -> uint8 [2, S * P * 3] (see the module docstring)."""
    half = points.astype(np.float16)
    order = np.argsort(half[..., 0], axis=1, kind="stable")
    bits = np.take_along_axis(half, order[..., None], axis=1).view(np.int16)
    planes = np.stack([np.diff(bits[..., 0], axis=1, prepend=np.int16(0)), bits[..., 1], bits[..., 2]])
    return np.frombuffer(planes.tobytes(), np.uint8).reshape(-1, 2).T.copy()


def decode(data: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """encode's output -> float32 [S, P, 3] (float16 values, each cloud's points in x order)."""
    planes = np.frombuffer(data.T.copy().tobytes(), np.int16).reshape(3, shape[0], shape[1])
    bits = np.stack([np.cumsum(planes[0], axis=1, dtype=np.int16), planes[1], planes[2]], axis=-1)
    return bits.view(np.float16).astype(np.float32)


def pack(root: str, out: str) -> None:
    train, test = np.load(f"{root}/train.npz"), np.load(f"{root}/test.npz")
    classes = np.array(open(f"{root}/classes.txt").read().split())
    first = np.array([np.flatnonzero(test["labels"] == c)[0] for c in np.unique(test["labels"])])
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    np.savez_compressed(out, train=encode(train["points"]), train_shape=train["points"].shape,
                        train_labels=train["labels"], test=encode(test["points"][first]),
                        test_shape=test["points"][first].shape, test_labels=test["labels"][first], classes=classes)


def unpack(packed: str, root: str) -> None:
    z = np.load(packed)
    for split in ("train", "test"):
        np.savez(f"{root}/{split}.npz", points=decode(z[split], tuple(z[f"{split}_shape"])), labels=z[f"{split}_labels"])
    open(f"{root}/classes.txt", "w").write("\n".join(z["classes"]) + "\n")
    print(f"{root}: {len(z['train_labels'])} training and {len(z['test_labels'])} test clouds", flush=True)


if __name__ == "__main__":
    {"pack": pack, "unpack": unpack}[sys.argv[1]](*sys.argv[2:4])
