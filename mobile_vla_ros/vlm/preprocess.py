"""Image preprocessing of the supported VLMs as tensor ops on the model's device.

transformers' image processors (the reference) resize with PIL and normalise in numpy on the CPU:
half or more of an `extract()` call on a GPU, more on the Orin NX's Arm cores. Here the node's uint8
views are stacked and copied to the device once, then resized with the antialiased filter PIL uses
(rounded back to uint8 levels, as PIL returns), centre-cropped, and rescaled + normalised in one
multiply-add; for Qwen2.5-VL the patches are laid out as its processor lays them out. The processors
stay the reference: `test/test_vlm_preprocess.py` compares pixel tensors and features with them.

Images already at the model's input size (the simulated camera, a camera configured for it) skip the
resize and match the processor bit for bit up to float rounding.
"""

from __future__ import annotations

import logging
import math

import numpy as np

# PIL.Image.Resampling values in preprocessor_config.json -> torch.nn.functional.interpolate modes
# with the same kernel (torch's antialiased bilinear/bicubic follow PIL's support scaling).
RESAMPLE_MODES = {2: "bilinear", 3: "bicubic"}


class UnsupportedPreprocessing(ValueError):
    """The processor's configuration has a step this module does not reproduce; use the processor."""


class TensorImageProcessor:
    """uint8 views [H, W, 3] -> normalised float32 [views, 3, H', W'] on `device`."""

    def __init__(self, resample: int, rescale: float, mean, std, device: str) -> None:
        import torch

        if resample not in RESAMPLE_MODES:
            raise UnsupportedPreprocessing(f"resample {resample} (supported: {sorted(RESAMPLE_MODES)})")
        self.torch = torch
        self.mode = RESAMPLE_MODES[resample]
        self.device = device
        std = torch.tensor(std, dtype=torch.float32)
        self.scale = (rescale / std).view(1, 3, 1, 1).to(device)
        self.offset = (-torch.tensor(mean, dtype=torch.float32) / std).view(1, 3, 1, 1).to(device)

    @classmethod
    def from_processor(cls, ip, device: str) -> TensorImageProcessor:
        """The resample filter, rescale factor and normalisation a transformers image processor uses."""
        return cls(int(ip.resample), ip.rescale_factor if ip.do_rescale else 1.0,
                   ip.image_mean if ip.do_normalize else (0.0, 0.0, 0.0),
                   ip.image_std if ip.do_normalize else (1.0, 1.0, 1.0), device)

    def to_device(self, images: list[np.ndarray]):
        """One host-to-device copy of views of one shape; [views, 3, H, W] float32 in uint8 levels."""
        batch = self.torch.from_numpy(np.ascontiguousarray(np.stack(images)))
        return batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()

    def resize(self, x, height: int, width: int):
        if x.shape[-2:] == (height, width):
            return x
        x = self.torch.nn.functional.interpolate(x, size=(height, width), mode=self.mode, antialias=True,
                                                 align_corners=False)
        return x.round().clamp(0, 255)  # PIL resizes uint8 images to uint8

    def normalise(self, x):
        return x * self.scale + self.offset


def same_shape_groups(images: list[np.ndarray]) -> list[list[np.ndarray]]:
    """All views in one group when they share a shape (one copy, one resize), else one per view."""
    for image in images:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"views must be uint8 [H, W, 3], got {image.dtype} {list(image.shape)}")
    return [images] if len({image.shape for image in images}) == 1 else [[image] for image in images]


class ClipPixels:
    """CLIPImageProcessor (Kosmos-2 and CLIP): resize the shortest edge, centre crop, normalise."""

    with_grid = False

    def __init__(self, image_processor, device: str) -> None:
        ip = image_processor
        if not ip.do_resize or "shortest_edge" not in ip.size:
            raise UnsupportedPreprocessing(f"size {ip.size} (a shortest_edge resize is reproduced)")
        self.shortest_edge = int(ip.size["shortest_edge"])
        self.crop = (int(ip.crop_size["height"]), int(ip.crop_size["width"])) if ip.do_center_crop else None
        self.ops = TensorImageProcessor.from_processor(ip, device)
        self.reference = ProcessorPixels(ip, device, self.with_grid)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """transformers' get_resize_output_image_size(default_to_square=False)."""
        short, long = (height, width) if height <= width else (width, height)
        new_long = int(self.shortest_edge * long / short)
        return (self.shortest_edge, new_long) if height <= width else (new_long, self.shortest_edge)

    def __call__(self, images: list[np.ndarray]):
        """[views, 3, crop H, crop W] (views of several shapes: crops of one size, as the processor)."""
        return self.ops.torch.cat([self._group(group) for group in same_shape_groups(images)])

    def _group(self, images: list[np.ndarray]):
        x = self.ops.to_device(images)
        x = self.ops.resize(x, *self.output_size(*x.shape[-2:]))
        if self.crop is not None:
            x = center_crop(x, *self.crop)
        return self.ops.normalise(x)


def center_crop(x, height: int, width: int):
    """transformers' center_crop for crops inside the image (the processors' sizes)."""
    h, w = x.shape[-2:]
    if height > h or width > w:
        raise UnsupportedPreprocessing(f"crop {height}x{width} larger than the resized image {h}x{w}")
    top, left = int((h - height) / 2), int((w - width) / 2)
    return x[..., top:top + height, left:left + width]


class QwenPatches:
    """Qwen2VLImageProcessor (Qwen2.5-VL): smart resize within the pixel budget, normalise, and the
    processor's patch layout -> (pixel_values [views * grid_h * grid_w, 3 * T * P * P], image_grid_thw)."""

    with_grid = True

    def __init__(self, image_processor, device: str) -> None:
        ip = image_processor
        self.patch = int(ip.patch_size)
        self.merge = int(ip.merge_size)
        self.temporal = int(ip.temporal_patch_size)
        self.min_pixels = int(ip.size["shortest_edge"]) if ip.size.get("shortest_edge") else int(ip.min_pixels)
        self.max_pixels = int(ip.size["longest_edge"]) if ip.size.get("longest_edge") else int(ip.max_pixels)
        self.do_resize = bool(ip.do_resize)
        self.ops = TensorImageProcessor.from_processor(ip, device)
        self.reference = ProcessorPixels(ip, device, self.with_grid)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """transformers' smart_resize: sides multiples of patch * merge, pixels within the budget."""
        factor = self.patch * self.merge
        h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
        if h_bar * w_bar > self.max_pixels:
            beta = math.sqrt(height * width / self.max_pixels)
            h_bar = max(factor, math.floor(height / beta / factor) * factor)
            w_bar = max(factor, math.floor(width / beta / factor) * factor)
        elif h_bar * w_bar < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (height * width))
            h_bar, w_bar = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
        return h_bar, w_bar

    def __call__(self, images: list[np.ndarray]):
        groups = [self._group(group) for group in same_shape_groups(images)]
        return self.ops.torch.cat([g[0] for g in groups]), self.ops.torch.cat([g[1] for g in groups])

    def _group(self, images: list[np.ndarray]):
        torch = self.ops.torch
        x = self.ops.to_device(images)
        if self.do_resize:
            x = self.ops.resize(x, *self.output_size(*x.shape[-2:]))
        x = self.ops.normalise(x)
        views, channels, height, width = x.shape
        p, m, t = self.patch, self.merge, self.temporal
        gh, gw = height // p, width // p
        # each view is one frame repeated to the temporal patch size, as the processor pads it
        x = x.unsqueeze(1).expand(views, t, channels, height, width)
        x = x.reshape(views, t, channels, gh // m, m, p, gw // m, m, p)
        x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8).reshape(views * gh * gw, channels * t * p * p)
        grid = torch.tensor([[1, gh, gw]] * views, dtype=torch.long)
        return x, grid


class ProcessorPixels:
    """The transformers image processor itself (the reference path), called like the tensor
    preprocessors: pixels moved to `device`, and with `with_grid` also Qwen's image_grid_thw."""

    def __init__(self, image_processor, device: str, with_grid: bool = False) -> None:
        self.image_processor = image_processor
        self.device = device
        self.with_grid = with_grid
        self.reference = self

    def __call__(self, images: list[np.ndarray]):
        out = self.image_processor(images=images, return_tensors="pt")
        pixels = out["pixel_values"].to(self.device, non_blocking=True)
        return (pixels, out["image_grid_thw"]) if self.with_grid else pixels


def tensor_preprocessor(kind, image_processor, device: str, enabled: bool):
    """`kind(image_processor, device)` when enabled and the processor's configuration is reproduced,
    else the processor itself (`ProcessorPixels`, the reason logged at load). Either is called with
    the views; its `reference` is the processor path."""
    if enabled:
        try:
            return kind(image_processor, device)
        except (UnsupportedPreprocessing, AttributeError, KeyError, TypeError) as exc:
            logging.getLogger(__name__).warning(
                "image preprocessing by the model's image processor on the CPU: %s is not reproduced as tensor "
                "ops (%s)", type(image_processor).__name__, exc)
    return ProcessorPixels(image_processor, device, kind.with_grid)


class InstructionCache:
    """Tokenised prompt tensors by (instruction, views): an unchanged instruction is tokenised once.
    A few entries (instructions alternate rarely); the oldest goes first."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._entries: dict[tuple, dict] = {}

    def get(self, key: tuple, make):
        entry = self._entries.pop(key, None)
        if entry is None:
            entry = make()
        self._entries[key] = entry  # most recent last
        while len(self._entries) > self.size:
            del self._entries[next(iter(self._entries))]
        return entry

    def __len__(self) -> int:
        return len(self._entries)
