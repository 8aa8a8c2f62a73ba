"""Kosmos-2 + CLIP hybrid: the Kosmos-2 features (pooled as configured) concatenated with CLIP
vision pooled embeddings (the projected image embedding when the checkpoint has a projection).

`clip_model_path` holds a CLIP checkpoint (`clip` or `clip_vision_model`, e.g. a full
openai/clip-vit-large-patch14 directory) with its image processor; no tokenizer is needed.
Feature dim = Kosmos-2 text width + CLIP projection dim (2048 + 768 for the full-size models).
"""

from __future__ import annotations

import numpy as np

from .base import ExtractorConfig, check_model_dir, check_model_type, from_local_dir, load_model
from .kosmos2 import Kosmos2Extractor
from .preprocess import ClipPixels, tensor_preprocessor


class Kosmos2ClipExtractor(Kosmos2Extractor):
    def __init__(self, config: ExtractorConfig) -> None:
        from transformers import AutoImageProcessor, CLIPVisionModel, CLIPVisionModelWithProjection

        super().__init__(config)
        path = check_model_dir(config.clip_model_path, "clip_model_path", tokenizer=False)
        check_model_type(path, ("clip", "clip_vision_model"), "clip_model_path")
        self.clip_processor = from_local_dir(AutoImageProcessor, path, "clip_model_path", "CLIP vision",
                                             use_fast=False)
        with_projection = _has_projection(path)
        cls = CLIPVisionModelWithProjection if with_projection else CLIPVisionModel
        self.clip = load_model(cls, path, "clip_model_path", "CLIP vision", self.dtype, config.device,
                               int8_weights=config.dtype == "int8w")
        self.clip_pixels = tensor_preprocessor(ClipPixels, self.clip_processor, config.device,
                                               config.tensor_preprocessing)
        self.clip_dim = self.clip.config.projection_dim if with_projection else self.clip.config.hidden_size
        self.kosmos_dim = self.feature_dim
        self.feature_dim = self.kosmos_dim + self.clip_dim

    def prepare(self, images: list[np.ndarray], instruction: str) -> dict:
        return {**super().prepare(images, instruction), "clip_pixel_values": self.clip_pixels(images)}

    def _features(self, clip_pixel_values, **kosmos_inputs):
        kosmos = super()._features(**kosmos_inputs)
        out = self.clip(pixel_values=clip_pixel_values.to(self.dtype))
        clip = out.image_embeds if hasattr(out, "image_embeds") else out.pooler_output
        return self._torch.cat([kosmos, clip.float()], dim=-1)


def _has_projection(path) -> bool:
    """A full CLIP checkpoint or a CLIPVisionModelWithProjection has `visual_projection` weights."""
    import json

    config = json.loads((path / "config.json").read_text())
    if config.get("model_type") == "clip":
        return True
    return "CLIPVisionModelWithProjection" in (config.get("architectures") or [])
