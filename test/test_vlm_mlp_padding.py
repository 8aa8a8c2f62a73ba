"""MLP hidden layers padded to whole 64-channel tiles (vlm/mlp_padding.py): the same outputs as the
unpadded layers, for the transformers MLP classes the extractors load and inside a Qwen2.5-VL whose
vision MLP is as misaligned as the released checkpoint's (3420 channels)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from vlm_reference import qwen_stock_hidden

from mobile_vla_ros.vlm.base import ExtractorConfig
from mobile_vla_ros.vlm.factory import create_extractor
from mobile_vla_ros.vlm.mlp_padding import pad_mlp_hidden


def _qwen_vision_mlp(width: int):
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLMLP

    config = Qwen2_5_VLConfig(vision_config={"hidden_size": 32, "intermediate_size": width}).vision_config
    return Qwen2_5_VLMLP(config, bias=True)


def _clip_mlp(width: int):
    from transformers import CLIPVisionConfig
    from transformers.models.clip.modeling_clip import CLIPMLP

    return CLIPMLP(CLIPVisionConfig(hidden_size=32, intermediate_size=width))


@pytest.mark.parametrize("build, names", [(_qwen_vision_mlp, ("gate_proj", "up_proj", "down_proj")),
                                          (_clip_mlp, ("fc1", "fc2"))])
def test_a_padded_mlp_gives_the_same_outputs_with_whole_tiles(build, names):
    torch.manual_seed(0)
    mlp = build(50).eval()
    x = torch.randn(7, 32)
    assert all(getattr(mlp, n).bias.abs().min() > 0 for n in names)  # padded channels must not lean on zero biases
    with torch.no_grad():
        want = mlp(x)
        assert pad_mlp_hidden(mlp) == 1
        got = mlp(x)
    assert [getattr(mlp, n).weight.shape for n in names][-1] == (32, 64)
    assert all(getattr(mlp, n).weight.shape == (64, 32) for n in names[:-1])
    assert torch.allclose(got, want, atol=1e-6), float((got - want).abs().max())
    assert sorted(mlp.state_dict()) == sorted(f"{n}.{p}" for n in names for p in ("weight", "bias"))


def test_an_mlp_that_normalises_its_hidden_layer_is_left_alone():
    """Kosmos-2's text FFN: fc1 -> activation -> LayerNorm over the hidden layer -> fc2; zero channels
    would change the norm's statistics (and its weights do not cover them)."""
    from transformers import Kosmos2Config
    from transformers.models.kosmos2.modeling_kosmos2 import Kosmos2TextFFN

    ffn = Kosmos2TextFFN(Kosmos2Config(text_config={"embed_dim": 32, "ffn_dim": 50}).text_config).eval()
    layers = [ffn.fc1, ffn.fc2]
    assert pad_mlp_hidden(ffn) == 0 and [ffn.fc1, ffn.fc2] == layers and ffn.fc1.out_features == 50
    with torch.no_grad():
        assert ffn(torch.randn(3, 32)).shape == (3, 32)


def test_aligned_mlps_are_left_alone_and_inconsistent_ones_refused():
    mlp = _qwen_vision_mlp(128)
    layers = [mlp.gate_proj, mlp.up_proj, mlp.down_proj]
    assert pad_mlp_hidden(mlp) == 0 and [mlp.gate_proj, mlp.up_proj, mlp.down_proj] == layers
    mlp.up_proj = torch.nn.Linear(32, 100)
    with pytest.raises(ValueError, match=r"hidden widths differ: \[128, 100\] into, 128 out"):
        pad_mlp_hidden(mlp)


def test_qwen_with_the_released_misaligned_vision_mlp_loads_padded_and_equals_the_stock_model(
        tiny_qwen_dir, tmp_path):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    path = shutil.copytree(tiny_qwen_dir, tmp_path / "qwen_3420_like")
    config = Qwen2_5_VLConfig.from_pretrained(path)
    config.vision_config.intermediate_size = 50  # like 3420: not a multiple of 64 (nor of 8)
    torch.manual_seed(5)
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(path)

    extractor = create_extractor(ExtractorConfig(backend="qwen2_5_vl", model_path=str(path), pooling="last_token"))
    blocks = extractor.vlm.visual.blocks
    assert all(b.mlp.up_proj.out_features == 64 and b.mlp.down_proj.in_features == 64 for b in blocks)
    stock = Qwen2_5_VLForConditionalGeneration.from_pretrained(path).eval()
    visual = stock.model.visual if hasattr(stock, "model") else stock.visual
    assert visual.blocks[0].mlp.up_proj.out_features == 50
    # our forward on the padded model against the stock model's own forward, unpadded
    views = [np.random.default_rng(0).integers(0, 255, (224, 224, 3), dtype=np.uint8)]
    fast, inputs = extractor.prepare(views, "go to the red cylinder")
    assert fast
    ours = extractor.fast_forward(**inputs)
    stock_model = stock.model if hasattr(stock, "model") else stock
    want = qwen_stock_hidden(extractor, stock_model, views, "go to the red cylinder")[0][:, -1]
    assert torch.allclose(ours, want, atol=1e-5), float((ours - want).abs().max())
