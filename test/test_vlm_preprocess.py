"""Image preprocessing as tensor ops (vlm/preprocess.py) against the transformers image processors it
replaces (the reference), FP32 on the CPU: pixel tensors and final features, views of several sizes,
the fallback to the processor, and the cache of tokenised instructions.

Tolerance: views already at the model's input size match to float rounding (1e-6). Views that are
resized differ from PIL's uint8 resampling by rounding and edge handling: at most 8 uint8 levels on
any pixel of a camera-like frame and 0.05 levels on average (random noise, the worst case: 12 and
0.5); the shipped VLM's features then differ by < 0.1 % of their largest value (cosine > 0.99999)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mobile_vla_ros.sim.world import SimRobot, sample_task
from mobile_vla_ros.vlm.base import ExtractorConfig
from mobile_vla_ros.vlm.factory import create_extractor
from mobile_vla_ros.vlm.preprocess import ClipPixels, InstructionCache, ProcessorPixels, QwenPatches

SHIPPED_VLM = Path(__file__).resolve().parents[1] / "models" / "default" / "vlm"
INSTRUCTION = "go to the red cylinder"


@pytest.fixture(scope="module")
def frames() -> dict[str, np.ndarray]:
    """A simulator frame at the model's size, the same frame at two camera sizes, and noise."""
    with SimRobot(sample_task(3)) as robot:
        sim = robot.render()
    return {"sim 224x224": sim,
            "camera 480x640": np.asarray(Image.fromarray(sim).resize((640, 480), Image.BICUBIC)),
            "camera 100x150": np.asarray(Image.fromarray(sim).resize((150, 100), Image.BICUBIC)),
            "noise 300x400": np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)}


def levels(diff, image_processor) -> np.ndarray:
    """Normalised pixel differences [.., 3, ..] back in uint8 levels per channel."""
    std = np.asarray(image_processor.image_std, dtype=np.float32) / image_processor.rescale_factor
    return np.abs(np.asarray(diff)) * std.reshape((1, 3, 1, 1) if np.ndim(diff) == 4 else (1, 3, 1))


def check_levels(name: str, diff) -> None:
    if name.startswith("sim"):
        assert diff.max() < 1e-4, name
    elif name.startswith("camera"):
        assert diff.max() <= 8.01 and diff.mean() <= 0.05, (name, diff.max(), diff.mean())
    else:
        assert diff.max() <= 12.01 and diff.mean() <= 0.5, (name, diff.max(), diff.mean())


def test_clip_pixels_match_the_kosmos2_and_clip_processors(frames, tiny_clip_dir):
    from transformers import AutoImageProcessor, AutoProcessor

    for processor in (AutoProcessor.from_pretrained(SHIPPED_VLM).image_processor,
                      AutoImageProcessor.from_pretrained(tiny_clip_dir, use_fast=False)):
        ours = ClipPixels(processor, "cpu")
        for name, frame in frames.items():
            reference = processor(images=[frame, frame], return_tensors="pt")["pixel_values"].numpy()
            got = ours([frame, frame]).numpy()
            assert got.shape == reference.shape == (2, 3, 224, 224)
            check_levels(name, levels(got - reference, processor))
        # views of several sizes: each resized on its own, crops of one size, in the views' order
        mixed = [frames["camera 480x640"], frames["sim 224x224"]]
        reference = processor(images=mixed, return_tensors="pt")["pixel_values"].numpy()
        got = ours(mixed).numpy()
        assert got.shape == reference.shape and levels(got - reference, processor)[1].max() < 1e-4
        check_levels("camera", levels(got - reference, processor))


def test_qwen_patches_match_the_qwen_processor_layout_and_grid(frames, tiny_qwen_dir):
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(tiny_qwen_dir, use_fast=False)
    ours = QwenPatches(processor, "cpu")
    for name, frame in frames.items():
        reference = processor(images=[frame, frame], return_tensors="pt")
        pixels, grid = ours([frame, frame])
        assert grid.tolist() == reference["image_grid_thw"].tolist(), name
        assert pixels.shape == reference["pixel_values"].shape, name
        # rows are patches of 3 channels x 2 frames x 14 x 14: compare per channel in uint8 levels
        diff = (pixels - reference["pixel_values"]).numpy().reshape(pixels.shape[0], 3, -1)
        check_levels(name, levels(diff, processor))
    mixed = [frames["sim 224x224"], frames["camera 480x640"]]
    reference = processor(images=mixed, return_tensors="pt")
    pixels, grid = ours(mixed)
    assert grid.tolist() == reference["image_grid_thw"].tolist() and pixels.shape == reference["pixel_values"].shape


@pytest.mark.parametrize("backend", ["kosmos2", "kosmos2_clip", "qwen2_5_vl"])
def test_features_with_tensor_preprocessing_match_the_processor_path(backend, frames, tiny_clip_dir,
                                                                     tiny_qwen_dir):
    model = {"qwen2_5_vl": str(tiny_qwen_dir)}.get(backend, str(SHIPPED_VLM))
    config = ExtractorConfig(backend=backend, model_path=model, clip_model_path=str(tiny_clip_dir))
    ours = create_extractor(config)
    reference = create_extractor(replace(config, tensor_preprocessing=False))
    assert isinstance(ours.patches if backend == "qwen2_5_vl" else ours.pixels, (ClipPixels, QwenPatches))
    for name, frame in frames.items():
        got, expected = ours.extract([frame], INSTRUCTION), reference.extract([frame], INSTRUCTION)
        scale = np.abs(expected).max()
        tolerance = 1e-5 if name.startswith("sim") else 5e-3
        assert np.abs(got - expected).max() <= tolerance * scale, (backend, name)


def test_an_unreproduced_resample_filter_falls_back_to_the_processor(tmp_path, frames, caplog):
    import json
    import shutil

    vlm = tmp_path / "vlm"
    shutil.copytree(SHIPPED_VLM, vlm)
    config_file = vlm / "preprocessor_config.json"
    config = json.loads(config_file.read_text())
    config["resample"] = 0  # nearest
    config_file.write_text(json.dumps(config))
    with caplog.at_level(logging.WARNING):
        ex = create_extractor(ExtractorConfig(model_path=str(vlm)))
    assert isinstance(ex.pixels, ProcessorPixels) and "resample 0" in caplog.text
    reference = ex.processor.image_processor(images=[frames["camera 480x640"]], return_tensors="pt")["pixel_values"]
    assert ex.prepare([frames["camera 480x640"]], INSTRUCTION)["pixel_values"].equal(reference)


def test_views_that_are_not_uint8_rgb_are_refused(frames):
    from transformers import AutoProcessor

    ours = ClipPixels(AutoProcessor.from_pretrained(SHIPPED_VLM).image_processor, "cpu")
    with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\], got float32 \[224, 224, 3\]"):
        ours([frames["sim 224x224"].astype(np.float32)])
    with pytest.raises(ValueError, match=r"got uint8 \[224, 224\]"):
        ours([frames["sim 224x224"][..., 0]])


def test_an_unchanged_instruction_is_tokenised_once(frames):
    ex = create_extractor(ExtractorConfig(model_path=str(SHIPPED_VLM)))
    calls = []
    tokenise = ex._tokenise
    ex._tokenise = lambda images, instruction: calls.append(instruction) or tokenise(images, instruction)
    first = ex.extract([frames["sim 224x224"]], INSTRUCTION)
    again = ex.extract([frames["camera 480x640"]], INSTRUCTION)
    two_views = ex.extract([frames["sim 224x224"]] * 2, INSTRUCTION)
    other = ex.extract([frames["sim 224x224"]], "go to the blue box")
    assert calls == [INSTRUCTION, INSTRUCTION, "go to the blue box"]  # one per (instruction, views)
    fresh = create_extractor(ExtractorConfig(model_path=str(SHIPPED_VLM)))
    for cached, instruction, views in ((again, INSTRUCTION, [frames["camera 480x640"]]),
                                       (two_views, INSTRUCTION, [frames["sim 224x224"]] * 2),
                                       (other, "go to the blue box", [frames["sim 224x224"]])):
        assert np.array_equal(cached, fresh.extract(views, instruction))
    assert np.abs(first - other).max() > 1e-4  # the instruction still matters


def test_kosmos2_prompt_tokens_do_not_depend_on_the_views_pixels(frames):
    """The prompt is tokenised with 8x8 placeholders: the same tokens and image-token positions as the
    processor gives for the camera views themselves."""
    ex = create_extractor(ExtractorConfig(model_path=str(SHIPPED_VLM)))
    for views in ([frames["camera 480x640"]], [frames["sim 224x224"], frames["camera 480x640"]]):
        want = ex.processor(text=[ex.prompt.format(instruction=INSTRUCTION)] * len(views), images=views,
                            return_tensors="pt", num_image_tokens=ex.image_tokens)
        got = ex._tokenise(len(views), INSTRUCTION)
        length = want["input_ids"].shape[1]
        assert got["input_ids"].shape[1] % ex.config.text_bucket == 0 and got["input_ids"].shape[1] >= length
        assert np.array_equal(got["input_ids"][:, :length].numpy(), want["input_ids"].numpy())
        # The forward has no padding mask: the prompt must end where the processor's attention ends.
        assert np.array_equal(got["last_index"].numpy(), want["attention_mask"].sum(dim=1).numpy() - 1)
        image_positions = want["image_embeds_position_mask"].bool().flatten().nonzero().squeeze(1)
        width = got["input_ids"].shape[1]
        assert np.array_equal(got["image_index"].numpy(),
                              (image_positions // length * width + image_positions % length).numpy())


def test_instruction_cache_keeps_the_most_recent_entries():
    cache = InstructionCache(size=2)
    made = []

    def make(value):
        return lambda: made.append(value) or value

    assert cache.get(("a", 1), make("A")) == "A"
    assert cache.get(("b", 1), make("B")) == "B"
    assert cache.get(("a", 1), make("A2")) == "A"  # a hit, and now the most recent
    cache.get(("c", 1), make("C"))  # evicts b, the oldest
    assert len(cache) == 2 and cache.get(("b", 1), make("B2")) == "B2"
    assert made == ["A", "B", "C", "B2"]


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_on_the_gpu_pixels_and_features_match_the_cpu_reference(frames, tiny_qwen_dir):
    from transformers import AutoImageProcessor, AutoProcessor

    clip = AutoProcessor.from_pretrained(SHIPPED_VLM).image_processor
    qwen = AutoImageProcessor.from_pretrained(tiny_qwen_dir, use_fast=False)
    for name, frame in frames.items():
        # the GPU's resampling may round a pixel to the neighbouring uint8 level
        diff = levels((ClipPixels(clip, "cuda")([frame]).cpu() - ClipPixels(clip, "cpu")([frame])).numpy(), clip)
        assert diff.max() <= 1.01 and diff.mean() <= 0.01, name
        (gpu, grid), (cpu, cpu_grid) = QwenPatches(qwen, "cuda")([frame]), QwenPatches(qwen, "cpu")([frame])
        assert grid.tolist() == cpu_grid.tolist()
        assert levels((gpu.cpu() - cpu).numpy().reshape(gpu.shape[0], 3, -1), qwen).max() <= 1.01, name
    config = ExtractorConfig(model_path=str(SHIPPED_VLM), device="cuda", dtype="fp32")
    gpu = create_extractor(config).extract([frames["camera 480x640"]], INSTRUCTION)
    reference = create_extractor(replace(config, device="cpu", tensor_preprocessing=False))
    expected = reference.extract([frames["camera 480x640"]], INSTRUCTION)
    assert np.abs(gpu - expected).max() <= 5e-3 * np.abs(expected).max()


def test_vlm_bench_table_gives_end_to_end_over_the_graph_forward():
    from mobile_vla_ros.tools.bench.vlm import vlm_table

    rows = [{"backend": "kosmos2", "views": 1, "variant": v, "p50_ms": ms, "p90_ms": ms + 1}
            for v, ms in (("transformers eager", 20.0), ("ours, CUDA graph", 4.0), ("ours, end to end", 5.0),
                          ("ours, end to end, CPU processor", 8.0))]
    rows += [{"backend": "kosmos2", "views": 1, "variant": f"int8w: {v}", "dtype": "int8w", "p50_ms": ms,
              "p90_ms": ms + 1} for v, ms in (("ours, CUDA graph", 3.0), ("ours, end to end", 3.3))]
    rows.append({"backend": "kosmos2", "views": 1, "variant": "int8w compiled", "setup": "int8w compiled",
                 "error": "BackendCompilerFailed: no triton"})
    table = vlm_table(rows).splitlines()
    assert table[-1] == "| kosmos2 | 1 | int8w compiled | failed: BackendCompilerFailed: no triton | | | |"
    assert table[7].endswith("| 6.06x faster | 1.10x |")  # int8 end to end over the int8 forward
    assert table[2].endswith("| 20.00 | 21.00 |  |  |")  # the baseline itself
    assert table[3].endswith("| 5.00x faster |  |")  # the forward is what the others are divided by
    assert table[4].endswith("| 4.00x faster | 1.25x |")  # end to end: 5 ms over the 4 ms forward
    assert table[5].endswith("| 2.50x faster | 2.00x |")
