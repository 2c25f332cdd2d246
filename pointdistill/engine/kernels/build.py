"""How the engine's kernels are compiled, by target architecture: read by setup.py (by path, before
the package is importable) and by the kernel-path tests that build the stand-alone harness.

No architecture's instruction flags are passed: the x86 paths use per-function target attributes
and are picked at run time, NEON is baseline on AArch64. -ffp-contract=off keeps float rounding
identical to the NumPy reference (no fused multiply-add)."""

FLAGS = ["-O3", "-ffp-contract=off", "-std=c11"]
DIRECTORY = "pointdistill/engine/kernels"
COMMON_SOURCES = ["scalar.c", "forward.c"]
HEADERS = ["kernels.h", "scalar_body.h", "real_body.h"]
ARCHITECTURE_SOURCES = {  # architecture -> (its kernel sources, the macro that names them)
    "x86_64": (["avx2.c", "avx512.c"], "POINTDISTILL_X86_KERNELS"),
    "aarch64": (["neon.c"], "POINTDISTILL_NEON_KERNELS"),
}
ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


def kernel_sources(machine: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(kernel source paths relative to the repository, define_macros) for ``platform.machine()``."""
    extra, macro = ARCHITECTURE_SOURCES.get(ALIASES.get(machine.lower(), machine.lower()), ([], None))
    return [f"{DIRECTORY}/{name}" for name in COMMON_SOURCES + extra], [(macro, "1")] if macro else []
