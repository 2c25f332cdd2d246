"""Released models: a directory of checkpoints and exported .pdbn files with a manifest.

The zoo is the repository's ``models/`` (or ``$POINTDISTILL_ZOO``); nothing is downloaded.
``models/manifest.json``::

    {"format": "pointdistill.zoo", "version": 1,
     "models": {NAME: {"file": "NAME.pt" | "NAME.pdbn", "sha256": HEX, "bytes": INT,
                       "description": STR, "command": STR (how it was made),
                       "dataset": {"name", "fingerprint", "num_points"}, "store": {...} | null,
                       "accuracy": {"test_overall_accuracy", "test_mean_class_accuracy", "num_points",
                                    "epoch": "final"}}}}

``load_pretrained(NAME)`` checks the file's SHA-256 against the manifest before loading it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

ZOO_FORMAT = "pointdistill.zoo"
ZOO_VERSION = 1
MANIFEST = "manifest.json"


class ZooError(ValueError):
    """A released model that is unknown, missing, or whose bytes differ from the manifest's."""


def zoo_root() -> Path:
    """``$POINTDISTILL_ZOO``, else the ``models/`` directory of this checkout."""
    return Path(os.environ.get("POINTDISTILL_ZOO") or Path(__file__).resolve().parents[1] / "models")


def read_manifest(root: str | Path | None = None) -> dict:
    """The manifest's ``models`` mapping (empty when the zoo has no manifest)."""
    path = Path(root or zoo_root()) / MANIFEST
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ZooError(f"{path}: unreadable manifest ({type(error).__name__}: {error})") from error
    if not isinstance(manifest, dict) or manifest.get("format") != ZOO_FORMAT:
        raise ZooError(f"{path}: not a pointdistill zoo manifest")
    if manifest.get("version") != ZOO_VERSION:
        raise ZooError(f"{path}: manifest version {manifest.get('version')!r}, this pointdistill reads {ZOO_VERSION}")
    return manifest["models"]


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verified_file(name: str, root: str | Path | None = None) -> Path:
    """The path of released model ``name`` after checking its size and SHA-256."""
    root = Path(root or zoo_root())
    models = read_manifest(root)
    if name not in models:
        known = ", ".join(sorted(models)) or "none"
        raise ZooError(f"no released model {name!r} in {root} (released: {known})")
    entry = models[name]
    path = root / entry["file"]
    if not path.is_file():
        raise ZooError(f"{path}: the file of released model {name!r} is missing")
    if path.stat().st_size != entry["bytes"] or sha256_of(path) != entry["sha256"]:
        raise ZooError(f"{path}: its bytes differ from the manifest's (sha256 {entry['sha256'][:12]}...); "
                       f"the file is damaged or was replaced")
    return path


def load_pretrained(name: str, device: str = "cpu", root: str | Path | None = None):
    """Released model ``name``, verified: a checkpoint as a Classifier (``model(points)`` ->
    logits) on ``device``, a ``.pdbn`` as the bit-packed Engine (``engine(points)`` -> logits)."""
    from pointdistill.api import load_engine, load_model

    path = verified_file(name, root)
    return load_engine(str(path)) if path.suffix == ".pdbn" else load_model(str(path), device)


def write_manifest_entry(root: str | Path, name: str, file: str, description: str, command: str,
                         accuracy: dict, dataset: dict, store: dict | None = None) -> dict:
    """Add or replace model ``name`` (its file already under ``root``) in the manifest."""
    from pointdistill.storage import write_bytes_atomically

    root = Path(root)
    models = read_manifest(root)
    path = root / file
    models[name] = {"file": file, "sha256": sha256_of(path), "bytes": path.stat().st_size,
                    "description": description, "command": command, "dataset": dataset, "store": store,
                    "accuracy": accuracy}
    manifest = {"format": ZOO_FORMAT, "version": ZOO_VERSION, "models": dict(sorted(models.items()))}
    write_bytes_atomically(root / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return models[name]


def release(name: str, source: str | Path, description: str, command: str, checkpoint: str | Path | None = None,
            root: str | Path | None = None) -> dict:
    """Copy ``source`` (a checkpoint .pt or an exported .pdbn) into the zoo as ``name`` plus its
    suffix and enter it in the manifest, with the dataset and the final-epoch test accuracy read
    from ``checkpoint`` (default: ``source`` itself; for a .pdbn, the student checkpoint it was
    exported from) and, for a student, its record store by fingerprint (the store must still be
    readable at its recorded path). Returns the manifest entry."""
    import shutil

    from pointdistill.models import load_checkpoint
    from pointdistill.records.schema import open_store, store_fingerprint
    from pointdistill.records.summary import stored_bytes

    root, source = Path(root or zoo_root()), Path(source)
    trained = load_checkpoint(str(checkpoint or source))
    metrics = trained.metrics
    accuracy = {"test_overall_accuracy": metrics["test_overall_accuracy"],
                "test_mean_class_accuracy": metrics["test_mean_class_accuracy"],
                "num_points": trained.dataset["num_points"], "epoch": "final",
                "epochs": metrics["epochs"] if "epochs" in metrics else len(metrics["history"])}
    store = None
    if "records" in metrics:
        group = open_store(metrics["records"]["store"])
        attrs = group.attrs.asdict()
        records = attrs["dataset"]["num_shapes"] * attrs["augmentations_per_shape"]
        store = {"fingerprint": store_fingerprint(attrs), "teacher_sha256": attrs["teacher"]["weights_sha256"],
                 "augmentations_per_shape": attrs["augmentations_per_shape"], "records": records,
                 "bytes_per_record": stored_bytes(group)["total"] / records}
    file = name + source.suffix
    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, root / file)
    return write_manifest_entry(root, name, file, description, command, accuracy, dict(trained.dataset), store)
