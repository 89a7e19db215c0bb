"""The ``proctor`` command (the console script, and ``python -m proctor``).

``proctor run`` in its plain form is parsed and run by :mod:`proctor.cli_launch`
without loading the full command line (ADR 0022); everything else, ``proctor run
--help`` and every error message included, goes to :mod:`proctor.cli`.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from proctor.cli_launch import RunArgs

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``proctor`` console script."""
    argv = sys.argv[1:]
    if argv[:1] == ["run"]:
        from proctor.cli_launch import parse_run  # noqa: PLC0415

        parsed = parse_run(argv[1:], os.environ)
        if parsed is not None:
            sys.exit(_run(parsed))
    from proctor.cli import main as full  # noqa: PLC0415

    full()


def _run(parsed: RunArgs) -> int:
    """:func:`~proctor.cli_launch.run_governed`, ending as :mod:`proctor.cli` ends a
    command: Ctrl-C prints "Aborted!" and exits 1; a closed standard output (``| head``)
    exits 1 quietly."""
    from proctor.cli_launch import run_governed  # noqa: PLC0415

    try:
        return int(run_governed(parsed))
    except (KeyboardInterrupt, EOFError):
        sys.stderr.write("\nAborted!\n")
        return 1
    except OSError as e:
        if e.errno != errno.EPIPE:
            raise
        return 1


if __name__ == "__main__":
    main()
