"""Helpers for tests of the command line (``core.cli``)."""
from __future__ import annotations

from core.cli import main


def run(capsys, *argv):
    """``prunescope ARGV...`` in this process: ``(exit code, stdout, stderr)``."""
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err
