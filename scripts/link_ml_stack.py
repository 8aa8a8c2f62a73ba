"""Give a second environment (.venv-jazzy) this environment's ML stack instead of a second copy.

Run with the first environment's Python: `.venv/bin/python scripts/link_ml_stack.py .venv-jazzy`.
The distributions `requirements/common.txt` names, and everything they require, are linked (their
top-level modules and metadata) into `<target>/ml-stack`, which a .pth file puts on the target's path
after its own site-packages. pip in the target then finds them installed at the pinned versions and
installs only what is missing there (the other ROS distro's wheels), so the second environment runs the
very same ML files and its install takes seconds, not minutes. Exits 1 (and links nothing) when the two
environments' Python versions differ; install.sh then installs the full stack.
"""

from __future__ import annotations

import importlib.metadata as metadata
import os
import sys
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def pinned_names(requirements: Path) -> list[str]:
    names = []
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            names.append(Requirement(line).name)
    return names


def closure(names: list[str]) -> list[metadata.Distribution]:
    """The named distributions and, transitively, what they require here (extras left out)."""
    found: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in found:
            continue
        dist = metadata.distribution(name)
        found[key] = dist
        for spec in dist.requires or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return list(found.values())


def main(argv: list[str]) -> int:
    target = Path(argv[1]).resolve()
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    target_site = target / "lib" / version / "site-packages"
    if not target_site.is_dir():
        print(f"link_ml_stack: {target} has no {version} site-packages; not linking", file=sys.stderr)
        return 1
    stack = target / "ml-stack"
    stack.mkdir(exist_ok=True)
    linked = 0
    for dist in closure(pinned_names(REPO / "requirements" / "common.txt")):
        site = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or []} - {"..", "__pycache__"}:
            if not top.endswith(".pth") and (site / top).exists() and not (stack / top).exists():
                os.symlink(site / top, stack / top)
                linked += 1
    (target_site / "_mobile_vla_ml_stack.pth").write_text(f"{stack}\n")
    print(f"link_ml_stack: {linked} entries of this environment's ML stack linked into {stack}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
