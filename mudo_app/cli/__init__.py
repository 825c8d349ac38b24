"""The ``muduo`` command. Each sub-command lives in its own module and registers itself here.

Exit codes: 0 success, 2 bad input (a message on stderr names the problem), 1 unexpected failure.
"""

from __future__ import annotations

import argparse
import sys

from mudo_app import __version__
from mudo_app.cli import benchmark, data, evaluate, predict, teachers, train
from mudo_app.errors import InputError

COMMAND_MODULES = (data, teachers, train, predict, evaluate, benchmark)


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except InputError as exc:
        print(f"muduo {args.command}: error: {exc}", file=sys.stderr)
        return 2


def entry_point() -> None:
    sys.exit(main())
