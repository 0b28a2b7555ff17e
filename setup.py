"""Build the Cython fast path: one extension per stackpep/_fast/*.pyx.

STACKPEP_EXT=wire,checksum limits the build to the named modules (for quick
iteration); unset builds all of them.
"""
import glob
import os

from setuptools import Extension, setup

try:
    from Cython.Build import cythonize
except ImportError as exc:  # pragma: no cover - build requirement
    raise SystemExit("building stackpep needs Cython>=3 (pip install cython)") from exc

only = {m for m in os.environ.get("STACKPEP_EXT", "").split(",") if m}
extensions = []
for pyx in sorted(glob.glob(os.path.join("stackpep", "_fast", "*.pyx"))):
    name = os.path.splitext(os.path.basename(pyx))[0]
    if only and name not in only:
        continue
    extensions.append(
        Extension(
            f"stackpep._fast.{name}",
            [pyx],
            extra_compile_args=["-O3", "-fno-strict-aliasing"],
        )
    )

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
            "embedsignature": True,
        },
    ),
)
