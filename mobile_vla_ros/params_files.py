"""ROS 2 parameter files checked before anything starts: rcl reports a malformed file as a
traceback ("failed to initialize rcl: Couldn't parse params file"); this names the file and line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml


def params_files_in(argv: Sequence[str]) -> list[Path]:
    """The files of every `--params-file FILE` in a ROS command line."""
    return [Path(argv[i + 1]) for i, arg in enumerate(argv[:-1]) if arg == "--params-file"]


def params_file_error(path: Path) -> str | None:
    """None when `path` is a readable YAML mapping of node sections, else one line naming file and line."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        return f"{path}: cannot be read ({exc.strerror or exc})"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return f"{path}{where}: not valid YAML ({problem})"
    if not isinstance(data, dict):
        return f"{path}: expected node sections ('node_name: {{ros__parameters: ...}}'), got {type(data).__name__}"
    for node, section in data.items():
        if not isinstance(section, dict) or not isinstance(section.get("ros__parameters"), dict):
            return f"{path}: section '{node}' has no 'ros__parameters' mapping"
    return None


def first_params_file_error(paths: Sequence[Path]) -> str | None:
    return next((error for error in map(params_file_error, paths) if error), None)
