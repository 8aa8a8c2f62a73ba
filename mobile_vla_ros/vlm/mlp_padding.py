"""MLP hidden layers padded to a whole number of 64-channel tiles.

Qwen2.5-VL's vision MLP is 1280 -> 3420 -> 1280. A row of 3420 FP16 values is 6840 bytes, not a
multiple of 16, so cuBLAS cannot take the Hopper GEMM kernels, whose tile loads (TMA) need 16-byte
aligned rows, and runs the three GEMMs of each of the 32 layers with Ampere kernels instead: at 5 views on
the H200 they took 7.1 of the compiled forward's 15.8 ms of kernels
(`docs/bench/profile_qwen2_5_vl_5views_fp16_compiled_h200.txt`). Zero channels appended to the hidden layer
change no output, because the output projection's weights for them are zero; they add 1 % to these
GEMMs' work. The layers keep their names, so the module tree (and what int8 quantisation replaces) is
unchanged; only their shapes grow. An MLP with its own weights over the hidden layer (Kosmos-2's text
FFN normalises it: a LayerNorm would count the zero channels) is left as it is.
"""

from __future__ import annotations

import torch

MULTIPLE = 64  # channels: 16-byte aligned rows in any dtype, and whole groups for int8 weights (int8_weights.py)

# (projections into the hidden layer, projection out of it), by attribute name within one MLP module
MLP_LAYOUTS = ((("gate_proj", "up_proj"), "down_proj"), (("fc1",), "fc2"))


def _padded(linear: torch.nn.Linear, rows: int = 0, columns: int = 0) -> torch.nn.Linear:
    """`linear` with `rows` zero output channels and `columns` zero input channels appended."""
    weight = torch.nn.functional.pad(linear.weight.detach(), (0, columns, 0, rows))
    out = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None,
                          device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        if linear.bias is not None:
            out.bias.copy_(torch.nn.functional.pad(linear.bias.detach(), (0, rows)))
    return out.requires_grad_(linear.weight.requires_grad)


def _acts_on_hidden(mlp: torch.nn.Module, projections: list[torch.nn.Module], width: int) -> bool:
    """Whether a module of `mlp` besides its projections has weights over the `width` hidden channels."""
    skip = {id(p) for layer in projections for p in layer.parameters()}
    return any(width in p.shape for p in mlp.parameters() if id(p) not in skip)


def pad_mlp_hidden(model: torch.nn.Module, multiple: int = MULTIPLE) -> int:
    """Pads, in place, the hidden layer of every MLP of `model` whose width is not a multiple of
    `multiple` (a module with Linear gate_proj/up_proj/down_proj, or fc1/fc2, and no other weights over
    the hidden layer); returns how many."""
    done = 0
    for mlp in model.modules():
        for into_names, out_name in MLP_LAYOUTS:
            layers = [getattr(mlp, n, None) for n in (*into_names, out_name)]
            if not all(isinstance(layer, torch.nn.Linear) for layer in layers):
                continue
            *into, out = layers
            width = out.in_features
            if any(layer.out_features != width for layer in into):
                raise ValueError(f"{type(mlp).__name__}: hidden widths differ: "
                                 f"{[layer.out_features for layer in into]} into, {width} out")
            extra = -width % multiple
            if extra and not _acts_on_hidden(mlp, layers, width):
                for name, layer in zip(into_names, into):
                    setattr(mlp, name, _padded(layer, rows=extra))
                setattr(mlp, out_name, _padded(out, columns=extra))
                done += 1
    return done
