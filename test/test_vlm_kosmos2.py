"""Kosmos-2 extractor through the real from_pretrained path on a tiny model the test builds."""

import json
import shutil

import numpy as np
import pytest

from mobile_vla_ros.vlm.base import ExtractorConfig, VlmLoadError
from mobile_vla_ros.vlm.factory import create_extractor
from mobile_vla_ros.vlm.kosmos2 import RESAMPLER_CAUSAL_KEY

RNG = np.random.default_rng(0)
IMAGE_A = RNG.integers(0, 255, (224, 224, 3), dtype=np.uint8)
IMAGE_B = RNG.integers(0, 255, (240, 320, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def extractors(tiny_vlm_dir):
    return {pooling: create_extractor(ExtractorConfig(model_path=str(tiny_vlm_dir), pooling=pooling))
            for pooling in ("last_token", "mean_text", "mean_image")}


def test_features_shape_finite_and_deterministic(extractors):
    for extractor in extractors.values():
        a = extractor.extract([IMAGE_A], "go to the red cylinder")
        assert a.shape == (1, 64) and a.dtype == np.float32 and np.all(np.isfinite(a))
        assert np.array_equal(a, extractor.extract([IMAGE_A], "go to the red cylinder"))


def test_features_depend_on_instruction_and_image(extractors):
    text = extractors["last_token"]
    a = text.extract([IMAGE_A], "go to the red cylinder")
    assert np.abs(a - text.extract([IMAGE_A], "turn left")).max() > 1e-3
    # a dark view: this untrained model's resampler averages its (full-attention) inputs, so two views of
    # uniform noise give nearly the same latents
    assert np.abs(a - text.extract([np.zeros_like(IMAGE_A)], "go to the red cylinder")).max() > 1e-3
    image_only = extractors["mean_image"]  # pooling over image tokens ignores the instruction
    assert np.array_equal(image_only.extract([IMAGE_A], "go"), image_only.extract([IMAGE_A], "stop"))


def test_multi_view_is_one_batch_averaged_per_view(extractors):
    ex = extractors["last_token"]
    both = ex.extract([IMAGE_A, IMAGE_B], "go to the red cylinder")
    mean = (ex.extract([IMAGE_A], "go to the red cylinder") + ex.extract([IMAGE_B], "go to the red cylinder")) / 2
    assert both.shape == (1, 64) and np.allclose(both, mean, atol=1e-5)


def test_the_resampler_latents_attend_to_every_image_token(extractors, tiny_vlm_dir):
    """Each image latent depends on every vision token (Kosmos-2's resampler is not causal) and equals
    the eager attention path of transformers, which applies no mask."""
    import torch
    from transformers import Kosmos2ForConditionalGeneration

    ex = extractors["mean_image"]
    pixels = ex.prepare([IMAGE_A], "go")["pixel_values"]
    projection = ex.model.image_to_text_projection
    with torch.inference_mode():
        tokens = ex.vision_tokens(pixels)
        latents = projection(tokens)[0]
        moved = tokens.clone()
        moved[:, -1] += 1.0  # the last patch: past every latent's index
        changed = (projection(moved)[0] - latents).abs().amax(dim=-1)[0]
        eager = Kosmos2ForConditionalGeneration.from_pretrained(tiny_vlm_dir, attn_implementation="eager").eval()
        reference = eager.image_to_text_projection(tokens)[0]
    assert tokens.shape[1] > latents.shape[1]
    assert bool((changed > 1e-4).all()), changed
    assert torch.allclose(latents, reference, atol=1e-5)
    assert torch.allclose(ex.image_latents(pixels), latents)


def test_a_checkpoint_trained_with_a_causal_resampler_runs_as_trained(tiny_vlm_dir, tmp_path):
    """config.json `resampler_causal_attention: true` (the stand-in shipped before 2026-12-03): latent i
    sees image tokens 0..i only, so the last patch moves no latent and the class token moves all."""
    import torch

    causal = tmp_path / "causal"
    shutil.copytree(tiny_vlm_dir, causal)
    config = json.loads((causal / "config.json").read_text())
    (causal / "config.json").write_text(json.dumps({**config, RESAMPLER_CAUSAL_KEY: True}))
    ex = create_extractor(ExtractorConfig(model_path=str(causal), pooling="mean_image"))
    projection = ex.model.image_to_text_projection
    tokens = torch.randn(1, 50, ex.model.config.vision_config.hidden_size)
    with torch.inference_mode():
        latents = projection(tokens)[0]
        for index, moved_latents in ((-1, 0), (0, latents.shape[1])):
            moved = tokens.clone()
            moved[:, index] += 1.0
            changed = (projection(moved)[0] - latents).abs().amax(dim=-1)[0]
            assert int((changed > 1e-4).sum()) == moved_latents, (index, changed)


def test_incomplete_or_wrong_model_directories_are_named(tiny_vlm_dir, tmp_path):
    with pytest.raises(VlmLoadError, match="does not exist"):
        create_extractor(ExtractorConfig(model_path=str(tmp_path / "none")))
    partial = tmp_path / "partial"
    shutil.copytree(tiny_vlm_dir, partial)
    (partial / "model.safetensors").unlink()
    with pytest.raises(VlmLoadError, match="missing: model weights"):
        create_extractor(ExtractorConfig(model_path=str(partial)))
    # A config of another architecture is refused instead of silently building random weights.
    other = tmp_path / "other"
    shutil.copytree(tiny_vlm_dir, other)
    config = json.loads((other / "config.json").read_text())
    config["model_type"] = "clip"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(VlmLoadError, match=r"expected a kosmos-2 checkpoint .*, got 'clip'"):
        create_extractor(ExtractorConfig(model_path=str(other)))


def test_bad_backend_pooling_and_dtype_are_refused(tiny_vlm_dir):
    with pytest.raises(VlmLoadError, match="'llava' is not one of kosmos2, kosmos2_clip, qwen2_5_vl"):
        create_extractor(ExtractorConfig(backend="llava", model_path=str(tiny_vlm_dir)))
    with pytest.raises(VlmLoadError, match="feature_pooling"):
        create_extractor(ExtractorConfig(model_path=str(tiny_vlm_dir), pooling="max"))
    with pytest.raises(VlmLoadError, match="fp16 needs device cuda"):
        create_extractor(ExtractorConfig(model_path=str(tiny_vlm_dir), dtype="fp16"))


def test_the_stand_in_tokenizer_is_the_same_in_every_process():
    """The unigram trainer orders near-tied pieces differently from one process to the next; the
    stand-in's build orders them itself, so rebuilding it gives the same token ids."""
    import subprocess
    import sys

    build = ("import hashlib; from mobile_vla_ros.vlm.tiny import kosmos2_tokenizer; "
             "print(hashlib.sha256(kosmos2_tokenizer().to_str().encode()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", build], capture_output=True, text=True, check=True).stdout
               for _ in range(4)}
    assert len(digests) == 1, digests
