"""Small command-line helpers shared by the tools: comma-separated argument lists and a progress bar."""

from __future__ import annotations

import argparse
import sys


def comma_list(kind=str):
    """argparse `type`: 'a,b,c' -> [kind('a'), kind('b'), kind('c')]; a bad or missing item is a usage
    error (argparse prints it and exits with code 2)."""

    def parse(text: str) -> list:
        try:
            values = [kind(v) for v in text.split(",") if v]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from exc
        if not values:
            raise argparse.ArgumentTypeError("expected at least one value")
        return values

    parse.__name__ = f"comma-separated {kind.__name__} list"  # argparse names the type in its errors
    return parse


def progress_bar(label: str, fraction: float, width: int = 30) -> None:
    """One line that overwrites itself with a carriage return."""
    filled = int(width * min(max(fraction, 0.0), 1.0))
    print(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {100 * fraction:3.0f}%", end="", flush=True)


def run_reporting_errors(prog: str, run, args, errors: tuple[type[BaseException], ...],
                         after_progress: bool = False) -> int:
    """`run(args)`; an expected error (bad input: a bag, a model, a value) becomes one line on stderr
    and exit code 2, never a traceback. `after_progress`: start on a new line (a progress bar may be
    mid-line)."""
    try:
        return run(args)
    except errors as exc:
        print(f"{chr(10) if after_progress else ''}{prog}: error: {exc}", file=sys.stderr)
        return 2
