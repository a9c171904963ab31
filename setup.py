"""Build the Cython hot path (src/claimcore/_fast/*.pyx).

Everything else is declared in pyproject.toml. Set CLAIMCORE_DEBUG_BUILD=1 for
bounds and overflow checks in the compiled modules. CLAIMCORE_NO_EXTENSIONS
(any value but empty or 0) skips compiling, and so does any Python but CPython;
the pure-Python twins are used. The .pxd files hold inline code that .pyx files
cimport (``cimport claimcore._fast._gcra``): no module of their own, but each extension
depends on them.
"""

import os
import sys
from pathlib import Path

from setuptools import Extension, setup

FAST = Path("src/claimcore/_fast")


def extensions():
    no_extensions = os.environ.get("CLAIMCORE_NO_EXTENSIONS", "") not in ("", "0")
    if no_extensions or sys.implementation.name != "cpython":  # same rule as claimcore._fast
        return []
    from Cython.Build import cythonize

    debug = bool(os.environ.get("CLAIMCORE_DEBUG_BUILD"))
    inline = [str(pxd) for pxd in sorted(FAST.glob("*.pxd"))]
    modules = [
        Extension(f"claimcore._fast.{pyx.stem}", [str(pyx)], depends=inline, extra_compile_args=["-O2"])
        for pyx in sorted(FAST.glob("*.pyx"))
    ]
    return cythonize(
        modules,
        include_path=["src"],  # cimports resolve by package path (claimcore/_fast/*.pxd)
        language_level=3,
        compiler_directives={
            "boundscheck": debug,
            "wraparound": debug,
            "overflowcheck": debug,
            "cdivision": not debug,
        },
    )


setup(ext_modules=extensions())
