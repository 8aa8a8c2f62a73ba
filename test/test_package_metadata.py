"""package.xml declares every ROS package the code imports (rosdep installs what it lists, so a missing
line is a node that fails to import on a fresh robot)."""

from __future__ import annotations

import ast
import importlib.metadata
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# ROS packages that cannot be pip-installed here (no wheel), so their distribution cannot be looked up.
ROS_WITHOUT_WHEELS = {"launch", "launch_ros", "launch_testing", "launch_pytest", "lifecycle_msgs",
                      "ament_index_python", "cv_bridge"}


def imported_top_levels(paths: list[Path]) -> set[str]:
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def ros_packages(modules: set[str]) -> set[str]:
    """The imported modules that are ROS packages: installed from a ROS wheel (`ros-…` distributions)
    or known ROS packages without a wheel."""
    distributions = importlib.metadata.packages_distributions()
    return {m for m in modules if m in ROS_WITHOUT_WHEELS
            or any(d.lower().startswith("ros-") for d in distributions.get(m, []))}


def declared() -> set[str]:
    root = ET.parse(ROOT / "package.xml").getroot()
    tags = ("depend", "exec_depend", "build_depend", "test_depend")
    return {e.text.strip() for tag in tags for e in root.iter(tag)}


def code_files() -> list[Path]:
    return sorted((ROOT / "mobile_vla_ros").rglob("*.py")) + sorted((ROOT / "launch").glob("*.py"))


def test_the_check_sees_ros_imports_and_ignores_the_rest():
    found = ros_packages(imported_top_levels(code_files()))
    assert {"rclpy", "sensor_msgs", "launch", "launch_ros"} <= found
    assert not {"numpy", "torch", "mobile_vla_ros", "yaml"} & found


def test_package_xml_declares_every_ros_package_the_code_imports():
    missing = sorted(ros_packages(imported_top_levels(code_files())) - declared())
    assert missing == [], f"add to package.xml: {missing}"
