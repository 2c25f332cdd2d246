"""Datasets: generated shapes, ModelNet40 readers, fingerprints."""

from pointdistill.data.generated import SHAPE_CLASSES, write_generated_dataset
from pointdistill.data.modelnet import load_dataset, write_npz_split
from pointdistill.data.pointcloud import DatasetError, PointCloudSet, dataset_fingerprint

__all__ = [
    "SHAPE_CLASSES", "DatasetError", "PointCloudSet", "dataset_fingerprint", "load_dataset",
    "write_generated_dataset", "write_npz_split",
]
