"""ament_python package definition; also installable with pip for development without ROS."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "mobile_vla_ros"
HERE = Path(__file__).parent


def data_files() -> list[tuple[str, list[str]]]:
    """Install launch/, config/, models/** and the ament marker under share/<package>."""
    files = [
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", sorted(str(p) for p in Path("launch").glob("*.py"))),
        (f"share/{PACKAGE}/config", sorted(str(p) for p in Path("config").glob("*.yaml"))),
    ]
    by_dir: dict[str, list[str]] = {}
    for path in sorted(Path("models").rglob("*")):
        if path.is_file():
            by_dir.setdefault(f"share/{PACKAGE}/{path.parent}", []).append(str(path))
    files.extend(by_dir.items())
    return files


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=data_files(),
    python_requires=">=3.10",
    install_requires=["numpy", "pyyaml", "setuptools"],
    extras_require={
        "inference": ["onnxruntime>=1.16", "onnx>=1.14"],
        "bags": ["rosbags>=0.9"],
        "eval": ["rosbags>=0.9", "matplotlib"],
        "sim": ["mujoco>=3.1", "rosbags>=0.9", "matplotlib"],
        "torch": ["torch>=2.1"],
        "vlm": ["torch>=2.1", "transformers>=4.49", "pillow", "safetensors"],
        "test": ["pytest>=7", "ruff"],
    },
    zip_safe=True,
    maintainer="mobile_vla_ros maintainers",
    maintainer_email="maintainers@mobile-vla-ros.invalid",
    description="Asynchronous VLM + action-expert policy nodes for a mobile robot (ROS 2).",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            f"vlm_node = {PACKAGE}.vlm_node:main",
            f"action_expert_node = {PACKAGE}.action_expert_node:main",
            f"synthetic_sources = {PACKAGE}.tools.bringup.synthetic_sources:main",
            f"mobile-vla-bringup = {PACKAGE}.tools.bringup.cli:main",
            f"mobile-vla-export = {PACKAGE}.tools.deploy.export:main",
            f"mobile-vla-build-engine = {PACKAGE}.tools.deploy.build_engine:main",
            f"mobile-vla-bench = {PACKAGE}.tools.bench.cli:main",
            f"mobile-vla-eval = {PACKAGE}.tools.evaluation.evaluate:main",
            f"sync_baseline_node = {PACKAGE}.tools.bringup.sync_baseline:main",
            f"sim_node = {PACKAGE}.sim_node:main",
            f"mobile-vla-record-sim = {PACKAGE}.tools.simulation.record_sim:main",
            f"mobile-vla-train = {PACKAGE}.tools.training.train:main",
        ],
    },
)
