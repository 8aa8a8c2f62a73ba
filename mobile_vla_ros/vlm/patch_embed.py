"""Patch embeddings as one matmul instead of a convolution.

A ViT's patch embedding is a convolution whose stride equals its kernel (Kosmos-2's and CLIP's
Conv2d, Qwen2.5-VL's Conv3d): each output is the dot product of one patch with each filter, which is a
matmul over the flattened patches. On the H200, cuDNN ran Kosmos-2's 14x14 one as an implicit GEMM
without shared memory, 48 us of the 2.7 ms forward
(`docs/bench/profile_kosmos2_1view_frozen_causal_h200.txt`); laid out as a matmul it is one small
cuBLAS GEMM. The filters stay the model's own parameter, so checkpoints load and save unchanged.
"""

from __future__ import annotations

import math

import torch


def is_patch_embedding(module: torch.nn.Module) -> bool:
    """A convolution that cuts its input into non-overlapping patches (stride = kernel, no padding)."""
    return (isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d)) and module.stride == module.kernel_size
            and all(p == 0 for p in module.padding) and all(d == 1 for d in module.dilation)
            and module.groups == 1)


class MatmulPatchEmbedding(torch.nn.Module):
    """The same outputs as `conv` (a patch embedding): [B, C, *size] -> [B, D, *grid]."""

    def __init__(self, conv: torch.nn.Module) -> None:
        super().__init__()
        if not is_patch_embedding(conv):
            raise ValueError(f"{conv} is not a patch embedding (stride = kernel, no padding, groups 1)")
        self.kernel = tuple(conv.kernel_size)
        self.weight = conv.weight  # [D, C, *kernel]: the checkpoint's own tensor
        self.register_parameter("bias", conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *size = x.shape
        grid = [s // k for s, k in zip(size, self.kernel)]
        x = x[(slice(None), slice(None), *(slice(0, g * k) for g, k in zip(grid, self.kernel)))]  # as conv: floor
        x = x.reshape(b, c, *(n for g, k in zip(grid, self.kernel) for n in (g, k)))
        dims = len(self.kernel)
        # [B, C, g1, k1, g2, k2, ...] -> [B, g1, g2, ..., C, k1, k2, ...]: one row per patch, in the filters' order
        order = [0, *(2 + 2 * i for i in range(dims)), 1, *(3 + 2 * i for i in range(dims))]
        patches = x.permute(order).reshape(b, math.prod(grid), c * math.prod(self.kernel))
        out = torch.nn.functional.linear(patches, self.weight.reshape(self.weight.shape[0], -1), self.bias)
        return out.transpose(1, 2).reshape(b, -1, *grid)


def use_matmul_patch_embeddings(model: torch.nn.Module) -> int:
    """Replaces every patch-embedding convolution of `model` in place; returns how many."""
    targets = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if is_patch_embedding(child)]
    for parent, name, child in targets:
        setattr(parent, name, MatmulPatchEmbedding(child))
    return len(targets)
