"""The code base stays ruff-clean (ruff.toml) and needs nothing newer than Python 3.10."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    result = subprocess.run([ruff, "check", "--no-cache", str(REPO)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_nothing_newer_than_python_3_10():
    """The robot runs Ubuntu 22.04's Python 3.10: no module, function or syntax of a later Python
    (vermin), in the package, its tests and scripts."""
    vermin = str(Path(sys.executable).with_name("vermin"))
    result = subprocess.run([vermin, "--target=3.10-", "--no-tips", "--violations", "--eval-annotations",
                             "mobile_vla_ros", "test", "scripts"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Minimum required versions: 3.10" in result.stdout
