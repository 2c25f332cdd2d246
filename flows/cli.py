"""The `pointdistill` command: runs the flows with no Prefect server configured (a temporary
local one is started for the run), plus data and store utilities that need no Prefect."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from error
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from error


def _make_dataset(args) -> None:
    from pointdistill.data import write_generated_dataset

    root = write_generated_dataset(args.out, args.train_per_class, args.test_per_class, args.num_points, args.seed)
    print(f"generated dataset written to {root}")


def _train_teacher(args) -> None:
    from flows.runtime import embedded_api
    from flows.train_teacher import train_teacher

    with embedded_api():
        metrics = train_teacher(
            dataset=args.dataset, out=args.out, num_points=args.num_points, point_widths=args.point_widths,
            head_widths=args.head_widths, input_transform=args.input_transform,
            feature_transform=args.feature_transform, epochs=args.epochs, batch_size=args.batch_size,
            lr=args.lr, seed=args.seed, device=args.device, kernel=args.kernel, resume=args.resume,
            overwrite=args.overwrite, progress=True)
    print(f"teacher {args.out}: test overall accuracy {metrics['test_overall_accuracy']:.4f}, "
          f"mean-class accuracy {metrics['test_mean_class_accuracy']:.4f}")


def _record_teacher(args) -> None:
    from flows.record_teacher import record_teacher
    from flows.runtime import embedded_api
    from pointdistill.records import format_summary

    with embedded_api():
        summary = record_teacher(
            teacher=args.teacher, dataset=args.dataset, store=args.store, augmentations=args.augmentations,
            chunk_shapes=args.chunk_shapes, seed=args.seed, num_points=args.num_points, device=args.device,
            batch_size=args.batch_size, dask_address=args.dask_address, workers=args.workers,
            catalog=args.catalog, progress=True)
    print(format_summary(summary))


def _train_student(args) -> None:
    from flows.runtime import embedded_api
    from flows.train_student import train_student

    with embedded_api():
        summary = train_student(
            store=args.store, teacher_sha=args.teacher_sha, dataset_fingerprint=args.dataset_fingerprint,
            catalog=args.catalog, dataset=args.dataset, out=args.out, quantizer=args.quantizer,
            aggregation=args.aggregation, point_widths=args.point_widths, head_widths=args.head_widths,
            kd_weight=args.kd_weight, temperature=args.temperature, reg_weight=args.reg_weight,
            regularizer=args.regularizer, self_weight=args.self_weight, epochs=args.epochs, lr=args.lr,
            batch_size=args.batch_size, device=args.device, seed=args.seed, kernel=args.kernel,
            online_teacher=args.online_teacher, use_completed_part=args.use_completed_part,
            resume=args.resume, overwrite=args.overwrite, progress=True)
    sizes = summary["student_bytes"]
    teacher = summary["teacher_test_overall_accuracy"]
    best = summary["best_epoch_test_overall_accuracy (model selection on test, for comparison only)"]
    print(f"teacher  test OA {100 * teacher:.2f}%  ({summary['teacher_float_bytes']:,} bytes float32)")
    print(f"student  test OA {100 * summary['final_test_overall_accuracy']:.2f}% at the final epoch "
          f"(mean-class {100 * summary['final_test_mean_class_accuracy']:.2f}%); "
          f"best epoch {summary['best_epoch']}: {100 * best:.2f}% (selected on test, for comparison only)")
    print(f"student  {sizes['float_bytes']:,} bytes as float32, {sizes['packed_bytes']:,} bytes bit-packed "
          f"({sizes['float_bytes'] / sizes['packed_bytes']:.1f}x smaller)")
    print(f"outputs  {summary['outputs']['checkpoint']}, {summary['outputs']['metrics']}, {summary['outputs']['curves']}")


def _ablation(args) -> None:
    from flows.ablation import ablation
    from flows.runtime import embedded_api

    with embedded_api():
        result = ablation(
            store=args.store, dataset=args.dataset, out=args.out, epochs=args.epochs, lr=args.lr,
            batch_size=args.batch_size, seed=args.seed, kd_weight=args.kd_weight, temperature=args.temperature,
            reg_weight=args.reg_weight, regularizer=args.regularizer, self_weight=args.self_weight,
            quantizers=args.quantizers, aggregations=args.aggregations, dask_address=args.dask_address,
            workers=args.workers, resume=args.resume, overwrite=args.overwrite, progress=True)
    print(result["markdown"])
    print(f"written: {', '.join(result['paths'].values())}")


def _serve(args) -> int:
    from flows.serve import NoPrefectServer, serve_deployments

    try:
        serve_deployments(args.name, args.limit)
    except NoPrefectServer as error:
        print(f"pointdistill: error: {error}", file=sys.stderr)
        return 2
    return 0


def _export(args) -> None:
    from pointdistill.engine.export import export_file

    report = export_file(args.student, args.out)
    print(f"exported {args.student} -> {args.out}: {report['bytes']:,} bytes; float32 weights "
          f"{report['float_weight_bytes']:,} bytes ({report['float_weight_bytes'] / report['bytes']:.1f}x), "
          f"checkpoint file {report['checkpoint_bytes']:,} bytes")
    print(f"checked  engine vs PyTorch eval forward on 4 random clouds: max |logit difference| "
          f"{report['max_abs_difference']:.2e}")


def _predict(args) -> None:
    import numpy as np

    from pointdistill.engine import Engine, load_network
    from pointdistill.engine.predict import predict, read_clouds

    network = load_network(args.model)
    num_points = args.num_points or network.source.get("num_points") or 1024
    points, labels = read_clouds(args.input, num_points, args.split)
    engine = Engine(network)
    logits = predict(engine, points, args.batch_size)
    predicted = logits.argmax(axis=1)
    lines = ["index,predicted,label"] + [
        f"{i},{network.class_names[p]},{network.class_names[labels[i]] if labels is not None else ''}"
        for i, p in enumerate(predicted)]
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    else:
        print("\n".join(lines[:21]) + ("\n..." if len(lines) > 21 else ""))
    summary = f"{len(points)} clouds x {num_points} points, kernel {engine.kernel}"
    if labels is not None:
        summary += f", overall accuracy {np.mean(predicted == labels):.4f}"
    print(summary, file=sys.stderr)


def _store_summary(args) -> None:
    from pointdistill.records import format_summary, store_summary

    summary = store_summary(args.uri)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))


def _store_inspect(args) -> None:
    from pointdistill.records import format_inspection, inspect_store

    report = inspect_store(args.uri)
    print(json.dumps(report, indent=2) if args.json else format_inspection(report))


def _store_ls(args) -> None:
    from pointdistill.records import list_catalog

    rows = list_catalog(args.catalog, args.teacher, args.dataset)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'created':25s} {'status':9s} {'teacher':20s} {'dataset':28s} {'N':>6s} {'A':>3s} {'MB':>8s}  store")
    for r in ({k: _printable(v) if isinstance(v, str) else v for k, v in row.items()} for row in rows):
        print(f"{r['created']:25s} {r['status']:9s} {r['teacher_model'] + ' ' + r['teacher_sha256'][:8]:20s} "
              f"{r['dataset_name'][:19] + ' ' + r['dataset_fingerprint'][:8]:28s} {r['num_shapes']:6d} "
              f"{r['augmentations']:3d} {r['bytes'] / 1e6:8.1f}  {r['store_uri']}")


def _printable(text: str) -> str:
    """Control and other non-printable characters escaped (``\\x1b``), so that a catalog row can
    never drive the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def _store_register(args) -> None:
    from pointdistill.records import register_store

    row = register_store(args.uri, args.catalog)
    print(f"registered {args.uri} ({row['status']}, teacher {row['teacher_sha256'][:12]}, "
          f"dataset {row['dataset_fingerprint'][:12]})")


def _store_verify(args) -> int:
    from pointdistill.records import verify_store

    report = verify_store(args.uri, teacher=args.teacher, dataset=args.dataset, sample=args.sample)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for damage in report["damaged"]:
            start, stop = damage["shapes"]
            print(f"DAMAGED  {damage['array']} chunk {damage['chunk']} (shapes {start}..{stop - 1}): {damage['error']}")
        for chunk in report["params_mismatch"]:
            print(f"MISMATCH params of chunk {chunk} differ from the augmentation generator")
        if report["not_done"]:
            print(f"NOT DONE chunks {report['not_done']}")
        check = report["teacher_check"]
        if check:
            print(f"teacher  re-ran {check['records']} records: max |difference| logits "
                  f"{check['max_abs_difference']['logits']:.2e}, pooled {check['max_abs_difference']['pooled']:.2e}"
                  f" -> {'within fp16 rounding' if check['within_fp16'] else 'NOT within fp16 rounding'}")
        print(f"{args.uri}: {report['chunks']} chunks read, {'OK' if report['ok'] else 'PROBLEMS FOUND'}")
    return 0 if report["ok"] else 1


def kernel_argument(p: argparse.ArgumentParser) -> None:
    from pointdistill.binary.point_pool import TRAINING_KERNELS

    p.add_argument("--kernel", default="fast", choices=TRAINING_KERNELS,
                   help="fast: the last point layer, BatchNorm and max fused on the CPU (default); "
                        "reference: plain autograd, to re-check a result (CUDA always runs it)")


def existing_arguments(p: argparse.ArgumentParser, what: str) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true",
                       help=f"continue the interrupted run at --out from its last finished epoch (bit-identical "
                            f"to an uninterrupted run on the CPU); a finished {what} is reported, not retrained")
    group.add_argument("--overwrite", action="store_true", help=f"replace an existing {what} at --out")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pointdistill", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("make-dataset", help="write the generated shapes dataset (npz layout)")
    p.add_argument("--out", required=True, help="directory to write train.npz, test.npz, classes.txt")
    p.add_argument("--train-per-class", type=int, default=40)
    p.add_argument("--test-per-class", type=int, default=10)
    p.add_argument("--num-points", type=_positive_int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_make_dataset)

    p = commands.add_parser("train-teacher", help="train a full-precision PointNet teacher (flow train-teacher)")
    p.add_argument("--dataset", required=True, help="dataset directory (npz or ModelNet40 HDF5 layout)")
    p.add_argument("--out", required=True, help="checkpoint path to write")
    p.add_argument("--num-points", type=_positive_int, default=1024, help="first points of each shape used")
    p.add_argument("--point-widths", type=_int_list, default=[64, 64, 64, 128, 1024])
    p.add_argument("--head-widths", type=_int_list, default=[512, 256])
    p.add_argument("--input-transform", action="store_true", help="add the input T-Net")
    p.add_argument("--feature-transform", action="store_true", help="add the feature T-Net")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    kernel_argument(p)
    existing_arguments(p, "teacher")
    p.set_defaults(run=_train_teacher)

    p = commands.add_parser("record-teacher", help="record a teacher into a Zarr store (flow record-teacher)")
    p.add_argument("--teacher", required=True, help="teacher checkpoint path or URL")
    p.add_argument("--dataset", required=True, help="dataset directory; its train split is recorded")
    p.add_argument("--store", required=True, help="record store path or fsspec URL (created or resumed)")
    p.add_argument("--augmentations", type=int, default=10, help="augmentations per shape (A)")
    p.add_argument("--chunk-shapes", type=int, default=256, help="shapes per chunk = per unit of work (coarse)")
    p.add_argument("--seed", type=int, default=0, help="seed of the augmentation parameters")
    p.add_argument("--num-points", type=_positive_int, default=None, help="default: the teacher's training value")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--batch-size", type=int, default=256, help="clouds per teacher forward pass")
    p.add_argument("--dask-address", default=None, help="scheduler of an existing Dask cluster")
    p.add_argument("--workers", type=int, default=2,
                   help="worker processes of the local Dask cluster; 0 = run in this process")
    p.add_argument("--catalog", default=None, help="catalog root (default $POINTDISTILL_CATALOG or store/catalog)")
    p.set_defaults(run=_record_teacher)

    def loss_arguments(p, kd_weight: float, reg_weight: float, self_weight: float) -> None:
        p.add_argument("--kd-weight", type=float, default=kd_weight, help="lambda: weight of KD vs CE (0 = off)")
        p.add_argument("--temperature", type=float, default=2.0, help="KD temperature T")
        p.add_argument("--reg-weight", type=float, default=reg_weight,
                       help="eta: weight of the pooling regulariser (0 = off)")
        p.add_argument("--regularizer", default="matrix-1",
                       choices=["frobenius", "matrix-1", "matrix-2", "entrywise-l1", "nuclear", "matrix-inf"])
        p.add_argument("--self-weight", type=float, default=self_weight,
                       help="w of negative-weight self-distillation (0 = off)")

    p = commands.add_parser("train-student", help="train a binary student by replaying a store (flow train-student)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--store", help="record store path or URL (read-only)")
    source.add_argument("--teacher-sha", help="find the store in the catalog: teacher weights sha256 (prefix)")
    p.add_argument("--dataset-fingerprint", help="with --teacher-sha: dataset fingerprint (prefix)")
    p.add_argument("--catalog", default=None, help="catalog root (default $POINTDISTILL_CATALOG or store/catalog)")
    p.add_argument("--dataset", required=True, help="the dataset directory the store was recorded on")
    p.add_argument("--out", required=True, help="output directory: student.pt, metrics.parquet, curves.png")
    p.add_argument("--quantizer", default="lsr", choices=["bnn", "xnor", "irnet", "lsr", "bireal"])
    p.add_argument("--aggregation", default="ema", choices=["max", "ema"])
    p.add_argument("--point-widths", type=_int_list, default=None, help="default: the teacher's")
    p.add_argument("--head-widths", type=_int_list, default=None, help="default: the teacher's")
    loss_arguments(p, kd_weight=0.0, reg_weight=0.0, self_weight=0.0)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--seed", type=int, default=0)
    kernel_argument(p)
    p.add_argument("--online-teacher", default=None, help="baseline: run this teacher live instead of replaying")
    p.add_argument("--use-completed-part", action="store_true", help="train on an incomplete store's done chunks")
    existing_arguments(p, "student run")
    p.set_defaults(run=_train_student)

    p = commands.add_parser("ablation", help="the paper's ablation grid from one store (flow ablation)")
    p.add_argument("--store", required=True)
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True, help="output directory: ablation.md, ablation.parquet, ablation.png")
    loss_arguments(p, kd_weight=0.5, reg_weight=0.01, self_weight=0.1)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quantizers", type=lambda t: t.split(","), default=["bnn", "irnet", "xnor", "lsr"])
    p.add_argument("--aggregations", type=lambda t: t.split(","), default=["max", "ema"])
    p.add_argument("--dask-address", default=None)
    p.add_argument("--workers", type=int, default=2, help="parallel runs on a local Dask cluster; 0 = in-process")
    existing_arguments(p, "student run")
    p.set_defaults(run=_ablation)

    p = commands.add_parser("serve", help="serve the flows as deployments <flow>/local on the Prefect server "
                                          "at PREFECT_API_URL, until interrupted")
    p.add_argument("--name", default="local", help="deployment name")
    p.add_argument("--limit", type=int, default=None, help="most flow runs executed at once")
    p.set_defaults(run=_serve)

    p = commands.add_parser("export", help="fold a binary student into a bit-packed .pdbn model file")
    p.add_argument("student", help="student checkpoint (train-student's student.pt)")
    p.add_argument("-o", "--out", required=True, help="model file to write (.pdbn)")
    p.set_defaults(run=_export)

    p = commands.add_parser("predict", help="classify point clouds with an exported model (pointdistill.engine)")
    p.add_argument("model", help="exported model file (.pdbn)")
    p.add_argument("input", help="dataset directory, .npy ([B, N, 3] or [N, 3]) or .npz (points, labels)")
    p.add_argument("--split", default="test", help="with a dataset directory: the split to classify")
    p.add_argument("--num-points", type=_positive_int, default=None, help="default: the student's training value")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", default=None, help="CSV of predictions (default: print the first 20)")
    p.set_defaults(run=_predict)

    p = commands.add_parser("store", help="record store utilities")
    store_commands = p.add_subparsers(dest="store_command", required=True)
    s = store_commands.add_parser("summary", help="sizes, completeness, teacher accuracy on the records")
    s.add_argument("uri")
    s.add_argument("--json", action="store_true")
    s.set_defaults(run=_store_summary)
    s = store_commands.add_parser("inspect", help="attributes, sizes per array, teacher accuracy and agreement")
    s.add_argument("uri")
    s.add_argument("--json", action="store_true")
    s.set_defaults(run=_store_inspect)
    s = store_commands.add_parser("ls", help="record stores in the catalog")
    s.add_argument("--teacher", default=None, help="model name or weights sha256 prefix")
    s.add_argument("--dataset", default=None, help="dataset name or fingerprint prefix")
    s.add_argument("--catalog", default=None)
    s.add_argument("--json", action="store_true")
    s.set_defaults(run=_store_ls)
    s = store_commands.add_parser("register", help="add a store made elsewhere to the catalog")
    s.add_argument("uri")
    s.add_argument("--catalog", default=None)
    s.set_defaults(run=_store_register)
    s = store_commands.add_parser("verify", help="read every chunk (checksums); optionally re-run the teacher")
    s.add_argument("uri")
    s.add_argument("--teacher", default=None, help="teacher checkpoint: re-run it on --sample random records")
    s.add_argument("--dataset", default=None, help="the dataset the store was recorded on (with --teacher)")
    s.add_argument("--sample", type=int, default=32)
    s.add_argument("--json", action="store_true")
    s.set_defaults(run=_store_verify)
    return parser


STOP_GRACE_S = 10.0  # after SIGINT/SIGTERM, the time a command has to clean up before it is ended


def _stop(signum, frame):
    """SIGINT and SIGTERM stop a command cleanly, through its ``finally`` blocks (the temporary
    server is stopped, logs delivered); should cleanup hang (e.g. a client retrying a server
    that is gone), the process ends after STOP_GRACE_S anyway: a run's state on disk is always
    whole, and the temporary server dies with this process."""
    from flows.runtime import SERVER_GONE

    # The server watchdog interrupts with SIGINT too: then the flow engine's crash report needs
    # its (few) client retries before the command can name the error.
    timer = threading.Timer(3 * STOP_GRACE_S if SERVER_GONE.is_set() else STOP_GRACE_S, os._exit,
                            args=(128 + signum,))
    timer.daemon = True
    timer.start()
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from flows.runtime import ServerGone
    from pointdistill.data import DatasetError
    from pointdistill.models import CheckpointError
    from pointdistill.records import RecordStoreError
    from pointdistill.engine import ExportError, ModelFileError
    from pointdistill.run_directory import DiskFullError, RunDirectoryError
    from pointdistill.storage import StorageConfigError
    from pointdistill.train import TrainingDiverged

    signal.signal(signal.SIGTERM, _stop)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when started with SIGINT ignored
        signal.signal(signal.SIGINT, _stop)
    try:
        status = args.run(args)
    except (DatasetError, CheckpointError, RecordStoreError, StorageConfigError, ExportError, ModelFileError,
            RunDirectoryError, DiskFullError, TrainingDiverged, ServerGone, ValueError) as error:
        # ValueError: the configs' own checks (e.g. LossConfig.reg_weight must be a finite number)
        print(f"pointdistill: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        name = str(interrupt) or "SIGINT"
        print(f"pointdistill: stopped by {name}. Training runs continue from their last finished epoch "
              f"with --resume; record-teacher continues its store when run again", file=sys.stderr)
        return 128 + signal.Signals[name].value
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
