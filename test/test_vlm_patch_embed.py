"""Patch embeddings run as one matmul (vlm/patch_embed.py): the same outputs as the convolutions they
replace, on their own and inside each extractor's vision tower against the stock transformers model."""

from __future__ import annotations

import pytest
import torch

from mobile_vla_ros.vlm.base import ExtractorConfig
from mobile_vla_ros.vlm.factory import create_extractor
from mobile_vla_ros.vlm.patch_embed import MatmulPatchEmbedding, use_matmul_patch_embeddings


@pytest.mark.parametrize("conv, shape", [
    (torch.nn.Conv2d(3, 16, 14, stride=14, bias=False), (2, 3, 224, 224)),  # Kosmos-2 / CLIP
    (torch.nn.Conv2d(3, 8, (4, 6), stride=(4, 6), bias=True), (1, 3, 18, 27)),  # sizes not a multiple: floor
    (torch.nn.Conv3d(3, 16, (2, 14, 14), stride=(2, 14, 14), bias=False), (7, 3, 2, 14, 14)),  # Qwen2.5-VL
    (torch.nn.Conv3d(2, 4, (2, 3, 5), stride=(2, 3, 5), bias=True), (2, 2, 4, 9, 10)),
])
def test_the_matmul_equals_the_convolution(conv, shape):
    torch.manual_seed(0)
    x = torch.randn(shape)
    with torch.no_grad():
        want = conv(x)
        got = MatmulPatchEmbedding(conv)(x)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())


def test_only_patch_embeddings_are_replaced():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 4, stride=4), torch.nn.Conv2d(8, 8, 3, padding=1),
                                torch.nn.Conv2d(8, 8, 2, stride=1))
    weight = model[0].weight
    assert use_matmul_patch_embeddings(model) == 1
    assert isinstance(model[0], MatmulPatchEmbedding) and model[0].weight is weight
    assert isinstance(model[1], torch.nn.Conv2d) and isinstance(model[2], torch.nn.Conv2d)
    assert set(model.state_dict()) == {"0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias"}
    with pytest.raises(ValueError, match="not a patch embedding"):
        MatmulPatchEmbedding(model[1])


def test_kosmos2_vision_tower_equals_the_stock_model(tiny_vlm_dir):
    from transformers import Kosmos2ForConditionalGeneration

    extractor = create_extractor(ExtractorConfig(backend="kosmos2", model_path=str(tiny_vlm_dir)))
    assert isinstance(extractor.model.vision_model.model.embeddings.patch_embedding, MatmulPatchEmbedding)
    stock = Kosmos2ForConditionalGeneration.from_pretrained(tiny_vlm_dir).eval()
    assert isinstance(stock.vision_model.model.embeddings.patch_embedding, torch.nn.Conv2d)
    pixels = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        want = stock.vision_model(pixel_values=pixels)[0]
        got = extractor.model.vision_model(pixel_values=pixels)[0]
    assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())


def test_qwen_vision_tower_equals_the_stock_model(tiny_qwen_dir):
    from transformers import Qwen2_5_VLForConditionalGeneration

    extractor = create_extractor(ExtractorConfig(backend="qwen2_5_vl", model_path=str(tiny_qwen_dir)))
    assert isinstance(extractor.vlm.visual.patch_embed.proj, MatmulPatchEmbedding)
    stock = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_qwen_dir).eval()
    visual = stock.model.visual if hasattr(stock, "model") else stock.visual
    config = visual.config
    grid = torch.tensor([[1, 4, 4]])  # one frame of 4x4 patches, as flattened patch rows
    pixels = torch.randn(16, config.in_channels * config.temporal_patch_size * config.patch_size ** 2)
    with torch.inference_mode():
        want = visual(pixels, grid_thw=grid)
        got = extractor.vlm.visual(pixels, grid_thw=grid)
    want, got = (t.pooler_output if hasattr(t, "pooler_output") else t for t in (want, got))
    assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())
