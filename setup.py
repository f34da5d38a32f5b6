"""The build (metadata in setup.cfg); ``NATSPULL_COMPILE=1`` makes it the compiled build.

By default the wheel is pure Python. With ``NATSPULL_COMPILE=1`` in the environment, the modules
in ``COMPILED`` are compiled to C extensions by mypyc (as black and mypy ship themselves); the
pure sources stay in the wheel and every other module is the same. The compiler is needed only
then, together with mypy, setuptools and wheel in the build environment:

    pip install mypy setuptools wheel
    NATSPULL_COMPILE=1 pip install --no-build-isolation .

(``--no-build-isolation``: pip's isolated build environment has only what pyproject.toml asks
for, and the pure build needs no mypy.) ``nox -s compiled-3.12`` builds it and runs the tests
on it; benchmarks/README.md has its measurements.
"""

from __future__ import annotations

import os

from setuptools import setup

# The hot path on the loop thread and in next(): the frame parser, and the queue between them.
COMPILED = [
    "natspull/_transport/_parser.py",
    "natspull/_engine/_queue.py",
]


def _ext_modules() -> list[object]:
    if os.environ.get("NATSPULL_COMPILE", "") != "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        raise SystemExit(
            "NATSPULL_COMPILE=1 needs mypy (its mypyc) in the build environment: "
            "pip install mypy setuptools wheel, then pip install --no-build-isolation ..."
        ) from None
    # mypyc type-checks what the modules import; the optional extras need not be installed.
    return list(mypycify(["--ignore-missing-imports", *COMPILED], opt_level="3"))


setup(ext_modules=_ext_modules())
