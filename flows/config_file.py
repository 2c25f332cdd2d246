"""Run configurations as YAML files: read with ``--config FILE`` (command-line options override
them), and written by every run beside its outputs, resolved (every parameter, defaults
included), so that ``--config <that file>`` runs the same experiment again.

A file holds ``command`` (the command it belongs to) and flow parameters by name (``kd_weight``
or ``kd-weight``). The switches about the output location (``resume``, ``overwrite``) are not
written: they belong to one invocation, not to the experiment.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import yaml

from flows.signature import FlowSignature

NOT_WRITTEN = ("resume", "overwrite")


class ConfigFileError(ValueError):
    """A configuration file that cannot be used, naming the file and the key."""


def read_config(path: str, command: str, signature: FlowSignature) -> dict:
    """Parameter values from the YAML file at ``path`` for ``command``, keyed by parameter name.
    Values are checked later, like command-line ones."""
    try:
        with open(path, encoding="utf-8") as f:
            content = yaml.safe_load(f)
    except OSError as error:
        raise ConfigFileError(f"{path}: cannot be read ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise ConfigFileError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigFileError(f"{path}: expected a mapping of parameter names to values")
    values = {str(key).replace("-", "_"): value for key, value in content.items()}
    written_for = values.pop("command", command)
    if written_for != command:
        raise ConfigFileError(f"{path}: a configuration of {written_for}, not of {command}")
    known = [p.name for p in signature.options]
    for key in values:
        if key not in known:
            raise ConfigFileError(f"{path}: unknown parameter {key!r} for {command} (known: {', '.join(known)})")
    return values


def config_path(command: str, params: dict) -> str | None:
    """Where a run's resolved configuration goes: ``config.yaml`` inside an output directory
    (train-student, ablation), ``<file>.config.yaml`` beside a teacher checkpoint or a local
    record store; None for a store at a URL (its attributes describe the recording)."""
    if command in ("train-student", "ablation"):
        return str(Path(params["out"]) / "config.yaml")
    location = params["out"] if command == "train-teacher" else params["store"]
    return None if "://" in location else f"{location.rstrip('/')}.config.yaml"


def write_config(path: str, command: str, params: dict, version: str) -> None:
    """The resolved configuration of a finished run, as YAML at ``path`` (replacing any)."""
    values = {"command": command, **{k: v for k, v in params.items() if k not in NOT_WRITTEN}}
    header = (f"# pointdistill {command}, resolved configuration (pointdistill {version}, "
              f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}).\n"
              f"# Run it again: pointdistill {command} --config {Path(path).name} "
              f"(with another output location, or --overwrite)\n")
    from pointdistill.storage import write_bytes_atomically

    write_bytes_atomically(path, (header + yaml.safe_dump(values, sort_keys=False)).encode("utf-8"))
