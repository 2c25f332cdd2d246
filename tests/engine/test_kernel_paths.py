"""Every kernel path bit for bit against the NumPy reference through the stand-alone harness
(tests/engine/kernel_harness.c): the native paths built with the host compiler, and the ARM64 NEON
path cross-compiled with aarch64-linux-gnu-gcc and run under qemu-user (Debian packages
gcc-aarch64-linux-gnu and qemu-user; skipped, saying so, where they are missing)."""

from __future__ import annotations

import platform
import runpy
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pointdistill.engine import Engine, export_student
from pointdistill.engine import reference
from pointdistill.engine.runtime import PackedNetwork, available_kernels

from tests.engine.test_engine import random_student

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "tests/engine/kernel_harness.c"
BUILD = runpy.run_path(str(ROOT / "pointdistill/engine/kernels/build.py"))
CROSS_COMPILER, QEMU = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")

# (quantizer, aggregation, widths, point counts): odd widths, several words per row (a two-word
# first layer; more than the 31 words a byte counter holds in the 2050-wide layers), one point,
# odd point counts
CASES = [
    ("lsr", "ema", {}, (1024,)),
    ("bnn", "max", {}, (65,)),
    ("bireal", "ema", {"point_widths": (5, 7, 130), "head_widths": (2050, 33)}, (1, 3, 64)),
    ("irnet", "max", {"point_widths": (100, 2050, 200), "head_widths": (70,)}, (37,)),
    # real-valued shortcuts: widening (64 -> 128, 70 -> 140), a two-word real row, point counts
    # around the 64-point blocks
    ("lsr", "ema", {"shortcuts": True, "point_widths": (64, 64, 128, 130)}, (1024, 65)),
    ("bnn", "max", {"shortcuts": True, "point_widths": (70, 140, 140, 90), "head_widths": (33,)}, (1, 129)),
    # head shortcuts: real pooled values, narrowing (1024 -> 512 -> 256, 130 -> 65) and widening
    # (65 -> 130) head layers, with and without point shortcuts
    ("lsr", "ema", {"shortcuts": True, "head_shortcuts": True, "point_widths": (64, 64, 128, 1024),
                    "head_widths": (512, 256)}, (1024, 65)),
    ("irnet", "max", {"head_shortcuts": True, "point_widths": (5, 7, 130), "head_widths": (65, 130, 13)}, (1, 37)),
    # learned thresholds on the real values each layer reads: both shortcuts, and head shortcuts alone
    ("bireal", "ema", {"shortcuts": True, "head_shortcuts": True, "learned_thresholds": True,
                       "point_widths": (64, 64, 128, 1024), "head_widths": (512, 256)}, (1024, 65)),
    ("lsr", "max", {"head_shortcuts": True, "learned_thresholds": True, "point_widths": (5, 7, 130),
                    "head_widths": (65, 130, 13)}, (1, 37)),
]


def write_case(path: Path, engine: Engine, clouds: np.ndarray) -> None:
    """The harness's case file (its header comment gives the layout)."""
    packed: PackedNetwork = engine.packed
    b, n, _ = clouds.shape
    weight, scale, offset, m16, stem_words, *stem_outputs = packed.stem
    pool_real = len(packed.pool.real or ()) == 3
    sizes = [b, n, m16, stem_words, len(packed.point_layers), len(packed.head_layers), *(stem_outputs or [0]),
             int(pool_real)]
    parts = [np.array(sizes, dtype="<i8"), clouds.astype("<f4"), weight, scale, offset]

    def layer(packed_layer, pool_argument=None):
        w, t, groups, words, out_words, *real = packed_layer.spec()
        if real:
            layer_scale, *layer_offset, inputs, outputs = real
            return [np.array([groups, words, out_words, inputs, outputs], dtype="<i8"), w, layer_scale,
                    *(layer_offset or [pool_argument])]
        return [np.array([groups, words, out_words], dtype="<i8"), w, t if pool_argument is None else pool_argument]

    for packed_layer in packed.point_layers:
        parts += layer(packed_layer)
    parts += layer(packed.pool, engine.pool_argument(n))
    for packed_layer in packed.head_layers:
        parts += layer(packed_layer)
    if packed.last:
        w, groups, words, outputs, inputs, last_scale, last_offset = packed.last
        parts += [np.array([groups, words, outputs, inputs], dtype="<i8"), w, last_scale, last_offset]
    for read_at in packed.read_at:
        parts += [np.array([0], dtype="<i8")] if read_at is None else [np.array([1], dtype="<i8"), read_at]
    path.write_bytes(b"".join(np.ascontiguousarray(part).astype(part.dtype.newbyteorder("<")).tobytes()
                              for part in parts))


def check_outputs(path: Path, network, clouds: np.ndarray, label: str) -> None:
    """The harness's output equals the NumPy reference's trace, layer by layer, bit for bit."""
    expected = []
    reference.forward(network, clouds, expected)
    data = path.read_bytes()
    offset = 0
    for index, oracle in enumerate(expected):
        got = np.frombuffer(data, oracle.dtype.newbyteorder("<"), oracle.size, offset).reshape(oracle.shape)
        offset += oracle.nbytes
        assert np.array_equal(got, oracle), f"{label}: layer {index} differs from the reference"
    assert offset == len(data), f"{label}: {len(data) - offset} bytes more than the reference's layers"


def build_harness(compiler: list[str], machine: str, out: Path) -> Path:
    sources, macros = BUILD["kernel_sources"](machine)
    command = [*compiler, *BUILD["FLAGS"], *(f"-D{name}={value}" for name, value in macros), str(HARNESS),
               *(str(ROOT / s) for s in sources), "-o", str(out)]
    built = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, f"{' '.join(command)}\n{built.stderr}"
    return out


def run_cases(tmp_path: Path, runner: list[str], paths: list[str]) -> None:
    for case, (quantizer, aggregation, widths, point_counts) in enumerate(CASES):
        network = export_student(random_student(quantizer, aggregation, seed=case, **widths))
        engine = Engine(network, "numpy")
        for n in point_counts:
            clouds = np.random.default_rng(n).standard_normal((3, n, 3)).astype(np.float32)
            clouds[:, n // 2:] = clouds[:, : n - n // 2]  # repeated points: the engine runs distinct rows once
            case_file = tmp_path / f"case{case}-{n}.bin"
            write_case(case_file, engine, clouds)
            for path in paths:
                out = tmp_path / f"out-{path}-{case}-{n}.bin"
                ran = subprocess.run([*runner, path, str(case_file), str(out)], capture_output=True, text=True,
                                     timeout=300)
                assert ran.returncode == 0, f"{path}: {ran.stderr}"
                check_outputs(out, network, clouds, f"{path} path, {quantizer}+{aggregation}, N={n}")


@pytest.mark.skipif(shutil.which("gcc") is None, reason="no host C compiler (gcc)")
def test_every_native_path_matches_the_reference_in_the_stand_alone_harness(tmp_path):
    harness = build_harness(["gcc"], platform.machine(), tmp_path / "harness")
    paths = [k for k in available_kernels() if k != "numpy"]
    run_cases(tmp_path, [str(harness)], paths)


@pytest.mark.skipif(CROSS_COMPILER is None or QEMU is None,
                    reason="needs aarch64-linux-gnu-gcc and qemu-aarch64 (Debian: gcc-aarch64-linux-gnu qemu-user)")
def test_the_neon_path_matches_the_reference_under_qemu(tmp_path):
    harness = build_harness([CROSS_COMPILER, "-static"], "aarch64", tmp_path / "harness-aarch64")
    run_cases(tmp_path, [QEMU, str(harness)], ["neon", "generic"])
