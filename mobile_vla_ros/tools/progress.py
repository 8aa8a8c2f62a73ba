"""One-line text progress bar for long-running tools (overwrites itself with a carriage return)."""

from __future__ import annotations


def progress_bar(label: str, fraction: float, width: int = 30) -> None:
    filled = int(width * min(max(fraction, 0.0), 1.0))
    print(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {100 * fraction:3.0f}%", end="", flush=True)
