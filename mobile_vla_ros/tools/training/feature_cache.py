"""The feature cache's two rules, shared by the bags' features and the scene views': a file is named by
what it holds (the feature function's identity and every image and instruction it was taken from), and it
is written atomically (a concurrent reader, another DDP rank, never sees half a file)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np


def frames_name(identity: str, frames: Iterable[tuple[np.ndarray, str]]) -> str:
    """File name of the features of `frames` (rgb, instruction) taken by the feature function `identity`."""
    h = hashlib.sha256(identity.encode())
    for rgb, text in frames:
        h.update(hashlib.sha1(rgb.tobytes()).digest())
        h.update(text.encode())
    return h.hexdigest()[:24]


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` beside `path` (same suffix, so numpy keeps the name), then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp" + path.suffix)
    write(tmp)
    tmp.replace(path)
