"""The compiled part of pointdistill: the engine's XNOR/popcount kernels (everything else is in
pyproject.toml). -ffp-contract=off keeps float rounding identical to the NumPy reference."""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "pointdistill.engine._kernels", ["pointdistill/engine/_kernels.c"],
    extra_compile_args=["-O3", "-ffp-contract=off", "-std=c11"],
)])
