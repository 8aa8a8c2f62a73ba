"""INT8 weight-only VLM (`dtype: int8w`): for the 16 GB Orin NX, where weight bytes set both the
forward's latency (memory-bound at batch 1) and whether Qwen2.5-VL-3B fits beside everything else.

Every linear layer's weight and the token-embedding table are stored as int8 with one scale per
output channel (per row of the table), symmetric, round to nearest: weights take half their FP16
bytes plus the scales. Activations stay in the compute dtype (FP16 on CUDA, FP32 on the CPU). On
the CPU a linear layer multiplies through `torch._weight_int8pack_mm` (int8 weights read directly); on
CUDA through the Triton kernel of `int8_gemm.py` (int8 tiles converted in registers, the scale applied
to the accumulator); without Triton it dequantises its weight right before the matmul (one temporary
FP16 weight at a time), which saves memory, not time. A
language-model head tied to the embedding table shares its int8 copy. Done after loading, from the
checkpoint's own weights: nothing else is downloaded or stored.
"""

from __future__ import annotations

import torch

from .int8_gemm import available as int8_gemm_available
from .int8_gemm import w8a16_linear


def _quantise_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] -> int8 [N, K] and scales [N] (float32), symmetric per row."""
    w = weight.detach().float()
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


KERNELS = ("int8pack", "triton", "dequantise")


class Int8Linear(torch.nn.Module):
    """`kernel`: "int8pack" (torch's CPU kernel), "triton" (int8_gemm, CUDA) or "dequantise"."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, dtype: torch.dtype,
                 kernel: str) -> None:
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"int8 kernel: expected one of {', '.join(KERNELS)}, got {kernel!r}")
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale.to(dtype))
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().to(dtype), requires_grad=False)
        self.kernel = kernel
        self.in_features, self.out_features = qweight.shape[1], qweight.shape[0]

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, dtype: torch.dtype, kernel: str) -> Int8Linear:
        qweight, scale = _quantise_rows(linear.weight)
        return cls(qweight, scale, linear.bias, dtype, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == "triton":
            return w8a16_linear(x, self.qweight, self.scale, self.bias)
        if self.kernel == "int8pack":
            y = torch._weight_int8pack_mm(x.reshape(-1, self.in_features), self.qweight, self.scale)
            y = y.reshape(*x.shape[:-1], self.out_features)
            return y if self.bias is None else y + self.bias
        weight = self.qweight.to(x.dtype) * self.scale[:, None]
        return torch.nn.functional.linear(x, weight, self.bias)


class Int8Embedding(torch.nn.Module):
    def __init__(self, embedding: torch.nn.Embedding, dtype: torch.dtype) -> None:
        super().__init__()
        qweight, scale = _quantise_rows(embedding.weight)
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale.to(dtype))
        self.padding_idx = embedding.padding_idx
        self.embedding_scale = getattr(embedding, "embed_scale", None)  # scaled embeddings keep their factor

    @property
    def weight(self) -> torch.Tensor:
        """The dequantised table (transformers reads `.weight` for shapes and tying)."""
        return self.qweight.to(self.scale.dtype) * self.scale[:, None]

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = torch.nn.functional.embedding(ids, self.qweight).to(self.scale.dtype) * self.scale[ids].unsqueeze(-1)
        return out if self.embedding_scale is None else out * self.embedding_scale


def choose_kernel(device: str, dtype: torch.dtype) -> str:
    """The int8 linear kernel for this device: Triton's on CUDA when Triton is there, torch's
    `_weight_int8pack_mm` on the CPU when it runs and agrees with the dequantised product (on CUDA,
    torch 2.11 on the H200, it took 494 ms for a Kosmos-2 forward that FP16 runs in 4.4 ms:
    `docs/bench/vlm_h200.log`), else dequantise."""
    if device.startswith("cuda"):
        return "triton" if int8_gemm_available(device) else "dequantise"
    return "int8pack" if _int8pack_works(device, dtype) else "dequantise"


def _int8pack_works(device: str, dtype: torch.dtype) -> bool:
    if not device.startswith("cpu"):
        return False
    try:
        x = torch.randn(3, 64, device=device).to(dtype)
        q = torch.randint(-127, 128, (32, 64), dtype=torch.int8, device=device)
        s = torch.rand(32, device=device).to(dtype)
        y = torch._weight_int8pack_mm(x, q, s)
    except (RuntimeError, NotImplementedError, AttributeError):
        return False
    reference = x.float() @ (q.float() * s.float()[:, None]).T
    return bool(torch.allclose(y.float(), reference, rtol=2e-2, atol=2e-2 * float(reference.abs().max())))


def quantise_weights(model: torch.nn.Module, dtype: torch.dtype) -> dict:
    """Replace every Linear and Embedding of `model` in place; returns what was done (counts, the
    linear kernel, weight bytes before and after)."""
    device = next(model.parameters()).device
    kernel = choose_kernel(str(device), dtype)
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
                replacement = Int8Linear(tied.qweight, tied.scale, child.bias, dtype, kernel)
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
