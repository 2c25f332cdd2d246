"""Bit-packed inference of exported binary students on the CPU: the model file, the exporter,
a NumPy reference engine and the compiled XNOR/popcount kernels."""

from pointdistill.engine.export import ExportError, export_student
from pointdistill.engine.model_file import BinaryNetwork, ModelFileError, load_network, save_network
from pointdistill.engine.runtime import Engine, available_kernels

__all__ = ["BinaryNetwork", "Engine", "ExportError", "available_kernels", "ModelFileError", "export_student", "load_network", "save_network"]
