"""``python -m natspull``: the natspull command line (see :mod:`natspull.cli`)."""

from natspull.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
