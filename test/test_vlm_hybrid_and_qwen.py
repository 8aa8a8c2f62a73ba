"""Kosmos-2+CLIP and Qwen2.5-VL extractors through the real from_pretrained path on tiny models the
tests build, and the synchronisation-free (CUDA-graph-ready) forwards against the stock transformers
forward."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from vlm_reference import qwen_stock_hidden

from mobile_vla_ros.vlm.base import ExtractorConfig, VlmLoadError, check_transformers_below
from mobile_vla_ros.vlm.factory import create_extractor

RNG = np.random.default_rng(0)
IMAGE_A = RNG.integers(0, 255, (224, 224, 3), dtype=np.uint8)
IMAGE_B = RNG.integers(0, 255, (240, 320, 3), dtype=np.uint8)
IMAGE_C = RNG.integers(0, 255, (224, 224, 3), dtype=np.uint8)
POOLINGS = ("last_token", "mean_text", "mean_image")


@pytest.fixture(scope="module")
def hybrid(tiny_vlm_dir, tiny_clip_dir):
    return create_extractor(ExtractorConfig(backend="kosmos2_clip", model_path=str(tiny_vlm_dir),
                                            clip_model_path=str(tiny_clip_dir)))


@pytest.fixture(scope="module")
def qwen(tiny_qwen_dir):
    return {p: create_extractor(ExtractorConfig(backend="qwen2_5_vl", model_path=str(tiny_qwen_dir), pooling=p))
            for p in POOLINGS}


def check_features(extractor, dim: int) -> None:
    a = extractor.extract([IMAGE_A], "go to the red cylinder")
    assert a.shape == (1, dim) and a.dtype == np.float32 and np.all(np.isfinite(a))
    assert np.array_equal(a, extractor.extract([IMAGE_A], "go to the red cylinder"))  # deterministic
    assert np.abs(a - extractor.extract([IMAGE_C], "go to the red cylinder")).max() > 1e-4  # image matters


def test_hybrid_concatenates_kosmos2_and_clip_features(hybrid, tiny_vlm_dir):
    assert hybrid.feature_dim == 64 + 24  # Kosmos-2 text width + CLIP projection dim
    check_features(hybrid, 88)
    kosmos = create_extractor(ExtractorConfig(backend="kosmos2", model_path=str(tiny_vlm_dir)))
    a = hybrid.extract([IMAGE_A], "go to the red cylinder")
    assert np.allclose(a[:, :64], kosmos.extract([IMAGE_A], "go to the red cylinder"), atol=1e-6)
    # the instruction changes the Kosmos-2 part only; CLIP sees the image alone
    b = hybrid.extract([IMAGE_A], "turn left")
    assert np.abs(a[:, :64] - b[:, :64]).max() > 1e-4 and np.array_equal(a[:, 64:], b[:, 64:])
    both = hybrid.extract([IMAGE_A, IMAGE_B], "go")
    mean = (hybrid.extract([IMAGE_A], "go") + hybrid.extract([IMAGE_B], "go")) / 2
    assert np.allclose(both, mean, atol=1e-5)


def test_hybrid_needs_a_clip_checkpoint(tiny_vlm_dir, tmp_path):
    with pytest.raises(VlmLoadError, match="clip_model_path: not set"):
        create_extractor(ExtractorConfig(backend="kosmos2_clip", model_path=str(tiny_vlm_dir)))
    with pytest.raises(VlmLoadError, match=r"clip_model_path: expected a clip or clip_vision_model checkpoint"):
        create_extractor(ExtractorConfig(backend="kosmos2_clip", model_path=str(tiny_vlm_dir),
                                         clip_model_path=str(tiny_vlm_dir)))


def test_qwen_features_per_pooling(qwen):
    for extractor in qwen.values():
        check_features(extractor, 64)
    text = qwen["last_token"]
    a = text.extract([IMAGE_A], "go to the red cylinder")
    assert np.abs(a - text.extract([IMAGE_A], "turn left")).max() > 1e-4
    image_only = qwen["mean_image"]  # image tokens come before the instruction (causal attention)
    assert np.allclose(image_only.extract([IMAGE_A], "go"), image_only.extract([IMAGE_A], "stop"), atol=1e-6)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_qwen_fast_forward_equals_stock_transformers_forward(qwen, pooling):
    extractor = qwen[pooling]
    views = [IMAGE_A, IMAGE_C]
    fast, inputs = extractor.prepare(views, "go to the red cylinder")
    assert fast, "224x224 views tile into whole attention windows"
    ours = extractor.fast_forward(**inputs)
    # stock: the model's own forward (per-window attention, its rope index, boolean-mask image scatter)
    hidden, ids = qwen_stock_hidden(extractor, extractor.vlm, views, "go to the red cylinder")
    image = ids.eq(extractor.image_token_id)
    if pooling == "last_token":
        stock = hidden[:, -1]
    else:
        weights = (image if pooling == "mean_image" else ~image).unsqueeze(-1).float()
        stock = (hidden * weights).sum(1) / weights.sum(1)
    assert torch.allclose(ours, stock, atol=1e-5), float((ours - stock).abs().max())


def test_qwen_views_of_other_sizes_use_the_stock_forward(qwen):
    extractor = qwen["last_token"]
    fast, _ = extractor.prepare([IMAGE_B], "go")
    assert not fast  # 240x320 is resized to a grid that does not tile into windows
    mixed = extractor.extract([IMAGE_A, IMAGE_B], "go")
    mean = (extractor.extract([IMAGE_A], "go") + extractor.extract([IMAGE_B], "go")) / 2
    assert np.allclose(mixed, mean, atol=1e-5)


@pytest.mark.parametrize("pooling", ["last_token", "mean_text"])
def test_kosmos2_fast_forward_equals_stock_text_transformer(tiny_vlm_dir, pooling):
    """Ours runs the padded prompt without a padding mask (causal only): the pooled tokens must still
    equal the stock, masked, unpadded forward's."""
    extractor = create_extractor(ExtractorConfig(backend="kosmos2", model_path=str(tiny_vlm_dir), pooling=pooling))
    inputs = extractor.prepare([IMAGE_A], "go to the red cylinder")
    ours = extractor.forward(**inputs)
    raw = extractor.processor(text=["<grounding>go to the red cylinder"], images=[IMAGE_A], return_tensors="pt",
                              num_image_tokens=extractor.image_tokens)
    with torch.inference_mode():
        latents = extractor.image_latents(raw["pixel_values"])
        hidden = extractor.model.text_model.model(
            input_ids=raw["input_ids"], attention_mask=raw["attention_mask"], image_embeds=latents,
            image_embeds_position_mask=raw["image_embeds_position_mask"]).last_hidden_state
    text = raw["attention_mask"].bool() & ~raw["image_embeds_position_mask"].bool()
    want = hidden[:, -1] if pooling == "last_token" else hidden[text].mean(dim=0, keepdim=True)
    assert inputs["input_ids"].shape[1] % 16 == 0 and inputs["input_ids"].shape[1] > raw["input_ids"].shape[1]
    assert torch.allclose(ours, want, atol=1e-5)


def test_qwen_directory_errors_name_the_problem(tiny_qwen_dir, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(tiny_qwen_dir, partial)
    for name in ("tokenizer.json", "vocab.json"):
        (partial / name).unlink()
    with pytest.raises(VlmLoadError, match="missing: tokenizer"):
        create_extractor(ExtractorConfig(backend="qwen2_5_vl", model_path=str(partial)))
    wrong = tmp_path / "wrong_ids"
    shutil.copytree(tiny_qwen_dir, wrong)
    config = json.loads((wrong / "config.json").read_text())
    config["image_token_id"] = 7
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(VlmLoadError, match=r"tokenizer maps <\|image_pad\|> to 5, config.json expects "
                                           r"image_token_id 7"):
        create_extractor(ExtractorConfig(backend="qwen2_5_vl", model_path=str(wrong)))



def test_a_transformers_release_the_qwen_forward_does_not_follow_is_refused_by_name():
    """transformers 5 changed Qwen's get_rope_index (5.17 fails inside it at the first forward): refused at
    start-up, naming the release found; the installed (pinned) release passes."""
    check_transformers_below("Qwen2.5-VL", (5, 0))
    check_transformers_below("Qwen2.5-VL", (5, 0), version="4.57.6")
    with pytest.raises(VlmLoadError, match=r"Qwen2\.5-VL: needs transformers < 5\.0 .*found 5\.17\.0"):
        check_transformers_below("Qwen2.5-VL", (5, 0), version="5.17.0")
    with pytest.raises(VlmLoadError, match=r"found 10\.1\.0"):
        check_transformers_below("Qwen2.5-VL", (5, 0), version="10.1.0")  # numbers, not strings, compared


@pytest.mark.parametrize("backend, name", [("kosmos2", "Kosmos-2"), ("kosmos2_clip", "Kosmos-2"),
                                           ("qwen2_5_vl", r"Qwen2\.5-VL")])
def test_every_extractor_refuses_transformers_5_at_start_up(backend, name, monkeypatch, tiny_vlm_dir,
                                                           tiny_clip_dir, tiny_qwen_dir):
    """Our forwards follow transformers 4.x's model code; with 5.17 Kosmos-2's first forward fails in the
    pooling and Qwen's in get_rope_index. With the installed release read as 5.17.0 (5 is not installable
    beside the pinned stack here), each extractor stops before loading, naming what it found."""
    from mobile_vla_ros.vlm import base

    monkeypatch.setattr(base, "transformers_version", lambda: "5.17.0")
    path = tiny_qwen_dir if backend == "qwen2_5_vl" else tiny_vlm_dir
    with pytest.raises(VlmLoadError, match=rf"{name}: needs transformers < 5\.0 .*found 5\.17\.0"):
        create_extractor(ExtractorConfig(backend=backend, model_path=str(path), clip_model_path=str(tiny_clip_dir)))


def test_a_kosmos2_directory_is_refused_as_qwen(tiny_vlm_dir):
    with pytest.raises(VlmLoadError, match=r"expected a qwen2_5_vl checkpoint .*, got 'kosmos-2'"):
        create_extractor(ExtractorConfig(backend="qwen2_5_vl", model_path=str(tiny_vlm_dir)))


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(VlmLoadError, match="'llava' is not one of kosmos2, kosmos2_clip, qwen2_5_vl"):
        create_extractor(ExtractorConfig(backend="llava", model_path="x"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["kosmos2", "kosmos2_clip", "qwen2_5_vl"])
def test_cuda_graph_replay_matches_the_eager_forward_on_gpu(backend, tiny_vlm_dir, tiny_clip_dir, tiny_qwen_dir):
    paths = {"qwen2_5_vl": {"model_path": str(tiny_qwen_dir)}}.get(
        backend, {"model_path": str(tiny_vlm_dir), "clip_model_path": str(tiny_clip_dir)})
    graphed = create_extractor(ExtractorConfig(backend=backend, device="cuda", dtype="fp16", **paths))
    eager = create_extractor(ExtractorConfig(backend=backend, device="cuda", dtype="fp16", cuda_graphs=False,
                                             **paths))
    cpu = create_extractor(ExtractorConfig(backend=backend, **paths))
    for views in ([IMAGE_A], [IMAGE_A, IMAGE_C]):
        for instruction in ("go", "turn left and drive to the red cylinder next to the blue box"):
            g = graphed.extract(views, instruction)
            assert np.allclose(g, eager.extract(views, instruction), atol=1e-3)  # same kernels, replayed
            assert np.allclose(g, cpu.extract(views, instruction), atol=5e-2, rtol=5e-2)  # fp16 vs fp32
    forward = graphed.fast_forward if backend == "qwen2_5_vl" else graphed.forward
    assert 2 <= forward.captured <= 4  # one graph per (views, padded text length)


@pytest.mark.skipif(shutil.which("cc") is None, reason="torch.compile (inductor) on the CPU needs a C compiler")
def test_a_compiled_forward_gives_the_plain_features_on_the_cpu(tiny_vlm_dir):
    """`compile_mode` on the CPU (inductor's C++ kernels): the forward is frozen, the features are the
    plain forward's to float32 rounding, and the instruction still matters."""
    from torch._dynamo.utils import counters

    plain = create_extractor(ExtractorConfig(model_path=str(tiny_vlm_dir)))
    compiled = create_extractor(ExtractorConfig(model_path=str(tiny_vlm_dir), compile_mode="default"))
    counters.clear()
    for instruction in ("go to the red cylinder", "go to the blue box"):  # the same padded length
        want = plain.extract([IMAGE_A], instruction)
        got = compiled.extract([IMAGE_A], instruction)
        assert np.allclose(got, want, atol=1e-4, rtol=1e-4), np.abs(got - want).max()
    assert np.abs(got - compiled.extract([IMAGE_A], "go to the red cylinder")).max() > 1e-4
    # Frozen: on the CPU inductor then packs the constant linear weights for oneDNN; an unfrozen
    # compile (e.g. `freezing` given only as an inductor option) packs none.
    assert counters["inductor"]["mkldnn_linear_weight_pack_matcher_count"] > 0, dict(counters["inductor"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["kosmos2", "kosmos2_clip", "qwen2_5_vl"])
def test_a_compiled_forward_is_captured_and_agrees_with_the_plain_graph_on_gpu(backend, tiny_vlm_dir, tiny_clip_dir,
                                                                                tiny_qwen_dir):
    """`compile_mode`: torch.compile before the capture; fused kernels sum in another order, so the
    features agree within FP16 rounding, not bit for bit."""
    paths = {"qwen2_5_vl": {"model_path": str(tiny_qwen_dir)}}.get(
        backend, {"model_path": str(tiny_vlm_dir), "clip_model_path": str(tiny_clip_dir)})
    plain = create_extractor(ExtractorConfig(backend=backend, device="cuda", dtype="fp16", **paths))
    compiled = create_extractor(ExtractorConfig(backend=backend, device="cuda", dtype="fp16", compile_mode="default",
                                                **paths))
    for views in ([IMAGE_A], [IMAGE_A, IMAGE_C]):
        want = plain.extract(views, "go to the red cylinder")
        for _ in range(2):  # the compilation and capture, then a replay
            got = compiled.extract(views, "go to the red cylinder")
            assert np.allclose(got, want, atol=2e-2, rtol=2e-2), np.abs(got - want).max()
            assert float((got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want)) > 0.9999
    forward = compiled.fast_forward if backend == "qwen2_5_vl" else compiled.forward
    assert forward.captured == 2
