"""`mobile-vla-bench vlm`: VLM feature-extractor latency at full size, ours vs a plain transformers forward.

Full-size configurations (Kosmos-2 1.66 B, CLIP ViT-L/14, Qwen2.5-VL-3B) with seeded random
weights are written to a temporary directory and loaded through the extractors' real
`from_pretrained` path; latency does not depend on the weight values. Per backend and number of
views (224x224 each), in the same run:
- eager:        the model's own forward (`model(**processor outputs)`) in FP16, inputs on the GPU
- ours, eager:  our synchronisation-free forward without CUDA graphs, inputs on the GPU
- ours:         the same forward replayed as a CUDA graph, inputs on the GPU (what the node runs)
- ours, end to end: `extract(images, instruction)`: one copy of the uint8 views to the GPU, preprocessing
  as tensor ops there (vlm/preprocess.py), the cached prompt tensors, the graph forward, copy back
- ours, end to end, CPU processor: the same with the transformers image processor on the CPU (the
  reference path, `tensor_preprocessing: False`)
- int8w: ...: the same checkpoint with int8 weights (`dtype: int8w`), graph forward and end to end,
  with the weights' GB and the features' cosine similarity to FP16 on the same views
- ... compiled: (`--compile MODE`) each dtype again with the forward through torch.compile before the
  capture (`compile_mode`); the first forward per shape (compilation + capture) is logged
The table gives each end-to-end row over the CUDA-graph forward of its dtype. With `--profile DIR`, the
forward's kernels per setup and number of views (torch.profiler, the non-graph run of the same compiled
function: the kernels a replay launches) go to one text table each.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from .timing import measure

INSTRUCTION = "go to the red cylinder on the left of the green box"


def _build(backend: str, root: Path) -> dict:
    from ...vlm.tiny import build_tiny_clip_vision, build_tiny_kosmos2, build_tiny_qwen2_5_vl

    if backend == "qwen2_5_vl":
        return {"model_path": str(build_tiny_qwen2_5_vl(root / "qwen", full_size=True))}
    paths = {"model_path": str(build_tiny_kosmos2(root / "kosmos2", full_size=True))}
    if backend == "kosmos2_clip":
        paths["clip_model_path"] = str(build_tiny_clip_vision(root / "clip", full_size=True))
    return paths


def _eager_forward(extractor, backend: str, images: list[np.ndarray]):
    """The plain transformers forward of the loaded model on processor outputs already on the GPU."""
    import torch

    if backend == "qwen2_5_vl":
        pixels = extractor.image_processor(images=images, return_tensors="pt")
        n = int(pixels["image_grid_thw"][0].prod()) // extractor.merge_unit
        prompt = extractor.prompt.format(instruction=INSTRUCTION).replace("<|image_pad|>", "<|image_pad|>" * n)
        inputs = {**extractor.tokenizer([prompt] * len(images), return_tensors="pt"), **pixels}
    else:
        inputs = extractor.processor(text=[extractor.prompt.format(instruction=INSTRUCTION)] * len(images),
                                     images=images, return_tensors="pt", num_image_tokens=extractor.image_tokens)
    inputs = {k: v.to("cuda") for k, v in inputs.items()}
    inputs["pixel_values"] = inputs["pixel_values"].half()
    model = extractor.model

    def run():
        with torch.inference_mode():
            out = model(**inputs, use_cache=False)
            if backend == "kosmos2_clip":
                out = extractor.clip(pixel_values=inputs["pixel_values"])  # the hybrid also runs CLIP
        torch.cuda.synchronize()
        return out

    return run


def _graph_forward(extractor, backend: str, images: list[np.ndarray]):
    """(the extractor's CUDA-graph forward, its prepared inputs for `images`)."""
    prepared = extractor.prepare(images, INSTRUCTION)
    if backend != "qwen2_5_vl":
        return extractor.forward, prepared
    fast, prepared = prepared
    if not fast:
        raise RuntimeError("224x224 views must take the fast path")
    return extractor.fast_forward, prepared


def _measure_views(extractor, backend: str, images: list[np.ndarray], iters: int, max_seconds: float,
                   full: bool = True):
    """All variants (`full`), or only the graph forward and end to end."""
    import torch

    from ...vlm.static_forward import StaticForward

    graph_forward, prepared = _graph_forward(extractor, backend, images)
    eager_ours = StaticForward(graph_forward.fn, use_graphs=False)

    def synced(fn):
        def run():
            out = fn()
            torch.cuda.synchronize()
            return out
        return run

    variants = {
        "ours, CUDA graph": synced(lambda: graph_forward(**prepared)),
        "ours, end to end": lambda: extractor.extract(images, INSTRUCTION),
    }
    if full:
        variants = {"transformers eager": _eager_forward(extractor, backend, images),
                    "ours, no graph": synced(lambda: eager_ours(**prepared)), **variants,
                    "ours, end to end, CPU processor": lambda: _with_processor(extractor, images)}
    diff = float((graph_forward(**prepared) - eager_ours(**prepared)).abs().max())
    return [(name, measure(fn, iters, warmup=5, max_seconds=max_seconds), diff) for name, fn in variants.items()]


def _profile_forward(extractor, backend: str, images: list[np.ndarray], path: Path, repeats: int = 10) -> float:
    """Writes the forward's CUDA kernels, by self time, to `path`; returns the kernel milliseconds per forward."""
    import torch

    from ...vlm.static_forward import StaticForward

    graph_forward, prepared = _graph_forward(extractor, backend, images)
    forward = StaticForward(graph_forward.fn, use_graphs=False)
    forward(**prepared)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(repeats):
            forward(**prepared)
        torch.cuda.synchronize()
    events = prof.key_averages()
    kernel_ms = sum(e.self_device_time_total for e in events) / 1e3 / repeats
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{repeats} forwards, {kernel_ms:.3f} ms of kernels per forward\n"
                    + events.table(sort_by="self_cuda_time_total", row_limit=60, max_name_column_width=90))
    return kernel_ms


def _with_processor(extractor, images: list[np.ndarray]):
    """`extract` with each preprocessor swapped for its reference, the image processor."""
    names = [n for n in ("pixels", "clip_pixels", "patches") if hasattr(extractor, n)]
    saved = {n: getattr(extractor, n) for n in names}
    try:
        for n in names:
            setattr(extractor, n, saved[n].reference)
        return extractor.extract(images, INSTRUCTION)
    finally:
        for n, value in saved.items():
            setattr(extractor, n, value)


def vlm_rows(backends: list[str], views: list[int], iters: int, max_seconds: float, int8: bool = True,
             compile_mode: str = "", compile_dtypes: tuple[str, ...] = ("fp16",), profile_dir: Path | None = None,
             log=print, on_backend_done=None) -> list[dict]:
    """Rows per backend, views and variant; with `int8`, the same checkpoint with int8 weights
    (`dtype: int8w`) beside it: its graph forward and end to end, weight bytes, feature cosine vs FP16;
    with `compile_mode`, each of `compile_dtypes` again with the forward through torch.compile before the
    capture (its first forward per shape, the compilation, is timed separately). `on_backend_done(rows)`
    gets the rows so far after each backend, so that a long run interrupted keeps what it measured."""
    import gc

    import torch

    from ...vlm.base import ExtractorConfig
    from ...vlm.factory import create_extractor
    from ...vlm.int8_weights import weight_bytes

    rng = np.random.default_rng(0)
    rows = []
    dtypes = ("fp16", "int8w") if int8 else ("fp16",)
    # label -> (dtype, compile mode); "fp16" is the reference of every cosine and ratio.
    compiled = [d for d in dtypes if d in compile_dtypes] if compile_mode else []
    setups = {d: (d, "") for d in dtypes} | {f"{d} compiled": (d, compile_mode) for d in compiled}
    for backend in backends:
        with tempfile.TemporaryDirectory() as tmp:
            log(f"{backend}: writing full-size random-weight checkpoint")
            paths = _build(backend, Path(tmp))
            extractors = {label: create_extractor(ExtractorConfig(backend=backend, device="cuda", dtype=dtype,
                                                                  compile_mode=mode, **paths))
                          for label, (dtype, mode) in setups.items()}
        failed: set[str] = set()
        models = {label: [ex.model] + ([ex.clip] if backend == "kosmos2_clip" else [])
                  for label, ex in extractors.items()}
        params = sum(p.numel() for m in models["fp16"] for p in m.parameters())
        weights_gb = {label: sum(weight_bytes(m) for m in ms) / 1e9 for label, ms in models.items()}
        log(f"{backend}: {params / 1e9:.2f} B parameters, feature dim {extractors['fp16'].feature_dim}, weights "
            + ", ".join(f"{d} {gb:.2f} GB" for d, gb in weights_gb.items() if d in dtypes))
        for n in views:
            images = [rng.integers(0, 255, (224, 224, 3), dtype=np.uint8) for _ in range(n)]
            reference = extractors["fp16"].extract(images, INSTRUCTION)
            for label, extractor in extractors.items():
                if label in failed:
                    continue
                torch.cuda.synchronize()
                allocated, start = torch.cuda.memory_allocated(), time.perf_counter()
                try:
                    features = extractor.extract(images, INSTRUCTION)  # a new shape: capture (and compilation)
                except Exception as exc:  # a variant that cannot run is reported; the others still are
                    failed.add(label)
                    log(f"  {backend:<12} views={n} {label}: FAILED ({type(exc).__name__}: {exc}); left out")
                    rows.append({"backend": backend, "views": n, "variant": label, "setup": label,
                                 "error": f"{type(exc).__name__}: {exc}"})
                    continue
                first_s = time.perf_counter() - start
                # What the first forward left allocated: the graph's pool, and a compiled (frozen)
                # forward's folded weight copies.
                added_gb = (torch.cuda.memory_allocated() - allocated) / 1e9
                cos = float((features * reference).sum() / np.linalg.norm(features) / np.linalg.norm(reference))
                if setups[label][1]:
                    log(f"  {backend:<12} views={n} {label}: first forward (compile + capture) {first_s:.1f} s, "
                        f"+{added_gb:.2f} GB on the GPU, cosine vs fp16 {cos:.5f}")
                for name, timing, diff in _measure_views(extractor, backend, images, iters, max_seconds,
                                                         full=label == "fp16"):
                    variant = name if label == "fp16" else f"{label}: {name}"
                    rows.append({"backend": backend, "views": n, "variant": variant, "dtype": setups[label][0],
                                 "setup": label, "compile_mode": setups[label][1], "first_forward_s": first_s,
                                 "first_forward_added_gpu_gb": added_gb,
                                 "params_b": params / 1e9, "weights_gb": weights_gb[label], **timing,
                                 "graph_vs_eager_max_abs_diff": diff, "feature_cosine_vs_fp16": cos})
                    log(f"  {backend:<12} views={n} {variant:<34} p50 {timing['p50_ms']:7.2f} ms  "
                        f"p90 {timing['p90_ms']:7.2f} ms")
                if profile_dir is not None:
                    path = profile_dir / f"profile_{backend}_{n}views_{label.replace(' ', '_')}.txt"
                    kernel_ms = _profile_forward(extractor, backend, images, path)
                    log(f"  {backend:<12} views={n} {label}: {kernel_ms:.2f} ms of kernels per forward ({path})")
        del extractors, models
        gc.collect()
        torch.cuda.empty_cache()
        if on_backend_done is not None:
            on_backend_done(rows)
    return rows


def vlm_table(rows: list[dict]) -> str:
    lines = ["| backend | views | variant | p50 ms | p90 ms | vs transformers eager (p50) | / CUDA-graph forward |",
             "|" + "---|" * 7]
    by_variant = {(r["backend"], r["views"], r["variant"]): r["p50_ms"] for r in rows if "error" not in r}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['backend']} | {r['views']} | {r['variant']} | failed: {r['error'][:80]} | | | |")
            continue
        key = (r["backend"], r["views"])
        base = by_variant.get((*key, "transformers eager"))
        ratio = f"{base / r['p50_ms']:.2f}x faster" if base and r["variant"] != "transformers eager" else ""
        setup = r.get("setup", r.get("dtype", "fp16"))
        prefix = "" if setup == "fp16" else f"{setup}: "
        forward = by_variant.get((*key, f"{prefix}ours, CUDA graph"))
        share = f"{r['p50_ms'] / forward:.2f}x" if forward and "end to end" in r["variant"] else ""
        lines.append(f"| {r['backend']} | {r['views']} | {r['variant']} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
                     f"{ratio} | {share} |")
    return "\n".join(lines)
