"""``python -m natspull``: the natspull command line (see :mod:`natspull.cli`)."""

from natspull.cli import main

if __name__ == "__main__":
    code = main()
    # A KeyboardInterrupt that main() caught may have passed through exec() of a string on
    # its way (a dataclass or namedtuple being created in a lazy import when the signal came).
    # CPython then keeps its "unhandled KeyboardInterrupt" flag set, and `python -m` would
    # exit by SIGINT (-2) instead of with *code*. Evaluating a string clears the flag
    # (run_eval_code_obj in Python/pythonrun.c, 3.9 to 3.13). The `natspull` script runs as a
    # file, whose exit path does not read the flag.
    exec("")
    raise SystemExit(code)
