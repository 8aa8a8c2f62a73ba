"""The MuJoCo simulated robot (ROS-free core): world, tasks, episodes, expert and baselines."""

import argparse
import os

# Headless rendering: OSMesa on the CPU unless the user chose (e.g. MUJOCO_GL=egl on a GPU machine).
# Set before anything imports mujoco, which reads it once.
os.environ.setdefault("MUJOCO_GL", "osmesa")


def parse_seeds(text: str) -> list[int]:
    """Episode seeds from the command line: "FIRST-LAST" (inclusive) or "A,B,C" (a single seed too)."""
    first, dash, last = text.partition("-")
    try:
        seeds = list(range(int(first), int(last) + 1)) if dash else [int(s) for s in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds:
        raise argparse.ArgumentTypeError(f"expected seeds FIRST-LAST or A,B,C, got {text!r}")
    return seeds


def mujoco_missing() -> str | None:
    """None when MuJoCo imports, else a one-line reason for the user."""
    try:
        import mujoco  # noqa: F401
    except ImportError as exc:
        return f"the simulated robot needs MuJoCo (pip install mujoco; apt-get install libosmesa6): {exc}"
    return None


def cannot_simulate(episodes: int) -> str | None:
    """None when `episodes` episodes can be simulated here, else a one-line reason."""
    if episodes < 1:
        return "--episodes must be >= 1"
    return mujoco_missing()


def render_in_processes(function, args: list[tuple], workers: int) -> list:
    """`[function(*a) for a in args]`, spread over `workers` spawned processes when more than one (each
    starts its own MuJoCo renderer)."""
    if workers <= 1:
        return [function(*a) for a in args]
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return pool.starmap(function, args)
