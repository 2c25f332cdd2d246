"""The compiled parts of pointdistill (everything else is in pyproject.toml): the engine's
XNOR/popcount kernels and the binary point layer's training kernels. -ffp-contract=off keeps
float rounding identical to the NumPy reference."""

from setuptools import Extension, setup

FLAGS = ["-O3", "-ffp-contract=off", "-std=c11"]
HEADERS = ["pointdistill/cpu_features.h", "pointdistill/size_checks.h"]

setup(ext_modules=[
    Extension("pointdistill.engine._kernels", ["pointdistill/engine/_kernels.c"], depends=HEADERS,
              extra_compile_args=FLAGS),
    Extension("pointdistill.binary._point_kernels", ["pointdistill/binary/_point_kernels.c"], depends=HEADERS,
              extra_compile_args=FLAGS),
])
