"""The command's flow options come from the flows' signatures (one declaration per parameter),
and bad input is refused in one line, exit 2, before Prefect or torch is loaded."""

import importlib
import inspect
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from flows.cli import FLOW_COMMANDS, build_parser, main
from flows.signature import REQUIRED, read_flow_signature
from pointdistill import choices

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", sorted(FLOW_COMMANDS))
def test_the_signature_read_from_source_is_the_one_prefect_sees(command):
    module, _ = FLOW_COMMANDS[command]
    signature = read_flow_signature(module)
    flow = getattr(importlib.import_module(module), signature.function_name)
    assert flow.name == signature.flow_name
    hints = typing.get_type_hints(flow.fn, include_extras=True)
    real = [(name, repr(hints[name]), REQUIRED if p.default is p.empty else p.default)  # FieldInfo: no __eq__
            for name, p in inspect.signature(flow.fn).parameters.items()]
    assert [(p.name, repr(p.annotation), p.default) for p in signature.parameters] == real


@pytest.mark.parametrize("command", sorted(FLOW_COMMANDS))
def test_the_help_texts_are_the_deployment_parameter_descriptions(command):
    from prefect.utilities.callables import parameter_schema

    module, _ = FLOW_COMMANDS[command]
    signature = read_flow_signature(module)
    flow = getattr(importlib.import_module(module), signature.function_name)
    properties = parameter_schema(flow).properties  # what `serve` registers and the UI shows
    assert {p.name: p.help for p in signature.parameters} == {
        name: schema.get("description", "") for name, schema in properties.items()}
    assert flow.description.startswith(signature.description)


@pytest.mark.parametrize("command", sorted(FLOW_COMMANDS))
def test_every_flow_parameter_is_an_option_with_help(command):
    signature = read_flow_signature(FLOW_COMMANDS[command][0])
    subparser = build_parser()._subparsers._group_actions[0].choices[command]
    options = {action.dest: action for action in subparser._actions}
    for parameter in signature.parameters:
        if parameter.name == "progress":
            continue
        assert parameter.help, f"{command}: {parameter.name} has no help text"
        assert parameter.name in options, f"{command}: {parameter.name} is not an option"
        if not parameter.required and parameter.default not in (None, False):
            assert "(default: " in options[parameter.name].help


def _run_cli(args: list[str]) -> tuple[int, str, list[str]]:
    """Run main(args) in a fresh interpreter: exit status, stderr, and which heavy modules loaded."""
    script = ("import sys, json\nfrom flows.cli import main\ntry:\n    rc = main(json.loads(sys.argv[1]))\n"
              "except SystemExit as e:\n    rc = e.code\n"
              "print(json.dumps([rc, [m for m in ('torch', 'prefect') if m in sys.modules]]))")
    result = subprocess.run([sys.executable, "-c", script, json.dumps(args)], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    rc, loaded = json.loads(result.stdout.strip().splitlines()[-1])
    return rc, result.stderr, loaded


@pytest.mark.parametrize("args, message", [
    (["train-student", "--dataset", "/no/such/dir", "--out", "o", "--store", "s"], "--dataset: /no/such/dir does not exist"),
    (["train-student", "--dataset", ".", "--out", "o", "--store", ".", "--epochs", "0"], "--epochs: input should be greater than or equal to 1"),
    (["train-student", "--dataset", ".", "--out", "o", "--store", ".", "--reg-weight", "inf"], "--reg-weight: input should be a finite number"),
    (["train-student", "--dataset", ".", "--out", "o", "--store", ".", "--quantizer", "lsq"], "'lsq' is not one of bnn, xnor"),
    (["train-student", "--dataset", ".", "--out", "o", "--store", ".", "--dropout", "1"], "--dropout: input should be less than 1"),
    (["train-student", "--dataset", ".", "--out", "o", "--store", ".", "--weight-decay", "-0.001"], "--weight-decay: input should be greater than or equal to 0"),
    (["train-student", "--dataset", ".", "--out", "o", "--store", ".", "--weight-decay", "-1e-4"], "--weight-decay: input should be greater than or equal to 0 (got -0.0001)"),
    (["train-student", "--dataset", ".", "--out", "o", "--store", ".", "--average-from", "-1"], "--average-from: input should be greater than or equal to 0"),
    (["train-student", "--dataset", ".", "--out", "o"], "one of --store --teacher-sha is required"),
    (["train-teacher", "--dataset", ".", "--out", "o", "--point-widths", "64,0"], "--point-widths: input should be greater than or equal to 1"),
    (["record-teacher", "--teacher", "t.pt", "--dataset", ".", "--store", "s"], "--teacher: t.pt does not exist"),
    (["ablation", "--store", ".", "--dataset", ".", "--out", "o", "--aggregations", "max,mean"], "'mean' is not one of max, ema"),
])
def test_bad_input_is_one_line_exit_2_before_anything_heavy_loads(args, message):
    rc, stderr, loaded = _run_cli(args)
    assert rc == 2
    assert len(stderr.strip().splitlines()) == 1 and message in stderr, stderr
    assert loaded == [], f"{loaded} imported before the input was checked"


def test_names_are_case_insensitive_and_values_reach_the_flow_typed():
    args = build_parser().parse_args(["train-student", "--dataset", ".", "--out", "o", "--store", ".",
                                      "--quantizer", "LSR", "--aggregation", "EMA", "--point-widths", "64,128",
                                      "--shortcuts", "--head-shortcuts", "--learned-thresholds"])
    from flows.cli import _checked_flow_parameters

    params = _checked_flow_parameters(args, args.parser)
    assert params["quantizer"] == "lsr" and params["aggregation"] == "ema"
    assert params["point_widths"] == [64, 128] and params["epochs"] == 20 and params["resume"] is False
    assert params["shortcuts"] is True and params["head_shortcuts"] is True and params["learned_thresholds"] is True


def test_version_and_bare_command(capsys):
    from pointdistill import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"pointdistill {__version__}"
    assert main([]) == 0
    assert "train-student" in capsys.readouterr().out


def test_every_declared_name_is_registered_and_undeclared_names_are_refused():
    from pointdistill.binary import AGGREGATIONS, QUANTIZERS, register_quantizer
    from pointdistill.losses import POOLING_NORMS
    from pointdistill.models import MODELS

    assert tuple(QUANTIZERS) == choices.QUANTIZER_NAMES
    assert tuple(AGGREGATIONS) == choices.AGGREGATION_NAMES
    assert tuple(POOLING_NORMS) == choices.POOLING_NORM_NAMES
    assert all(MODELS[name].config_cls.from_teacher_options is not None for name in choices.TEACHER_NAMES)
    assert all(f"binary_{name}" in MODELS for name in choices.STUDENT_BACKBONE_NAMES)
    with pytest.raises(ValueError, match="not declared in pointdistill/choices.py"):
        register_quantizer("my-quantizer")


def test_command_line_options_override_the_config_file(tmp_path):
    from flows.cli import _checked_flow_parameters, _parse

    config = tmp_path / "run.yaml"
    config.write_text("command: train-student\ndataset: .\nstore: .\nout: o\nquantizer: XNOR\nepochs: 7\n"
                      "point-widths: [64, 128]\n")
    args = _parse(build_parser(), ["train-student", "--config", str(config), "--epochs", "3"])
    params = _checked_flow_parameters(args, args.parser)
    assert params["quantizer"] == "xnor" and params["epochs"] == 3 and params["point_widths"] == [64, 128]


@pytest.mark.parametrize("content, message", [
    ("command: train-teacher\nbogus: 1\n", "unknown parameter 'bogus' for train-teacher"),
    ("command: train-student\n", "a configuration of train-student, not of train-teacher"),
    ("- 1\n", "expected a mapping of parameter names to values"),
    ("epochs: [\n", "not valid YAML"),
    ("dataset: .\nout: o\nepochs: -1\n", "--epochs: input should be greater than or equal to 1"),
])
def test_a_bad_config_file_is_one_line_naming_it(tmp_path, content, message):
    config = tmp_path / "run.yaml"
    config.write_text(content)
    rc, stderr, loaded = _run_cli(["train-teacher", "--config", str(config)])
    assert rc == 2 and len(stderr.strip().splitlines()) == 1 and message in stderr, stderr
    assert loaded == []


def test_a_run_writes_its_resolved_config_and_that_file_reruns_it(shapes_dir, tmp_path, capsys):
    out = tmp_path / "teacher.pt"
    args = ["--dataset", shapes_dir, "--out", str(out), "--num-points", "64", "--point-widths", "8,8,8,16,32",
            "--head-widths", "16,8", "--epochs", "1", "--device", "cpu"]
    assert main(["train-teacher", *args]) == 0
    first = capsys.readouterr()
    written = tmp_path / "teacher.pt.config.yaml"
    assert f"config   {written}" in first.out
    assert "epoch 1/1" in first.err and "ETA" in first.err  # one line per epoch, without a terminal
    assert main(["train-teacher", "--config", str(written), "--overwrite"]) == 0
    second = capsys.readouterr()
    accuracy = [line for line in first.out.splitlines() if line.startswith("teacher ")]
    assert accuracy == [line for line in second.out.splitlines() if line.startswith("teacher ")]
