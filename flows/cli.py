"""The `pointdistill` command: runs the flows with no Prefect server configured (a temporary
local one is started for the run), plus data and store utilities that need no Prefect."""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import signal
import sys
import threading

from flows.config_file import ConfigFileError, config_path, read_config, write_config
from flows.signature import FlowParameter, FlowSignature, read_flow_signature


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from error
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _make_dataset(args) -> None:
    from pointdistill.data import write_generated_dataset

    root = write_generated_dataset(args.out, args.train_per_class, args.test_per_class, args.num_points, args.seed)
    print(f"generated dataset written to {root}")


def _report_teacher(params: dict, metrics: dict) -> None:
    print(f"teacher {params['out']}: test overall accuracy {metrics['test_overall_accuracy']:.4f}, "
          f"mean-class accuracy {metrics['test_mean_class_accuracy']:.4f}")
    print(f"outputs  {', '.join(metrics['outputs'].values())}")


def _report_recording(params: dict, summary: dict) -> None:
    from pointdistill.records import format_summary

    print(format_summary(summary))


def _report_student(params: dict, summary: dict) -> None:
    sizes = summary["student_bytes"]
    teacher = summary["teacher_test_overall_accuracy"]
    best = summary["best_epoch_test_overall_accuracy (model selection on test, for comparison only)"]
    print(f"teacher  test OA {100 * teacher:.2f}%  ({summary['teacher_float_bytes']:,} bytes float32)")
    print(f"student  test OA {100 * summary['final_test_overall_accuracy']:.2f}% at the final epoch "
          f"(mean-class {100 * summary['final_test_mean_class_accuracy']:.2f}%); "
          f"best epoch {summary['best_epoch']}: {100 * best:.2f}% (selected on test, for comparison only)")
    averaged = summary.get("weights_averaged_over_epochs")
    if averaged:
        print(f"student  weights averaged over epochs {averaged[0]}..{averaged[1]}; the last epoch's own weights: "
              f"test OA {100 * summary['last_epoch_weights_test_overall_accuracy']:.2f}%")
    if sizes["packed_bytes"] is None:
        print(f"student  {sizes['float_bytes']:,} bytes as float32; no bit-packed model: {sizes['not_packed']}")
    else:
        print(f"student  {sizes['float_bytes']:,} bytes as float32, {sizes['packed_bytes']:,} bytes bit-packed "
              f"(the .pdbn that export writes, {sizes['float_bytes'] / sizes['packed_bytes']:.1f}x smaller)")
    print(f"outputs  {summary['outputs']['checkpoint']}, {summary['outputs']['metrics']}, {summary['outputs']['curves']}")


def _report_ablation(params: dict, result: dict) -> None:
    print(result["markdown"])
    print(f"written: {', '.join(result['paths'].values())}")


# command -> (flow module, what the command prints from the flow's result)
FLOW_COMMANDS = {
    "train-teacher": ("flows.train_teacher", _report_teacher),
    "record-teacher": ("flows.record_teacher", _report_recording),
    "train-student": ("flows.train_student", _report_student),
    "ablation": ("flows.ablation", _report_ablation),
}


QUIET_LOGGING = {  # the environment of a flow command without --verbose
    "PREFECT_LOGGING_LEVEL": "CRITICAL",  # the command reports errors itself, in one line
    "DASK_LOGGING__DISTRIBUTED": "error",
}


class _EpochLines(logging.Handler):
    """The library's epoch lines (pointdistill.progress) on stderr, clear of progress bars."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stderr)


def _run_flow(command: str, signature: FlowSignature, module: str, report, params: dict) -> None:
    """Import the flow (Prefect, torch: only now that the input is checked), run it on a
    temporary local Prefect server (progress bars only on a terminal, one line per epoch in
    logs), write its resolved configuration beside its outputs and print its result."""
    import importlib

    from flows.runtime import embedded_api
    from pointdistill import __version__

    lines = logging.getLogger("pointdistill.progress")
    lines.setLevel(logging.INFO)
    lines.propagate = False
    if not lines.handlers:
        lines.addHandler(_EpochLines())
    flow = getattr(importlib.import_module(module), signature.function_name)
    with embedded_api():
        result = flow(**params, progress=sys.stderr.isatty())
    report(params, result)
    written = config_path(command, params)
    if written:
        write_config(written, command, params, __version__)
        print(f"config   {written}")


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
    from pointdistill.engine.runtime import KERNEL_ENV, kernel_info, resolve_kernel

    if args.info:
        info = kernel_info()
        features = ", ".join(f"{name} {'yes' if seen else 'no'}" for name, seen in info["cpu_features"].items())
        print(f"CPU features seen: {features or 'none checked on this architecture'}")
        for name, state in info["paths"].items():
            print(f"kernel path {name:8s} {state}")
        print(f"kernel chosen: {resolve_kernel()} (auto: {info['auto']}; ${KERNEL_ENV} overrides)")
        if args.model is None:
            return
    if args.model is None or args.input is None:
        print("pointdistill predict: error: a model file and an input are required (or --info alone)", file=sys.stderr)
        raise SystemExit(2)
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


class CommandParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``pointdistill <command>: error: <what> (see --help)``, exit 2;
    a negative number in exponent form (``--weight-decay -1e-4``) is a value, as -0.1 is (Python
    3.11's argparse takes it for an option; later versions read it as this does)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _shown_default(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _converter(parameter: FlowParameter):
    """Text -> value of the parameter's type: whole numbers, numbers, names (case-insensitive
    where unambiguous) and comma-separated lists of them; constraints are checked afterwards."""
    scalar = parameter.item_type or parameter.value_type
    choices = parameter.choices

    def convert_one(text: str):
        if choices:
            matches = [c for c in choices if c.lower() == text.lower()]
            if text in choices:
                return text
            if len(matches) == 1:
                return matches[0]
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(choices)}")
        if scalar is int:
            try:
                return int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if scalar is float:
            try:
                return float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        return text

    def convert(text: str):
        if parameter.item_type is not None:
            return [convert_one(part) for part in text.split(",") if part]
        return convert_one(text)

    convert.__name__ = parameter.name  # argparse names the option's type in its messages
    return convert


def _add_flow_command(commands, command: str, module: str, report) -> None:
    """A subcommand whose options are the flow's parameters: name, type, default, help and
    constraints all read from the flow's signature (flows/signature.py)."""
    signature = read_flow_signature(module)
    p = commands.add_parser(command, help=f"{signature.description} (flow {signature.flow_name})",
                            description=signature.description)
    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for parameter in signature.options:
        target = p
        if parameter.group:
            if parameter.group.group not in groups:
                groups[parameter.group.group] = p.add_mutually_exclusive_group()
            target = groups[parameter.group.group]
        help_text = parameter.help
        if not parameter.required and parameter.default is not None and parameter.default is not False:
            help_text += f" (default: {_shown_default(parameter.default)})"
        if parameter.value_type is bool:
            action = argparse.BooleanOptionalAction if parameter.default is True else "store_true"
            target.add_argument(_flag(parameter.name), dest=parameter.name, action=action,
                                default=parameter.default, help=help_text)
            continue
        metavar = ("{" + ",".join(parameter.choices) + "}") if parameter.choices else parameter.name.upper()
        if parameter.item_type is not None:
            metavar += ",..."
        # Required-ness is checked after --config is merged (_checked_flow_parameters).
        target.add_argument(_flag(parameter.name), dest=parameter.name, type=_converter(parameter),
                            metavar=metavar, help=help_text + (" (required)" if parameter.required else ""),
                            default=None if parameter.required else parameter.default)
    p.add_argument("--config", metavar="FILE", help="YAML file of parameter values (options given here override "
                                                    "it); every run writes its resolved one beside its outputs")
    p.add_argument("--verbose", action="store_true", help="show Prefect's and Dask's logs")
    p.set_defaults(run=functools.partial(_run_flow, command, signature, module, report), flow_signature=signature,
                   parser=p)


def _checked_flow_parameters(args, parser: argparse.ArgumentParser) -> dict:
    """The flow's keyword arguments from the parsed options, each checked against its declared
    type and constraints; the first problem ends the command with a one-line error, before
    Prefect or torch is loaded."""
    params, groups = {}, {}
    for parameter in args.flow_signature.options:
        value = getattr(args, parameter.name)
        if parameter.required and value is None:
            parser.error(f"{_flag(parameter.name)} is required (on the command line or in --config)")
        try:
            params[parameter.name] = parameter.check(value)
        except ValueError as error:
            parser.error(f"{_flag(parameter.name)}: {error}")
        if parameter.group:
            groups.setdefault(parameter.group, []).append(parameter.name)
    for group, names in groups.items():  # also across the command line and --config
        given = [_flag(name) for name in names if params[name] not in (None, False)]
        if len(given) > 1:
            parser.error(f"{' and '.join(given)} exclude each other")
        if group.required and not given:
            parser.error(f"one of {' '.join(_flag(name) for name in names)} is required")
    return params


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; for a flow command with --config, the file's values become the defaults
    and the command line is parsed again over them."""
    args = parser.parse_args(argv)
    if getattr(args, "config", None) and hasattr(args, "flow_signature"):
        try:
            values = read_config(args.config, args.command, args.flow_signature)
        except ConfigFileError as error:
            args.parser.error(f"--config: {error}")
        args.parser.set_defaults(**values)
        args = parser.parse_args(argv)
    return args


def build_parser() -> argparse.ArgumentParser:
    from pointdistill import __version__

    parser = CommandParser(prog="pointdistill", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pointdistill {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("make-dataset", help="write the generated shapes dataset (npz layout)")
    p.add_argument("--out", required=True, help="directory to write train.npz, test.npz, classes.txt")
    p.add_argument("--train-per-class", type=int, default=40)
    p.add_argument("--test-per-class", type=int, default=10)
    p.add_argument("--num-points", type=_positive_int, default=1024)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_make_dataset)

    for command, (module, report) in FLOW_COMMANDS.items():
        _add_flow_command(commands, command, module, report)

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
    p.add_argument("model", nargs="?", help="exported model file (.pdbn)")
    p.add_argument("input", nargs="?", help="dataset directory, .npy ([B, N, 3] or [N, 3]) or .npz (points, labels)")
    p.add_argument("--info", action="store_true",
                   help="print the CPU features seen, every kernel path's state and the kernel chosen (alone: only that)")
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
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        parser.print_help()
        return 0
    args = _parse(parser, argv)
    if hasattr(args, "flow_signature"):
        params = _checked_flow_parameters(args, args.parser)
        if not args.verbose:  # before Prefect or Dask is imported: both read it once (Dask workers inherit it)
            for name, value in QUIET_LOGGING.items():
                os.environ.setdefault(name, value)
    from flows.runtime import ServerGone
    from pointdistill.data import DatasetError
    from pointdistill.models import CheckpointError
    from pointdistill.records import RecordStoreError
    from pointdistill.engine import ExportError, ModelFileError
    from pointdistill.run_directory import RunDirectoryError
    from pointdistill.storage import DiskFullError, StorageConfigError
    from pointdistill.epoch_totals import TrainingDiverged

    signal.signal(signal.SIGTERM, _stop)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when started with SIGINT ignored
        signal.signal(signal.SIGINT, _stop)
    try:
        status = args.run(params) if hasattr(args, "flow_signature") else args.run(args)
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
