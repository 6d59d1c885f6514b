"""Command line: ``python -m cam_core <command> ...`` (also installed as ``cam-core``).

Each command lives in the module that owns it; that module defines
``add_command(subparsers)`` which registers a sub-parser whose ``func(args)`` runs it, and checks
its arguments before any work starts (a bad one: one line naming the valid values, no traceback).
A ``ValueError`` or ``FileNotFoundError`` that still reaches :func:`main` (a bad input found later,
e.g. in a dataset's files) is printed as one line too; ``CAM_CORE_TRACEBACK=1`` shows its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

#: set (to anything but 0) to see the traceback of an error the command line reports in one line
TRACEBACK_ENV = "CAM_CORE_TRACEBACK"

# command modules, in the order `--help` lists them
COMMAND_MODULES = (
    "cam_core.book.demo",  # demo: explain a few images with every method, write a figure
    "cam_core.benchmarks.training",  # train: train/verify the embedded benchmark's CNNs
    "cam_core.book.explain",  # explain: your own photos on a pretrained EfficientNet-Lite
    "cam_core.evaluation.runner",  # evaluate: the paper's tables on any benchmark, resumable
    "cam_core.vqa.training",  # train-vqa: the embedded VQA model
    "cam_core.book.build",  # book: run every chapter with papermill and build the Jupyter Book
    "cam_core.book.course",  # course: release and grade the book's nbgrader assignments
)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``cam_core train: argument --benchmark: invalid choice:
    'x' (choose from ...); see --help``), not argparse's usage block first. Sub-parsers inherit it."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="cam_core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for mod in COMMAND_MODULES:
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name == mod:  # not written yet
                continue
            raise
        module.add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as stop:  # Ctrl-C: say what is kept (evaluate's message) instead of a traceback
        print(f"\n{args.command}: {stop or 'interrupted'}", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as err:  # bad input: its message names the problem and the fix
        if os.environ.get(TRACEBACK_ENV, "0") not in ("", "0"):
            raise
        print(f"{args.command}: {err} (set {TRACEBACK_ENV}=1 for the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
