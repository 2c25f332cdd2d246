"""Bit-packed engine vs PyTorch, one thread, ModelNet40-sized PointNet, N = 1024 points.

    python benchmarks/engine.py [--student runs/student.pt] [--points ../shared/data/modelnet40_1024]
                                [--against runs/other_student.pt]

Times per sample, batch 1 and batch 32, measured side by side in rounds that alternate the
contenders (the median round is reported): (a) the float PointNet of the same widths (no T-Nets)
in fp32 eager PyTorch, (b) the same under torch.compile, (s) the binary student's simulated
forward in PyTorch, and (c) the engine with each kernel path this CPU runs (one row each, labelled
by path, with its ratio to the faster of (a) and (b)). Then the fused 128 -> 1024 pooled layer
alone per path, on the student's own activations of a real cloud: bit-ops/s (one XNOR+popcount
per weight bit per point scanned) and, on AVX-512, the fraction of this core's VPOPCNTQ peak; per
path, the engine's time on that cloud split into the fused layer on the cloud's distinct rows and
everything else (stem, small layers, head, classifier, Python); and the file sizes. Speed depends
on the weights and the clouds (the pooled layer stops scanning a channel once it fires; the
engine runs only a cloud's distinct first-layer codes), so give a trained --student and real
--points for numbers that mean something; without them a random student and noise are used.
--against times a second exported student in the same rounds, (d) per path with its ratio to
(c) (e.g. one trained with real-valued shortcuts, which the engine runs on every point).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pointdistill.engine import Engine, available_kernels, export_student, save_network  # noqa: E402
from pointdistill.engine import _kernels  # noqa: E402
from pointdistill.engine.runtime import path_code  # noqa: E402
from pointdistill.models import (  # noqa: E402
    Checkpoint, PointNetConfig, create_model, load_checkpoint, model_spec, save_checkpoint,
)
from pointdistill.models.binary_pointnet import BinaryPointNetConfig  # noqa: E402

POINT_WIDTHS, HEAD_WIDTHS, CLASSES = (64, 64, 64, 128, 1024), (512, 256), 40


def per_sample_seconds(run, batch: int, rounds: int, min_seconds: float = 0.2) -> list[float]:
    """One timing per round: repeat ``run`` for at least ``min_seconds``; seconds per sample."""
    run()
    out = []
    for _ in range(rounds):
        count, start = 0, time.perf_counter()
        while True:
            run()
            count += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        out.append(elapsed / count / batch)
    return out


def time_pooled_layer(network, engine, engines, pool_input, distinct_input, distinct, clouds, args) -> None:
    """The fused threshold pool alone per path (bit-ops/s, share of the VPOPCNTQ peak) and the engine's time on
    the first cloud split into that layer on the cloud's distinct rows and the rest."""
    packed = engine.packed
    pool = next(layer for layer in network.layers if layer.kind == "binary_pool")
    thresholds = engine.pool_argument(args.num_points)
    out = np.empty(packed.pool.out_words, dtype=np.uint64)
    bit_ops = args.num_points * pool.inputs * pool.outputs
    peak = None
    if "avx512" in engines:
        iterations = 10_000_000
        peak_seconds = statistics.median(per_sample_seconds(lambda: _kernels.popcount_peak(iterations), 1, 3))
        peak = iterations * 8 * 512 / peak_seconds
        print(f"VPOPCNTQ peak (8 independent chains): {peak / 1e9:.0f} G bits/s")
    for kernel in engines:
        code = path_code(kernel)
        w, _, groups, words, out_words = packed.pool.spec()

        def pool_layer():
            _kernels.pool(code, pool_input, w, thresholds, args.num_points, groups, words, out_words, out)

        def pool_layer_distinct():
            _kernels.pool(code, distinct_input, w, thresholds, distinct, groups, words, out_words, out)

        first_cloud = np.ascontiguousarray(clouds[:1])
        layer_seconds, distinct_seconds, engine_seconds = (
            statistics.median(t) for t in zip(*(
                (per_sample_seconds(pool_layer, 1, 1)[0], per_sample_seconds(pool_layer_distinct, 1, 1)[0],
                 per_sample_seconds(lambda e=engines[kernel]: e(first_cloud), 1, 1)[0]) for _ in range(args.rounds))))
        print(f"fused {pool.inputs} -> {pool.outputs} layer + pooling, {kernel} kernel, one cloud, all "
              f"{args.num_points} points: {layer_seconds * 1e6:.1f} us, {bit_ops / layer_seconds / 1e9:.0f} G bit-ops/s"
              + (f", {bit_ops / layer_seconds / peak:.1%} of popcount peak" if peak and kernel == "avx512" else ""))
        print(f"  {kernel} engine, first cloud at batch 1: {engine_seconds * 1e6:.1f} us = fused layer on its "
              f"{distinct} distinct rows {distinct_seconds * 1e6:.1f} us + the rest (stem, small layers, head, "
              f"classifier, Python) {(engine_seconds - distinct_seconds) * 1e6:.1f} us "
              f"({(engine_seconds - distinct_seconds) / engine_seconds:.0%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", default=None, help="a trained binary_pointnet checkpoint (default: random)")
    parser.add_argument("--points", default=None, help="dataset directory: time on its first test clouds")
    parser.add_argument("--num-points", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--against", default=None, help="a second binary_pointnet checkpoint whose engine runs "
                                                         "in the same rounds, (d)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    work = tempfile.mkdtemp(prefix="pointdistill-engine-bench-")
    if args.student:
        checkpoint = load_checkpoint(args.student)
    else:
        spec = model_spec("binary_pointnet", BinaryPointNetConfig(num_classes=CLASSES, point_widths=POINT_WIDTHS,
                                                                   head_widths=HEAD_WIDTHS))
        checkpoint = Checkpoint(spec, create_model(spec).state_dict(), [f"class{i}" for i in range(CLASSES)],
                                {"num_points": args.num_points})
    student = checkpoint.build_model()
    config = student.config
    float_spec = model_spec("pointnet", PointNetConfig(num_classes=config.num_classes, point_widths=config.point_widths,
                                                       head_widths=config.head_widths))
    float_model = create_model(float_spec).eval()
    network = export_student(checkpoint)

    student_path, float_path, model_path = (os.path.join(work, n) for n in ("student.pt", "float.pt", "model.pdbn"))
    save_checkpoint(student_path, checkpoint)
    save_checkpoint(float_path, Checkpoint(float_spec, float_model.state_dict(), checkpoint.class_names, {}))
    model_bytes = save_network(model_path, network)

    if args.points:
        from pointdistill.data import load_dataset

        clouds = load_dataset(args.points, "test", args.num_points).points[:32]
    else:
        clouds = np.random.default_rng(0).standard_normal((32, args.num_points, 3)).astype(np.float32)

    with torch.no_grad():
        expected = student(torch.from_numpy(clouds)).logits.numpy()
    for kernel in available_kernels():
        difference = np.abs(Engine(network, kernel)(clouds) - expected).max()
        print(f"check: {kernel} engine vs PyTorch student on the {len(clouds)} clouds: "
              f"max |logit difference| {difference:.2e}")
    compiled = None if args.no_compile else torch.compile(float_model)
    engines = {kernel: Engine(network, kernel) for kernel in available_kernels() if kernel != "numpy"}
    against = export_student(load_checkpoint(args.against)) if args.against else None
    against_engines = {kernel: Engine(against, kernel) for kernel in engines} if against else {}
    if against:
        print(f"(d): {args.against}, first layer {against.layers[0].kind}, {len(against.layers)} layers")
    print(f"CPU kernels available: {available_kernels()}; torch {torch.__version__}, {torch.get_num_threads()} thread")
    print(f"model: PointNet {config.point_widths} head {config.head_widths} -> {config.num_classes}, "
          f"N = {args.num_points}, {'real clouds from ' + args.points if args.points else 'random clouds'}")

    results = {}
    for batch in (1, 32):
        x_np = np.ascontiguousarray(clouds[:batch])
        x = torch.from_numpy(x_np)
        contenders = {"(a) float PointNet, torch fp32 eager": lambda: float_model(x)}
        if compiled is not None:
            with torch.no_grad():
                compiled(x)  # compile outside the timing
            contenders["(b) float PointNet, torch.compile"] = lambda: compiled(x)
        contenders["(s) binary student, torch eager (simulated)"] = lambda: student(x)
        for kernel, engine in engines.items():
            contenders[f"(c) engine, {kernel} kernel"] = (lambda e=engine: e(x_np))
        for kernel, engine in against_engines.items():
            contenders[f"(d) --against engine, {kernel} kernel"] = (lambda e=engine: e(x_np))
        timings = {name: [] for name in contenders}
        with torch.no_grad():
            for _ in range(args.rounds):  # alternate contenders round by round
                for name, run in contenders.items():
                    timings[name] += per_sample_seconds(run, batch, 1)
        results[batch] = {name: statistics.median(t) for name, t in timings.items()}

    torch_best = {batch: min(v for k, v in results[batch].items() if k.startswith(("(a)", "(b)"))) for batch in (1, 32)}
    print(f"\n{'per sample (median of ' + str(args.rounds) + ' rounds)':48s} {'batch 1':>12s} {'batch 32':>12s}"
          f" {'vs torch, b1':>13s} {'b32':>7s}")
    for name in results[1]:
        ratios = (f" {torch_best[1] / results[1][name]:12.1f}x {torch_best[32] / results[32][name]:6.1f}x"
                  if name.startswith("(c)") else "")
        print(f"{name:48s} {results[1][name] * 1e3:10.4f}ms {results[32][name] * 1e3:10.4f}ms{ratios}")
    for kernel in engines:
        row = f"(c) engine, {kernel} kernel"
        print(f"{kernel} kernel: {torch_best[1] / results[1][row]:.1f}x at batch 1, "
              f"{torch_best[32] / results[32][row]:.1f}x at batch 32 faster than the faster of (a) and (b)")
    for kernel in against_engines:
        row, other = f"(c) engine, {kernel} kernel", f"(d) --against engine, {kernel} kernel"
        print(f"{kernel} kernel: (d) takes {results[1][other] / results[1][row]:.2f}x (c)'s time at batch 1, "
              f"{results[32][other] / results[32][row]:.2f}x at batch 32")

    # The pooled layer alone, on the student's own input to it for the first real cloud.
    engine = next(iter(engines.values()))
    trace = []
    engine(np.ascontiguousarray(clouds[:1]), trace)
    packed = engine.packed
    pool_input = np.ascontiguousarray(trace[len(packed.point_layers)][0])
    if network.layers[0].kind == "stem_real":  # real values per point: the engine runs every point
        distinct_rows = np.arange(args.num_points)
    else:
        distinct_rows = np.sort(np.unique(trace[0][0], axis=0, return_index=True)[1])
    distinct = len(distinct_rows)
    distinct_input = np.ascontiguousarray(pool_input[distinct_rows])  # what the engine's pooled layer scans
    print(f"\nfirst cloud: the engine runs {distinct} distinct first-layer codes of {args.num_points} points "
          f"(all of them where the student has shortcuts); the pooled layer fires {np.unpackbits(trace[len(packed.point_layers) + 1][0].view(np.uint8)).mean():.0%} of its channels")
    if network.layers[len(packed.point_layers) + 1].kind == "binary_pool_real":
        print("the pooled layer gives real values (head shortcuts): the engine takes each channel's least popcount "
              "over the points with the counts kernel, not the fused threshold pool timed for other students")
    else:
        time_pooled_layer(network, engine, engines, pool_input, distinct_input, distinct, clouds, args)

    student_file, float_file = os.path.getsize(student_path), os.path.getsize(float_path)
    print(f"\nexported model {model_bytes:,} bytes; student float checkpoint {student_file:,} bytes "
          f"({student_file / model_bytes:.1f}x smaller); float PointNet checkpoint {float_file:,} bytes "
          f"({float_file / model_bytes:.1f}x smaller)")


if __name__ == "__main__":
    main()
