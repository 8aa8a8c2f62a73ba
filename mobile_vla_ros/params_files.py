"""ROS 2 parameter files: the order the nodes load them in (one rule for `robot.launch.py` and
`mobile-vla-bringup`), and a check before anything starts: rcl reports a malformed file as a
traceback ("failed to initialize rcl: Couldn't parse params file"); this names the file and line."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

SIM_PARAMS_FILE = "sim.yaml"


def params_file_order(files: Sequence[Path], use_sim: bool, config_dir: Path) -> list[Path]:
    """The parameter files in load order (a later file overrides an earlier one): the base file
    (default config/robot.yaml), then with the simulated robot config/sim.yaml (its clock, CPU VLM,
    autostart), then the remaining files, so a user's overrides (e.g. sim_slow_vlm.yaml) win over
    sim.yaml. A sim.yaml the user listed keeps its place."""
    files = [Path(f) for f in files] or [config_dir / "robot.yaml"]
    if use_sim and not any(f.name == SIM_PARAMS_FILE for f in files):
        files.insert(1, config_dir / SIM_PARAMS_FILE)
    return files


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
