"""A fused int8-weight GEMM for CUDA (Triton): y = x @ (q * s)^T + b with x in FP16/BF16, q int8 [N, K]
and s [N, ceil(K / group_size)], one scale per output row and group of input channels. The int8 tile is
converted in registers right before the tensor-core dot, and each tile's FP32 product is scaled by its
group's scales (a tile of 64 input channels never spans two groups), so each weight byte is read once
and no FP16 copy of the weight is written (the dequantising path writes and reads one per layer). At
the VLM's batch-1 token counts the text model's layers are memory-bound: half the weight bytes is up
to half the time there.

Triton compiles the kernel on first use per configuration (autotuned once per shape, outside any
CUDA-graph capture: `StaticForward` warms up before it captures). Without Triton, or on the CPU,
`available()` is False and `Int8Linear` dequantises instead.
"""

from __future__ import annotations

import functools

import torch

TILE_K = 64  # input channels per K tile: group sizes must be a multiple of it (or the whole row)
_loaded: tuple | None = None  # (triton, kernel) once built; a plain global read traces under torch.compile


def _kernel() -> tuple:
    global _loaded
    if _loaded is not None:
        return _loaded
    import triton
    import triton.language as tl

    # One K tile size: a tile then never spans two groups of scales.
    configs = [triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": TILE_K, "GROUP_M": 8}, num_warps=w, num_stages=s)
               for m, n, w, s in ((16, 64, 4, 4), (16, 128, 4, 4), (32, 64, 4, 4), (32, 128, 4, 4), (64, 64, 4, 3),
                                  (64, 128, 4, 4), (128, 128, 8, 3), (128, 256, 8, 3), (64, 256, 8, 4))]

    @triton.autotune(configs=configs, key=["M", "N", "K"])
    @triton.jit
    def w8a16_kernel(x_ptr, w_ptr, s_ptr, b_ptr, y_ptr, M, N, K, group_size,
                     stride_xm, stride_xk, stride_wn, stride_wk, stride_sn, stride_sg, stride_ym, stride_yn,
                     HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     GROUP_M: tl.constexpr):
        pid = tl.program_id(0)
        num_pid_m = tl.cdiv(M, BLOCK_M)
        num_pid_n = tl.cdiv(N, BLOCK_N)
        # grouped order: neighbouring programs share x rows and weight columns in L2
        group = GROUP_M * num_pid_n
        first_m = (pid // group) * GROUP_M
        group_m = min(num_pid_m - first_m, GROUP_M)
        pid_m = first_m + (pid % group) % group_m
        pid_n = (pid % group) // group_m
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        x_ptrs = x_ptr + rm[:, None] * stride_xm + rk[None, :] * stride_xk
        w_ptrs = w_ptr + rk[:, None] * stride_wk + rn[None, :] * stride_wn  # [BLOCK_K, BLOCK_N] of q^T
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for k in range(0, tl.cdiv(K, BLOCK_K)):
            left = K - k * BLOCK_K
            x = tl.load(x_ptrs, mask=(rm[:, None] < M) & (rk[None, :] < left), other=0.0)
            w = tl.load(w_ptrs, mask=(rk[:, None] < left) & (rn[None, :] < N), other=0)
            # The tile lies in one group: its scales are one per output column,
            # applied to the tile's FP32 product (int8 values convert to FP16/BF16 exactly).
            s = tl.load(s_ptr + rn * stride_sn + (k * BLOCK_K // group_size) * stride_sg, mask=rn < N, other=0.0)
            acc += tl.dot(x, w.to(x.dtype)) * s.to(tl.float32)[None, :]
            x_ptrs += BLOCK_K * stride_xk
            w_ptrs += BLOCK_K * stride_wk
        if HAS_BIAS:
            acc += tl.load(b_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
        tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :] * stride_yn, acc.to(y_ptr.dtype.element_ty),
                 mask=(rm[:, None] < M) & (rn[None, :] < N))

    _loaded = triton, w8a16_kernel
    return _loaded


@functools.cache
def available(device: str) -> bool:
    """Triton and a CUDA device: the fused kernel can run there."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return False
    try:
        _kernel()
    except ImportError:
        return False
    return True


def w8a16_linear(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, group_size: int,
                 bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] (fp16/bf16, CUDA) times int8 qweight [N, K] with scales [N, ceil(K / group_size)]
    (+ bias [N]) -> [..., N]. `group_size`: a multiple of 64, or at least K (one scale per row)."""
    triton, kernel = _kernel()
    rows = x.reshape(-1, x.shape[-1])
    m, k = rows.shape
    n = qweight.shape[0]
    if qweight.shape[1] != k:
        raise ValueError(f"int8 linear: expected input features {qweight.shape[1]}, got {k}")
    if group_size % TILE_K and group_size < k:
        raise ValueError(f"int8 linear: group size must be a multiple of {TILE_K} or at least {k}, got {group_size}")
    y = torch.empty((m, n), device=x.device, dtype=x.dtype)
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
    kernel[grid](rows, qweight, scale, bias if bias is not None else scale, y, m, n, k, group_size,
                 rows.stride(0), rows.stride(1), qweight.stride(0), qweight.stride(1), scale.stride(0),
                 scale.stride(1), y.stride(0), y.stride(1),
                 HAS_BIAS=bias is not None)
    return y.reshape(*x.shape[:-1], n)
