"""INT8 weight-only VLM (`dtype: int8w`): for the 16 GB Orin NX, where weight bytes set both the
forward's latency (memory-bound at batch 1) and whether Qwen2.5-VL-3B fits beside everything else.

Every linear layer's weight is stored as int8 with one scale per output channel and group of
`GROUP_SIZE` input channels, symmetric, round to nearest; the token-embedding table with one scale
per row. Weights take half their FP16 bytes plus the scales (1.6 % of FP16 at groups of 64).
Why groups: with one scale per output channel the error of 68 quantised layers adds up in
Qwen2.5-VL-3B (feature cosine 0.9924 vs FP16 at 1 view on the H200, full size); groups of 128 / 64 / 32
gave 0.9954 / 0.9962 / 0.9975 (`docs/bench/int8_sensitivity_qwen2_5_vl_h200.json`).
Activations stay in the compute dtype (FP16 on CUDA, FP32 on the CPU). On CUDA a linear layer runs
the Triton kernel of `int8_gemm.py` (int8 tiles scaled in registers before the tensor-core dot); on
the CPU, or without Triton, it dequantises its weight right before the matmul (one temporary float
weight at a time), which saves memory, not time. A language-model head tied to the embedding table
shares its int8 copy. Done after loading, from the checkpoint's own weights: nothing else is
downloaded or stored.
"""

from __future__ import annotations

import torch

from .int8_gemm import available as int8_gemm_available
from .int8_gemm import w8a16_linear

GROUP_SIZE = 64


def quantise(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] -> int8 [N, K] and float32 scales [N, ceil(K / group_size)], symmetric per group of
    `group_size` input channels (the last group of a row may be shorter)."""
    w = weight.detach().float()
    n, k = w.shape
    groups = -(-k // group_size)
    padded = torch.nn.functional.pad(w, (0, groups * group_size - k)).view(n, groups, group_size)
    scale = padded.abs().amax(dim=2).clamp(min=1e-12) / 127.0
    q = torch.round(padded / scale[..., None]).clamp(-127, 127).to(torch.int8)
    return q.view(n, -1)[:, :k].contiguous(), scale


def dequantise(qweight: torch.Tensor, scale: torch.Tensor, group_size: int) -> torch.Tensor:
    """int8 [N, K] with scales [N, groups] -> [N, K] in the scales' dtype."""
    per_column = scale.repeat_interleave(group_size, dim=1)[:, :qweight.shape[1]]
    return qweight.to(scale.dtype) * per_column


KERNELS = ("triton", "dequantise")


class Int8Linear(torch.nn.Module):
    """`kernel`: "triton" (int8_gemm, CUDA) or "dequantise"."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, group_size: int, bias: torch.Tensor | None,
                 dtype: torch.dtype, kernel: str) -> None:
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"int8 kernel: expected one of {', '.join(KERNELS)}, got {kernel!r}")
        groups = -(-qweight.shape[1] // group_size)
        if scale.shape != (qweight.shape[0], groups):
            raise ValueError(f"int8 scales: expected shape {(qweight.shape[0], groups)} for weight "
                             f"{tuple(qweight.shape)} in groups of {group_size}, got {tuple(scale.shape)}")
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale.to(dtype))
        self.group_size = group_size
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().to(dtype), requires_grad=False)
        self.kernel = kernel
        self.in_features, self.out_features = qweight.shape[1], qweight.shape[0]

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, dtype: torch.dtype, kernel: str,
                    group_size: int = GROUP_SIZE) -> Int8Linear:
        qweight, scale = quantise(linear.weight, group_size)
        return cls(qweight, scale, group_size, linear.bias, dtype, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == "triton":
            return w8a16_linear(x, self.qweight, self.scale, self.group_size, self.bias)
        weight = dequantise(self.qweight, self.scale, self.group_size).to(x.dtype)
        return torch.nn.functional.linear(x, weight, self.bias)


class Int8Embedding(torch.nn.Module):
    """One scale per row: a lookup reads whole rows, and a tied head uses the table as [V, D] weights."""

    def __init__(self, embedding: torch.nn.Embedding, dtype: torch.dtype) -> None:
        super().__init__()
        self.group_size = embedding.weight.shape[1]
        qweight, scale = quantise(embedding.weight, self.group_size)
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale.to(dtype))
        self.padding_idx = embedding.padding_idx
        self.embedding_scale = getattr(embedding, "embed_scale", None)  # scaled embeddings keep their factor

    @property
    def weight(self) -> torch.Tensor:
        """The dequantised table (transformers reads `.weight` for shapes and tying)."""
        return dequantise(self.qweight, self.scale, self.group_size)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = torch.nn.functional.embedding(ids, self.qweight).to(self.scale.dtype) * self.scale[ids]
        return out if self.embedding_scale is None else out * self.embedding_scale


def choose_kernel(device: str) -> str:
    """The int8 linear kernel for this device: Triton's on CUDA when Triton is there, else dequantise
    (torch's own int8 kernels take one scale per output channel only; on CUDA, torch 2.11 on the H200,
    `_weight_int8pack_mm` took 494 ms for a Kosmos-2 forward that FP16 runs in 4.4 ms)."""
    return "triton" if device.startswith("cuda") and int8_gemm_available(device) else "dequantise"


def quantise_weights(model: torch.nn.Module, dtype: torch.dtype) -> dict:
    """Replace every Linear and Embedding of `model` in place; returns what was done (counts, the
    linear kernel, weight bytes before and after)."""
    device = next(model.parameters()).device
    kernel = choose_kernel(str(device))
    before = weight_bytes(model)
    embeddings: dict[int, Int8Embedding] = {}
    counts = {"linear": 0, "embedding": 0, "tied": 0}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Embedding) and child.weight.shape[0] > 1:
                embeddings[id(child.weight)] = replacement = Int8Embedding(child, dtype)
                setattr(parent, name, replacement)
                counts["embedding"] += 1
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, torch.nn.Linear):
                continue
            tied = embeddings.get(id(child.weight))
            if tied is not None:  # an LM head sharing the embedding table shares its int8 copy
                replacement = Int8Linear(tied.qweight, tied.scale, tied.group_size, child.bias, dtype, kernel)
                counts["tied"] += 1
            else:
                replacement = Int8Linear.from_linear(child, dtype, kernel)
                counts["linear"] += 1
            setattr(parent, name, replacement)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {**counts, "kernel": kernel, "bytes_before": before,
            "bytes_after": weight_bytes(model)}


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the distinct parameter and buffer tensors (shared ones once)."""
    seen: dict[int, int] = {}
    for tensor in (*model.parameters(), *model.buffers()):
        seen[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
    return sum(seen.values())
