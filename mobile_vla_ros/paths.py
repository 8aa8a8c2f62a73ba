"""Where the package's shipped files (config/, models/, launch/) are: the source checkout when
running from one, else the ament share directory (colcon install), else <prefix>/share (pip)."""

from __future__ import annotations

import sys
from pathlib import Path

PACKAGE = "mobile_vla_ros"
DEFAULT_MODEL = "default"


def share_dir() -> Path:
    source = Path(__file__).resolve().parents[1]
    if (source / "package.xml").is_file() and (source / "models").is_dir():
        return source
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            return Path(get_package_share_directory(PACKAGE))
        except PackageNotFoundError:
            pass
    except ImportError:
        pass
    return Path(sys.prefix) / "share" / PACKAGE


def default_model_dir() -> Path:
    return share_dir() / "models" / DEFAULT_MODEL


def resolve_dir(value: str, default: Path) -> Path:
    """Empty -> `default`; a relative path that does not exist here is tried under the share dir."""
    if not value:
        return default
    path = Path(value).expanduser()
    if not path.is_absolute() and not path.exists() and (share_dir() / path).exists():
        return share_dir() / path
    return path
