"""The ``prunescope`` command line (also ``python -m core``).

Every command prints one JSON object (or list) with ``--json``, else a short table.
A person's mistake (any ``PrunescopeError``) exits with code 2 and one line on stderr;
anything else is a bug: exit 1 with the traceback.

Commands live in a registry (``common.py``): a module adds one with
``@command(name, help, arguments)``. ``basic.py`` (models, datasets, criteria,
evaluate, prune), ``surgery.py`` (blocks, cut, paste), ``recover.py`` (finetune, quantize),
``explain.py`` (explain, unit), ``diff.py`` (diff), ``sensitivity.py`` (sensitivity, autoplan), ``user.py``
(register, unregister) and ``export.py`` (apply, export) hold them.
"""
from __future__ import annotations

import argparse
import logging
import sys
import traceback

from core.cli import basic, diff, explain, export, recover, sensitivity, surgery, user  # noqa: F401 - register the commands
from core.cli.common import COMMANDS, UsageError, print_result
from core.errors import PrunescopeError, echo, first_line
from core.ground.memory import keep_freed_memory
from core.startup import register_all


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (``prog: error: ...``) and exit 2, no usage block."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message[:2000]} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="prunescope", description="Explore and prune PyTorch models.")
    parser.add_argument("--trust-pickles", action="store_true",
                        help="allow weights saved as full pickles or TorchScript archives (they run code from the "
                             "file when loaded: only for files you trust); default: safetensors and weights-only "
                             "state dicts")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, fn in COMMANDS.items():
        p = sub.add_parser(name, help=fn.cli_help, description=fn.cli_help)
        fn.cli_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input, 1 a bug)."""
    register_all()  # an entry point: the built-in kinds and the plug-ins (no torch)
    keep_freed_memory()  # evaluations reuse freed memory instead of faulting it in again
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its one-line message
        return int(exc.code or 0)
    if not args.command:
        parser.print_help()
        return 2
    if args.trust_pickles:  # read by core.sources.weights.trust_pickles (and inherited by `app`'s server)
        import os

        os.environ["PRUNESCOPE_TRUST_PICKLES"] = "1"
    fn = COMMANDS.get(args.command)
    # torch's CUDA builds log "No CUDA runtime is found, using CUDA_HOME=..." on a machine
    # without a GPU; it says nothing about the command's result, so the CLI stays quiet.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        out = fn(args)
    except PrunescopeError as exc:
        print(f"prunescope {args.command}: error: {first_line(exc)[:2000]}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 - a bug: show it as one
        print(f"prunescope {args.command}: internal error (a bug; please report it):", file=sys.stderr)
        traceback.print_exc()
        return 1
    try:
        print_result(out, getattr(args, "json", False))
        sys.stdout.flush()
    except BrokenPipeError:  # the reader closed early (`| head`): not an error
        sys.stdout = None  # nothing more to flush at exit
    return 0


__all__ = ["main", "build_parser", "UsageError", "COMMANDS", "echo"]
