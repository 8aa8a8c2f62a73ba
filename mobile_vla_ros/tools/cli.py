"""Small command-line helpers shared by the tools: comma-separated argument lists and a progress bar."""

from __future__ import annotations

import argparse
import sys
import time


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


PLAIN_PROGRESS_PERIOD = 10.0  # s between progress lines when stdout is a log file, not a terminal
_last_plain_line = [float("-inf")]


def progress_bar(label: str, fraction: float, width: int = 30) -> None:
    """On a terminal, one line that overwrites itself with a carriage return; in a log, a plain line
    at most every PLAIN_PROGRESS_PERIOD seconds (and at 100 %)."""
    fraction = min(max(fraction, 0.0), 1.0)
    filled = int(width * fraction)
    text = f"{label} [{'#' * filled}{'.' * (width - filled)}] {100 * fraction:3.0f}%"
    if sys.stdout.isatty():
        print(f"\r{text}", end="", flush=True)
        return
    now = time.monotonic()
    if fraction >= 1.0 or now - _last_plain_line[0] >= PLAIN_PROGRESS_PERIOD:
        _last_plain_line[0] = now
        print(text, flush=True)


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
