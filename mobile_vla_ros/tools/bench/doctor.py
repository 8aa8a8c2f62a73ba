"""`mobile-vla-bench doctor`: what this machine has for running the nodes, and what the configured
backends still need, with the install line for each. For the first bring-up on a robot (Jetson Orin
NX, JetPack 6) and for any new computer.

Checks: Python, ROS 2 distro, PyTorch and CUDA (GPU, compute capability, free memory), TensorRT and
the CUDA bindings (cuda-python, pycuda), ONNX Runtime and its execution providers, whether the
configured VLM fits the free GPU memory in FP16, and which cached TensorRT engines this GPU and
TensorRT can use. The configuration is read from the same ROS 2 parameter files the nodes take.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import sys
from pathlib import Path

from ...core.backends import tensorrt_installed
from ...core.engine_cache import DEFAULT_CACHE
from ...paths import default_model_dir, resolve_dir

# Where each piece comes from on the robot (JetPack 6 = CUDA 12.6, Python 3.10, aarch64).
INSTALL = {
    "ros": "ROS 2 Humble from apt: sudo apt install ros-humble-ros-base ros-humble-diagnostic-msgs "
           "(https://docs.ros.org/en/humble/Installation/Ubuntu-Install-Debs.html)",
    "torch": "PyTorch for JetPack 6 from NVIDIA's Jetson wheels (https://pypi.jetson-ai-lab.io/jp6/cu126)",
    "cuda_gpu": "an NVIDIA GPU with its driver (JetPack on Jetson)",
    "tensorrt": "TensorRT comes with JetPack: sudo apt install python3-libnvinfer",
    "cuda_binding": "pip install cuda-python==12.6.2.post1 (CUDA 12 as JetPack 6 ships; see requirements/robot.txt)",
    "onnxruntime": "pip install onnxruntime==1.23.2 (CPU; GPU builds for Jetson come from NVIDIA)",
}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def ros_distro() -> str | None:
    if os.environ.get("ROS_DISTRO"):
        return os.environ["ROS_DISTRO"]
    for dist in ("ros-rclpy", "ros-jazzy-rclpy", "ros-humble-rclpy"):
        if _version(dist):
            return {"ros-jazzy-rclpy": "jazzy", "ros-humble-rclpy": "humble"}.get(dist, "kilted") + f" (PyPI {dist})"
    return "unknown (rclpy from a ROS install without ROS_DISTRO set)" if importlib.util.find_spec("rclpy") else None


def gpu() -> dict:
    try:
        import torch
    except ImportError:
        return {"torch": None}
    out = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda}
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        major, minor = torch.cuda.get_device_capability(0)
        out |= {"gpu": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}",
                "gpu_free_mb": free / 2**20, "gpu_total_mb": total / 2**20}
    return out


def vlm_fp16_mb(model_path: Path) -> float:
    """FP16 size of the weights in a VLM directory: 2 bytes per parameter, however they are stored."""
    from safetensors import safe_open

    parameters = 0
    for f in model_path.rglob("*.safetensors"):
        with safe_open(str(f), "np") as st:
            parameters += sum(math.prod(st.get_slice(name).get_shape()) for name in st.keys())
    return 2 * parameters / 2**20


def engines(cache_dir: Path, compute_capability: str | None, trt_version: str | None) -> list[dict]:
    out = []
    for sidecar in sorted(Path(cache_dir).expanduser().glob("*.json")):
        try:
            record = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        usable = (record.get("compute_capability"), record.get("tensorrt_version")) == (compute_capability, trt_version)
        out.append({"engine": sidecar.with_suffix(".engine").name, "gpu": record.get("gpu_name"),
                    "precision": record.get("precision"), "usable_here": usable})
    return out


def check(params: dict) -> dict:
    """Everything doctor reports, as a dict; `missing` lists what the configured backends need."""
    g = gpu()
    trt = importlib.import_module("tensorrt").__version__ if tensorrt_installed() else None
    providers = None
    if importlib.util.find_spec("onnxruntime"):
        import onnxruntime

        providers = onnxruntime.get_available_providers()
    model_path = resolve_dir(params.get("model_path", ""), default_model_dir() / "vlm")
    report = {
        "python": platform.python_version(), "machine": platform.machine(), "ros": ros_distro(),
        **g, "tensorrt": trt, "cuda_python": _version("cuda-python") or _version("cuda-bindings"),
        "pycuda": _version("pycuda"), "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
        "onnxruntime_providers": providers,
        "config": {k: params.get(k) for k in ("backend", "device", "dtype", "vlm_backend", "model_path")},
        "vlm_fp16_mb": round(vlm_fp16_mb(model_path), 1) if model_path.is_dir() else None,
        "engines": engines(Path(params.get("engine_cache_dir") or DEFAULT_CACHE), g.get("compute_capability"), trt),
    }
    missing = []  # (what, how to get it, required: the configured nodes cannot start without it)
    if report["ros"] is None:
        missing.append(("ROS 2 (rclpy)", INSTALL["ros"], True))
    if g.get("torch") is None:
        missing.append(("PyTorch", INSTALL["torch"], True))
    if params.get("device", "cuda").startswith("cuda") and not g.get("cuda_available"):
        missing.append(("CUDA GPU for device: cuda (vlm_node)", INSTALL["cuda_gpu"], True))
    backend = params.get("backend", "auto")
    # backend auto falls back to ONNX Runtime: TensorRT is then what the robot should have, not a must.
    if backend in ("tensorrt", "auto"):
        if trt is None:
            missing.append((f"TensorRT (backend: {backend})", INSTALL["tensorrt"], backend == "tensorrt"))
        if not (report["cuda_python"] or report["pycuda"]):
            missing.append(("a CUDA binding for TensorRT", INSTALL["cuda_binding"], backend == "tensorrt"))
    if backend in ("onnxruntime", "auto") and report["onnxruntime"] is None:
        missing.append((f"ONNX Runtime (backend: {backend})", INSTALL["onnxruntime"], backend == "onnxruntime"))
    if report["vlm_fp16_mb"] and g.get("gpu_free_mb") is not None and report["vlm_fp16_mb"] > g["gpu_free_mb"]:
        missing.append((f"GPU memory: the VLM needs {report['vlm_fp16_mb']:.0f} MB in FP16, "
                        f"{g['gpu_free_mb']:.0f} MB free", "a smaller VLM, or free the GPU", True))
    report["missing"] = [{"what": w, "install": how, "required": req} for w, how, req in missing]
    return report


def format_report(r: dict) -> str:
    gpu_line = (f"{r['gpu']} (sm {r['compute_capability']}), {r['gpu_free_mb']:.0f} of {r['gpu_total_mb']:.0f} MB free"
                if r.get("gpu") else "none")
    rows = [("Python", f"{r['python']} ({r['machine']})"), ("ROS 2", r["ros"] or "not found"),
            ("PyTorch", f"{r['torch']} (CUDA {r.get('torch_cuda')})" if r.get("torch") else "not installed"),
            ("GPU", gpu_line), ("TensorRT", r["tensorrt"] or "not installed"),
            ("cuda-python / pycuda", f"{r['cuda_python'] or '-'} / {r['pycuda'] or '-'}"),
            ("ONNX Runtime", f"{r['onnxruntime'] or 'not installed'} {r['onnxruntime_providers'] or ''}"),
            ("configured", ", ".join(f"{k}={v}" for k, v in r["config"].items())),
            ("VLM weights in FP16", f"{r['vlm_fp16_mb']} MB" if r["vlm_fp16_mb"] is not None else "-"),
            ("TensorRT engines cached", ", ".join(f"{e['engine']} ({'usable' if e['usable_here'] else 'other GPU/TRT'})"
                                                 for e in r["engines"]) or "none")]
    lines = ["| item | this machine |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows], ""]
    for required, title in ((True, "missing, the configured nodes need it"),
                            (False, "missing, recommended (the configured backend falls back without it)")):
        items = [m for m in r["missing"] if m["required"] is required]
        if items:
            lines += [f"{title}:", *[f"- {m['what']}: {m['install']}" for m in items]]
    if not r["missing"]:
        lines.append("nothing missing for the configured backends")
    return "\n".join(lines)


def params_from(files: list[Path]) -> dict:
    from ..bringup.processes import yaml_params

    return yaml_params(files, ("vlm_node", "action_expert_node"))


def main(files: list[Path], out: Path | None) -> int:
    report = check(params_from(files))
    print(format_report(report))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {out}")
    return 1 if any(m["required"] for m in report["missing"]) else 0


if __name__ == "__main__":
    raise SystemExit(main([Path(a) for a in sys.argv[1:]], None))
