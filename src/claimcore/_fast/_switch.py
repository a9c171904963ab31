"""The one switch between the Cython modules and their twins, read by every selector.

Set CLAIMCORE_NO_EXTENSIONS to a non-empty value other than "0" to force the twins; any
Python but CPython uses the twins too (as propcache and yarl do: the Cython modules target
CPython's C API). It lives apart from the package face so the selectors can read it without
importing the package that imports them (aiohttp keeps its NO_EXTENSIONS in helpers.py).
"""

import os
import sys

NO_EXTENSIONS: bool = (
    sys.implementation.name != "cpython" or os.environ.get("CLAIMCORE_NO_EXTENSIONS", "") not in ("", "0")
)
