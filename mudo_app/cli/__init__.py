"""The ``muduo`` command. Each sub-command lives in its own module and registers itself here.

Exit codes: 0 success, 2 bad input (a message on stderr names the problem), 1 unexpected failure.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from mudo_app import __version__
from mudo_app.cli import benchmark, data, evaluate, export, predict, teachers, train
from mudo_app.errors import InputError
from mudo_app.runtime.heap import keep_freed_memory
from mudo_app.runtime.imports import block_imports

COMMAND_MODULES = (data, teachers, train, predict, evaluate, export, benchmark)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors also exit 2
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="muduo", description="MuDuo PET/CT segmentation: data, training, inference.")
    parser.add_argument("--version", action="version", version=f"muduo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None, dedicated_process: bool = False) -> int:
    """Run one command; ``dedicated_process``: this process runs only this command, then exits (the
    console script), so packages the command declares it never uses (``unused_imports``) are blocked
    and, where it declares ``keep_freed_memory``, freed memory stays in the heap for reuse
    (:mod:`mudo_app.runtime.heap`)."""
    return _run(build_parser().parse_args(argv), dedicated_process)


def _run(args: argparse.Namespace, dedicated_process: bool) -> int:
    if dedicated_process:
        block_imports(getattr(args, "unused_imports", ()))
        if getattr(args, "keep_freed_memory", False):
            keep_freed_memory()
    with _core_logging_to_stderr(args.command):
        try:
            return int(args.run(args) or 0)
        except InputError as exc:
            print(f"muduo {args.command}: error: {exc}", file=sys.stderr)
            return 2


@contextmanager
def _core_logging_to_stderr(command: str) -> Iterator[None]:
    """The core logs (``logging.getLogger("mudo_app...")``); the command shows its warnings and info on stderr."""
    handler = logging.StreamHandler(sys.stderr)  # the stderr of this call (tests capture it)
    handler.setFormatter(logging.Formatter(f"muduo {command}: %(levelname)s: %(message)s"))
    core = logging.getLogger("mudo_app")
    level = core.level
    core.addHandler(handler)
    core.setLevel(logging.INFO)
    try:
        yield
    finally:
        core.removeHandler(handler)
        core.setLevel(level)


def entry_point() -> None:
    """The ``muduo`` console script. A command that declares ``exit_without_teardown`` (its outputs are
    written and synced when it returns) ends the process at once after flushing stdout, stderr and the
    logs: tearing down torch and MONAI's modules takes 0.6-1 s on 2 cores and serves nobody."""
    args = build_parser().parse_args()
    code = _run(args, dedicated_process=True)
    if getattr(args, "exit_without_teardown", False):
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    sys.exit(code)
