"""`dtype: int8w`: the VLM's linear layers and embedding tables stored as int8 (vlm/int8_weights.py),
against the same checkpoint in FP32 on the CPU: features, what is replaced, bytes, the tied head."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mobile_vla_ros.sim.world import SimRobot, sample_task
from mobile_vla_ros.vlm.base import ExtractorConfig, VlmLoadError
from mobile_vla_ros.vlm.factory import create_extractor
from mobile_vla_ros.vlm.int8_weights import Int8Embedding, Int8Linear, dequantise, quantise, weight_bytes

SHIPPED_VLM = Path(__file__).resolve().parents[1] / "models" / "default" / "vlm"
INSTRUCTIONS = ("go to the red cylinder", "drive to the green box")


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    out = []
    for seed in (3, 5):
        with SimRobot(sample_task(seed)) as robot:
            out.append(robot.render())
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.mark.parametrize("backend", ["kosmos2", "kosmos2_clip", "qwen2_5_vl"])
def test_int8_weights_keep_the_features_and_quarter_the_fp32_bytes(backend, frames, tiny_clip_dir, tiny_qwen_dir):
    model = {"qwen2_5_vl": str(tiny_qwen_dir)}.get(backend, str(SHIPPED_VLM))
    config = ExtractorConfig(backend=backend, model_path=model, clip_model_path=str(tiny_clip_dir))
    fp32, int8 = create_extractor(config), create_extractor(replace(config, dtype="int8w"))
    for frame in frames:
        for instruction in INSTRUCTIONS:
            assert cosine(fp32.extract([frame], instruction), int8.extract([frame], instruction)) >= 0.999
    models = [int8.model] + ([int8.clip] if backend == "kosmos2_clip" else [])
    for m in models:  # nothing left in float: every linear layer and embedding table is int8
        assert not any(isinstance(mod, (torch.nn.Linear, torch.nn.Embedding)) for mod in m.modules())
        quantised = [mod for mod in m.modules() if isinstance(mod, (Int8Linear, Int8Embedding))]
        assert quantised and all(mod.qweight.dtype == torch.int8 for mod in quantised)
    # the replaced weights take a quarter of their FP32 bytes plus one FP32 scale per 64 weights; norms,
    # biases and the patch convolution stay float (a large share at this tiny size, < 1 % at full size,
    # where the bench measured int8w at 51.6 % of FP16: docs/bench/vlm_int8w_grouped_h200.log)
    assert quantised_bytes(int8.model, int8=True) <= 0.27 * quantised_bytes(fp32.model, int8=False)
    assert weight_bytes(int8.model) < 0.6 * weight_bytes(fp32.model)


def quantised_bytes(model, int8: bool) -> int:
    """Bytes of the linear and embedding weights (int8 tables and scales once when shared)."""
    kinds = (Int8Linear, Int8Embedding) if int8 else (torch.nn.Linear, torch.nn.Embedding)
    tensors = {}
    for mod in model.modules():
        if isinstance(mod, kinds):
            for t in ((mod.qweight, mod.scale) if int8 else (mod.weight,)):
                tensors[t.data_ptr()] = t.numel() * t.element_size()
    return sum(tensors.values())


def test_a_tied_lm_head_shares_the_int8_table(tiny_qwen_dir):
    int8 = create_extractor(ExtractorConfig(backend="qwen2_5_vl", model_path=str(tiny_qwen_dir), dtype="int8w"))
    table = int8.model.get_input_embeddings()
    assert isinstance(table, Int8Embedding) and isinstance(int8.model.lm_head, Int8Linear)
    assert int8.model.lm_head.qweight is table.qweight  # one int8 copy, as the FP16 checkpoint has one table


def test_each_group_of_input_channels_gets_its_own_scale():
    """Rounding stays within half a step of each group's scale, also in a short last group, and an
    outlier coarsens only its own group (with one scale per row it would coarsen the whole row)."""
    torch.manual_seed(0)
    weight = torch.randn(6, 200) * 0.02
    weight[2, 5] = 1.0  # an outlier in the first group of row 2
    q, scale = quantise(weight, 64)
    assert q.dtype == torch.int8 and q.shape == (6, 200) and scale.shape == (6, 4)  # 64+64+64+8
    error = (dequantise(q, scale, 64) - weight).abs()
    steps = scale.repeat_interleave(64, dim=1)[:, :200]
    assert bool((error <= 0.5 * steps + 1e-7).all())
    assert scale[2, 0] > 10 * scale[2, 1:].max()  # the outlier's group only
    per_row_error = (dequantise(*quantise(weight, 200), 200) - weight).abs()
    assert error[2, 64:].max() < 0.1 * per_row_error[2, 64:].max()


def test_an_int8_linear_layer_is_the_float_layer_with_its_dequantised_weights():
    torch.manual_seed(0)
    linear = torch.nn.Linear(100, 48)
    layer = Int8Linear.from_linear(linear, torch.float32, kernel="dequantise", group_size=32)
    x = torch.randn(2, 5, 100)
    with torch.no_grad():
        want = x @ dequantise(layer.qweight, layer.scale, 32).T + linear.bias
        assert torch.allclose(layer(x), want, atol=1e-5)
        assert (layer(x) - linear(x)).abs().max() < 0.05 * linear(x).abs().max()
    with pytest.raises(ValueError, match="expected one of triton, dequantise, got 'fused'"):
        Int8Linear.from_linear(linear, torch.float32, kernel="fused")
    with pytest.raises(ValueError, match=r"expected shape \(48, 4\) for weight \(48, 100\) in groups of 32, "
                                         r"got \(48, 1\)"):
        Int8Linear(layer.qweight, layer.scale[:, :1], 32, None, torch.float32, "dequantise")


def test_the_kernel_is_chosen_by_device():
    from mobile_vla_ros.vlm import int8_gemm
    from mobile_vla_ros.vlm.int8_weights import choose_kernel

    assert choose_kernel("cpu") == "dequantise"
    assert choose_kernel("cuda") == ("triton" if int8_gemm.available("cuda") else "dequantise")
    assert not int8_gemm.available("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (and Triton)")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_the_triton_int8_gemm_matches_the_dequantised_product_on_gpu(dtype):
    """Shapes off every block size (rows 1..1285, odd N and K), groups of one tile, of several tiles or
    of the whole row (a tied head), with and without bias, and a strided input."""
    torch.manual_seed(0)
    for m, n, k in ((1, 48, 64), (7, 2048, 2048), (85, 8192, 2048), (1285, 1000, 1024), (33, 96, 200)):
        for bias in (True, False):
            for group_size in (64, 256, k):
                linear = torch.nn.Linear(k, n, bias=bias).cuda()
                triton_layer, dequantised = (
                    Int8Linear.from_linear(linear, dtype, kernel=kk, group_size=group_size).cuda()
                    for kk in ("triton", "dequantise"))
                x = torch.randn(m, k, device="cuda", dtype=dtype)
                with torch.no_grad():
                    got, want = triton_layer(x).float(), dequantised(x).float()
                tolerance = 2e-2 if dtype == torch.bfloat16 else 2e-3
                assert got.shape == (m, n)
                assert (got - want).abs().max() <= tolerance * want.abs().max(), (m, n, k, bias, group_size)
    x = torch.randn(4, 10, 2 * 64, device="cuda", dtype=torch.float16)[..., ::2]  # last dim stride 2
    layer = Int8Linear.from_linear(torch.nn.Linear(64, 32).cuda(), torch.float16, kernel="triton").cuda()
    reference = Int8Linear.from_linear(torch.nn.Linear(64, 32), torch.float16, kernel="dequantise")
    reference.load_state_dict(layer.state_dict())
    with torch.no_grad():
        assert torch.allclose(layer(x).float(), reference.cuda()(x.contiguous()).float(), atol=2e-3)
        coarse = Int8Linear.from_linear(torch.nn.Linear(128, 8).cuda(), torch.float16, kernel="triton", group_size=32)
        with pytest.raises(ValueError, match="group size must be a multiple of 64 or at least 128, got 32"):
            coarse(torch.randn(2, 128, device="cuda", dtype=torch.float16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (and Triton)")
@pytest.mark.parametrize("backend", ["kosmos2", "qwen2_5_vl"])
def test_int8w_on_the_gpu_uses_the_triton_kernel_and_keeps_the_features(backend, frames, tiny_qwen_dir):
    """Through the CUDA-graph forward: int8w (Triton) against FP32 on the CPU."""
    model = {"qwen2_5_vl": str(tiny_qwen_dir)}.get(backend, str(SHIPPED_VLM))
    config = ExtractorConfig(backend=backend, model_path=model)
    reference, int8 = create_extractor(config), create_extractor(replace(config, device="cuda", dtype="int8w"))
    assert {m.kernel for m in int8.model.modules() if isinstance(m, Int8Linear)} == {"triton"}
    for frame in frames:
        for instruction in INSTRUCTIONS:
            assert cosine(reference.extract([frame], instruction), int8.extract([frame], instruction)) >= 0.995


def test_int8w_is_accepted_on_the_cpu_and_other_names_are_refused():
    from mobile_vla_ros.vlm.base import torch_dtype

    assert torch_dtype("int8w", "cpu") is torch.float32
    with pytest.raises(VlmLoadError, match="not one of fp16, bf16, fp32, int8w"):
        torch_dtype("int4", "cpu")
    with pytest.raises(VlmLoadError, match=r"use dtype fp32 \(or int8w\) on the cpu"):
        torch_dtype("fp16", "cpu")
