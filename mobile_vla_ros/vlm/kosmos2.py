"""Kosmos-2 feature extractor (transformers), loaded from a local directory.

The checkpoint is a `Kosmos2ForConditionalGeneration`; we run its vision tower, the image-to-text
resampler and the text transformer, but not the LM head (a 65k-vocabulary projection that features
do not need). Pooling:
- last_token: hidden state of the last prompt token (it has attended to the image and the instruction)
- mean_text: mean hidden state over the prompt's text tokens
- mean_image: mean of the image latent tokens (instruction-independent)
Several views are one batch; their pooled features are averaged so the feature size does not
depend on the number of cameras.
"""

from __future__ import annotations

import numpy as np

from .base import ExtractorConfig, VlmLoadError, check_model_dir, check_model_type, dtype_kwarg, torch_dtype

POOLINGS = ("last_token", "mean_text", "mean_image")


class Kosmos2Extractor:
    def __init__(self, config: ExtractorConfig) -> None:
        import torch
        from transformers import AutoProcessor, Kosmos2ForConditionalGeneration

        if config.pooling not in POOLINGS:
            raise VlmLoadError(f"feature_pooling: {config.pooling!r} is not one of {', '.join(POOLINGS)}")
        path = check_model_dir(config.model_path)
        check_model_type(path, "kosmos-2")
        dtype = torch_dtype(config.dtype, config.device)
        try:
            self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
            model, info = Kosmos2ForConditionalGeneration.from_pretrained(
                path, local_files_only=True, output_loading_info=True, **dtype_kwarg(dtype))
        except (OSError, ValueError) as exc:
            raise VlmLoadError(f"model_path: {path} cannot be loaded as Kosmos-2 ({exc})") from exc
        if info["missing_keys"]:
            raise VlmLoadError(f"model_path: {path} lacks weights for {len(info['missing_keys'])} tensors, "
                               f"e.g. {info['missing_keys'][0]} (not a Kosmos-2 checkpoint?)")
        self._torch = torch
        self.model = model.to(config.device).eval()
        self.config = config
        self.device = config.device
        self.dtype = dtype
        self.image_tokens = model.config.latent_query_num
        self.feature_dim = model.config.text_config.embed_dim

    def extract(self, images: list[np.ndarray], instruction: str) -> np.ndarray:
        torch = self._torch
        prompt = self.config.prompt.format(instruction=instruction)
        inputs = self.processor(text=[prompt] * len(images), images=images, return_tensors="pt",
                                num_image_tokens=self.image_tokens)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        m = self.model
        with torch.inference_mode():
            vision = m.vision_model(pixel_values=inputs["pixel_values"].to(self.dtype))
            image_embeds = m.vision_model.model.post_layernorm(vision[0])
            image_embeds = torch.nn.functional.normalize(image_embeds, dim=-1)
            image_embeds, _ = m.image_to_text_projection(image_embeds)
            pooled = self._pool(inputs, image_embeds)
        return pooled.float().mean(dim=0, keepdim=True).cpu().numpy().astype(np.float32)

    def _pool(self, inputs, image_embeds):
        if self.config.pooling == "mean_image":
            return image_embeds.mean(dim=1)
        hidden = self.model.text_model.model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
            image_embeds=image_embeds, image_embeds_position_mask=inputs["image_embeds_position_mask"],
            return_dict=True).last_hidden_state
        mask = inputs["attention_mask"].bool()
        if self.config.pooling == "last_token":
            last = mask.long().cumsum(dim=1).argmax(dim=1)  # index of the last attended token
            return hidden[self._torch.arange(hidden.shape[0]), last]
        text = (mask & ~inputs["image_embeds_position_mask"].bool()).unsqueeze(-1).to(hidden.dtype)
        return (hidden * text).sum(dim=1) / text.sum(dim=1).clamp(min=1)
