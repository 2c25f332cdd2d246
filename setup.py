"""The compiled parts of pointdistill (everything else is in pyproject.toml): the engine's
XNOR/popcount kernels (sources chosen by architecture in pointdistill/engine/kernels/build.py),
the binary point layer's training kernels, PointNet++'s neighbourhood kernels and DGCNN's fused
EdgeConv reductions (OpenMP)."""

import platform
import runpy
from pathlib import Path

from setuptools import Extension, setup

build = runpy.run_path(str(Path(__file__).parent / "pointdistill/engine/kernels/build.py"))
HEADERS = ["pointdistill/cpu_features.h", "pointdistill/size_checks.h"]
kernel_sources, kernel_macros = build["kernel_sources"](platform.machine())

setup(ext_modules=[
    Extension("pointdistill.engine._kernels", ["pointdistill/engine/_kernels.c", *kernel_sources],
              depends=[*HEADERS, *(f"{build['DIRECTORY']}/{h}" for h in build["HEADERS"])],
              define_macros=kernel_macros, extra_compile_args=build["FLAGS"]),
    # OpenMP: the slices run on the libgomp torch already loaded (the same soname), i.e. on torch's threads
    Extension("pointdistill.binary._point_kernels", ["pointdistill/binary/_point_kernels.c"], depends=HEADERS,
              extra_compile_args=[*build["FLAGS"], "-fopenmp"], extra_link_args=["-fopenmp"]),
    # farthest point sampling and ball query for PointNet++ on the CPU (OpenMP, as above)
    Extension("pointdistill.models._neighbourhood", ["pointdistill/models/_neighbourhood.c"], depends=HEADERS,
              extra_compile_args=[*build["FLAGS"], "-fopenmp"], extra_link_args=["-fopenmp"]),
    # DGCNN's fused EdgeConv: the reductions over each point's neighbours (OpenMP, as above)
    Extension("pointdistill.models._edge_conv", ["pointdistill/models/_edge_conv.c"], depends=HEADERS,
              extra_compile_args=[*build["FLAGS"], "-fopenmp"], extra_link_args=["-fopenmp"]),
])
