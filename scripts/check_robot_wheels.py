"""Do the robot's pip installs resolve for the robot? JetPack 6 = Ubuntu 22.04 (glibc 2.35), CPython
3.10, aarch64. Asks the package index as a user would (`pip install --dry-run` for that platform,
binary wheels only, requirements/robot.txt) and writes what it would install, wheel by wheel.

  .venv/bin/python scripts/check_robot_wheels.py [--out docs/robot/wheels_aarch64_cp310.md]

Exit 1 (with pip's reason) when something does not resolve to an aarch64 / cp310 wheel.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = ["manylinux_2_35_aarch64", "manylinux_2_34_aarch64", "manylinux_2_31_aarch64", "manylinux_2_28_aarch64",
             "manylinux_2_27_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"]


def resolve(requirements: Path) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--only-binary=:all:", "--python-version", "3.10", "--implementation", "cp", "--abi", "cp310",
               "--abi", "abi3", "--abi", "none", "--target", str(Path(tmp) / "target"), "--report", str(report),
               "-r", str(requirements), *[a for p in PLATFORMS for a in ("--platform", p)]]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"check_robot_wheels: {requirements} does not resolve for aarch64 / cp310:\n"
                             + result.stderr.strip())
        return [{"name": i["metadata"]["name"], "version": i["metadata"]["version"],
                 "wheel": i["download_info"]["url"].rsplit("/", 1)[-1], "requested": i.get("requested", False)}
                for i in json.loads(report.read_text())["install"]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requirements", type=Path, default=ROOT / "requirements" / "robot.txt")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    wheels = resolve(args.requirements)
    wrong = [w for w in wheels if not (w["wheel"].endswith("-none-any.whl") or "aarch64" in w["wheel"])]
    lines = [f"# {args.requirements.relative_to(ROOT)} for aarch64 / CPython 3.10 (JetPack 6)", "",
             "`scripts/check_robot_wheels.py`: `pip install --dry-run` for that platform, binary wheels only.", "",
             "| package | version | wheel | named in robot.txt |", "|---|---|---|---|"]
    lines += [f"| {w['name']} | {w['version']} | {w['wheel']} | {'yes' if w['requested'] else ''} |" for w in wheels]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    if wrong:
        print(f"not for aarch64: {[w['wheel'] for w in wrong]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
