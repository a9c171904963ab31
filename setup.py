"""Build the Cython hot path (src/claimcore/_fast/*.pyx).

Everything else is declared in pyproject.toml. Set CLAIMCORE_DEBUG_BUILD=1 for
bounds and overflow checks in the compiled modules. CLAIMCORE_NO_EXTENSIONS
(any value but empty or 0) skips compiling; the pure-Python twins are used.
"""

import os
from pathlib import Path

from setuptools import Extension, setup

FAST = Path("src/claimcore/_fast")


def extensions():
    if os.environ.get("CLAIMCORE_NO_EXTENSIONS", "") not in ("", "0"):  # same rule as claimcore._fast
        return []
    from Cython.Build import cythonize

    debug = bool(os.environ.get("CLAIMCORE_DEBUG_BUILD"))
    modules = [
        Extension(f"claimcore._fast.{pyx.stem}", [str(pyx)], extra_compile_args=["-O2"])
        for pyx in sorted(FAST.glob("*.pyx"))
    ]
    return cythonize(
        modules,
        language_level=3,
        compiler_directives={
            "boundscheck": debug,
            "wraparound": debug,
            "overflowcheck": debug,
            "cdivision": not debug,
        },
    )


setup(ext_modules=extensions())
