"""Kosmos-2 feature extractor (transformers), loaded from a local directory.

The checkpoint is a `Kosmos2ForConditionalGeneration`; we run its vision tower, the image-to-text
resampler and the text transformer, but not the LM head (a 65k-vocabulary projection that features
do not need). Pooling:
- last_token: hidden state of the last prompt token (it has attended to the image and the instruction)
- mean_text: mean hidden state over the prompt's text tokens
- mean_image: mean of the image latent tokens (instruction-independent)

The forward is written without host synchronisation (image tokens are placed by a precomputed
index, not a boolean mask), so on CUDA it runs as a captured graph (`StaticForward`).
"""

from __future__ import annotations

import numpy as np

from .base import (
    ExtractorConfig,
    checked_vlm_dir,
    from_local_dir,
    load_model,
)
from .preprocess import ClipPixels, InstructionCache, tensor_preprocessor
from .static_forward import StaticForward

DEFAULT_PROMPT = "<grounding>{instruction}"
TOKENISE_PLACEHOLDER = np.zeros((8, 8, 3), dtype=np.uint8)


# config.json key of a checkpoint whose resampler was trained with causal attention (latent i sees image
# tokens 0..i), as transformers' SDPA path ran every Kosmos-2 resampler before this package fixed it.
RESAMPLER_CAUSAL_KEY = "resampler_causal_attention"


def resampler_is_causal(config) -> bool:
    return bool(getattr(config, RESAMPLER_CAUSAL_KEY, False))


def pad_to_bucket(tensors: dict, keys: tuple[str, ...], pad_values: dict, bucket: int) -> dict:
    """Right-pad the [B, L] tensors in `keys` to a multiple of `bucket` tokens."""
    import torch

    length = next(iter(tensors[k] for k in keys)).shape[1]
    extra = -length % bucket
    if extra == 0:
        return tensors
    out = dict(tensors)
    for k in keys:
        t = tensors[k]
        out[k] = torch.cat([t, torch.full((t.shape[0], extra), pad_values.get(k, 0), dtype=t.dtype)], dim=1)
    return out


def pool_hidden(hidden, pooling: str, last_index, text_weights):
    """[B, L, D] -> [B, D] by the last attended token or the mean over text tokens."""
    import torch

    if pooling == "last_token":
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last_index]
    weights = text_weights.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


def pooling_indices(attention_mask, text_mask) -> dict:
    """CPU-side: index of the last attended token per row, and weights of the text tokens."""
    return {"last_index": attention_mask.long().cumsum(dim=1).argmax(dim=1),
            "text_weights": text_mask.float()}


class Kosmos2Extractor:
    def __init__(self, config: ExtractorConfig) -> None:
        import torch
        from transformers import AutoProcessor, Kosmos2ForConditionalGeneration

        # Our forward follows transformers 4.x's Kosmos-2 code; with 5.17 its first forward fails inside the
        # pooling (docs/bench/kosmos2_transformers_5_17_failure_h200.log).
        path, dtype = checked_vlm_dir(config, "Kosmos-2", "kosmos-2", transformers_below=(5, 0))
        self.processor = from_local_dir(AutoProcessor, path, "model_path", "Kosmos-2")
        model = load_model(Kosmos2ForConditionalGeneration, path, "model_path", "Kosmos-2", dtype, config.device,
                           int8_weights=config.dtype == "int8w")
        # transformers' SDPA path treats an attention module that does not set `is_causal` as causal
        # (huggingface/transformers#39037): the resampler's latent queries would see only the first image
        # tokens (latent i: tokens 0..i). Kosmos-2's resampler attends to all of them, as the eager path does.
        # A checkpoint trained under that causal attention (the stand-in shipped before 2026-12-03) says so in
        # its config.
        model.image_to_text_projection.x_attn.is_causal = resampler_is_causal(model.config)
        self._torch = torch
        self.model = model
        self.config = config
        self.prompt = config.prompt or DEFAULT_PROMPT
        self.device = config.device
        self.dtype = dtype
        self.image_tokens = model.config.latent_query_num
        self.feature_dim = model.config.text_config.embed_dim
        self.pad_id = self.processor.tokenizer.pad_token_id
        self.position_padding_idx = model.text_model.model.embed_positions.padding_idx
        self.forward = StaticForward(self._features, use_graphs=config.cuda_graphs and config.device == "cuda",
                                     compile_mode=config.compile_mode)
        self.pixels = tensor_preprocessor(ClipPixels, self.processor.image_processor, config.device,
                                          config.tensor_preprocessing)
        self.text_inputs = InstructionCache()

    def prepare(self, images: list[np.ndarray], instruction: str) -> dict:
        """Pixels (tensor ops on the device, or the image processor) and the prompt's token tensors
        (tokenised once per instruction and number of views), on the device."""
        text = self.text_inputs.get((instruction, len(images)), lambda: self._tokenise(len(images), instruction))
        return {**text, "pixel_values": self.pixels(images)}

    def _tokenise(self, views: int, instruction: str) -> dict:
        """Token ids, padding, positions, image-token and pooling indices of the prompt for `views` views.
        The processor places the image tokens only when given images, and their pixels do not enter the
        tokens: 8x8 placeholders instead of the camera views keep the image processor's work on a cache
        miss (the first forward after an instruction changes) to a fraction of a millisecond per view."""
        prompt = self.prompt.format(instruction=instruction)
        inputs = self.processor(text=[prompt] * views, images=[TOKENISE_PLACEHOLDER] * views, return_tensors="pt",
                                num_image_tokens=self.image_tokens)
        inputs = pad_to_bucket(dict(inputs), ("input_ids", "attention_mask", "image_embeds_position_mask"),
                               {"input_ids": self.pad_id}, self.config.text_bucket)
        image_mask = inputs["image_embeds_position_mask"].bool()
        ids = inputs["input_ids"]
        # Kosmos-2 (fairseq) positions: pad tokens keep padding_idx, the others count from padding_idx + 1.
        not_pad = ids.ne(self.position_padding_idx).long()
        out = {"input_ids": ids, "position_ids": not_pad.cumsum(dim=1) * not_pad + self.position_padding_idx,
               "image_index": image_mask.flatten().nonzero().squeeze(1),
               **pooling_indices(inputs["attention_mask"], inputs["attention_mask"].bool() & ~image_mask)}
        return {k: v.to(self.device, non_blocking=True) for k, v in out.items()}

    def vision_tokens(self, pixel_values):
        """Vision tower: [B, 1 + patches, D_vision], layer-normed and L2-normalised (the resampler's input)."""
        vision = self.model.vision_model
        image_embeds = vision.model.post_layernorm(vision(pixel_values=pixel_values.to(self.dtype))[0])
        return self._torch.nn.functional.normalize(image_embeds, dim=-1)

    def image_latents(self, pixel_values):
        """Vision tower -> resampler: [B, image_tokens, D] in the text model's space."""
        return self.model.image_to_text_projection(self.vision_tokens(pixel_values))[0]

    def _features(self, pixel_values, input_ids, position_ids, image_index, last_index, text_weights):
        """Synchronisation-free forward: pooled features [views, D] (float32)."""
        latents = self.image_latents(pixel_values)
        if self.config.pooling == "mean_image":
            return latents.mean(dim=1).float()
        text = self.model.text_model.model
        embeds = text.embed_tokens(input_ids)
        flat = embeds.reshape(-1, embeds.shape[-1]).index_copy(
            0, image_index, latents.reshape(-1, latents.shape[-1]).to(embeds.dtype))
        hidden = text.forward_embedding(input_ids=None, inputs_embeds=flat.view_as(embeds), position_ids=position_ids)
        # The text model's own forward builds an explicit causal + padding mask. The prompt is right-padded,
        # so under causal attention no token that is pooled sees a pad: without a mask SDPA takes its
        # causal (flash) kernel, and the pooled features equal the masked forward's.
        for layer in text.layers:
            hidden = layer(hidden, use_cache=False)[0]
        hidden = text.layer_norm(hidden)
        return pool_hidden(hidden, self.config.pooling, last_index, text_weights).float()

    def extract(self, images: list[np.ndarray], instruction: str) -> np.ndarray:
        pooled = self.forward(**self.prepare(images, instruction))
        return pooled.mean(dim=0, keepdim=True).cpu().numpy().astype(np.float32)
