"""Qwen2.5-VL feature extractor (transformers), loaded from a local directory (3B layout).

Features are the last-layer hidden states of the language model (the LM head is not run), pooled:
- last_token: the last prompt token (it attends to the image tokens and the instruction)
- mean_text: mean over the non-image tokens of the prompt
- mean_image: mean over the image tokens (they precede the instruction: instruction-independent)

The image processor (slow, numpy) and the tokenizer are loaded from the same directory; the video
processor is not needed (it would require torchvision). Images are resized by the image processor
within its min/max pixel budget (set `min_pixels`/`max_pixels` in preprocessor_config.json; 224x224
gives 64 image tokens per view).

Fast path: when every view has the same patch grid and the grid tiles into whole attention windows
(sides multiple of 112 px for the 3B layout), the vision tower runs windowed attention as one batched
SDPA call per layer instead of one call per window, the rotary/window plan is computed once per grid,
and the whole forward is synchronisation-free, so it is captured as a CUDA graph. Other shapes use the
stock transformers forward.
"""

from __future__ import annotations

import numpy as np

from .base import (
    ExtractorConfig,
    VlmLoadError,
    checked_vlm_dir,
    from_local_dir,
    load_model,
)
from .kosmos2 import pad_to_bucket, pool_hidden, pooling_indices
from .preprocess import InstructionCache, QwenPatches, tensor_preprocessor
from .static_forward import StaticForward

IMAGE_TOKEN = "<|image_pad|>"
DEFAULT_PROMPT = ("<|im_start|>user\n<|vision_start|>" + IMAGE_TOKEN
                  + "<|vision_end|>{instruction}<|im_end|>\n<|im_start|>assistant\n")


class Qwen25VLExtractor:
    def __init__(self, config: ExtractorConfig) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoTokenizer, Qwen2_5_VLForConditionalGeneration

        # transformers 5 changed get_rope_index, which the prompt's positions come from (5.17 fails there).
        path, dtype = checked_vlm_dir(config, "Qwen2.5-VL", "qwen2_5_vl", transformers_below=(5, 0))
        self.prompt = config.prompt or DEFAULT_PROMPT
        if self.prompt.count(IMAGE_TOKEN) != 1 or "{instruction}" not in self.prompt:
            raise VlmLoadError(f"prompt: must contain {IMAGE_TOKEN} once and {{instruction}}")
        self.image_processor = from_local_dir(AutoImageProcessor, path, "model_path", "Qwen2.5-VL", use_fast=False)
        self.tokenizer = from_local_dir(AutoTokenizer, path, "model_path", "Qwen2.5-VL")
        model = load_model(Qwen2_5_VLForConditionalGeneration, path, "model_path", "Qwen2.5-VL", dtype,
                           config.device, int8_weights=config.dtype == "int8w")
        self.tokenizer.padding_side = "right"
        image_token_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if image_token_id != model.config.image_token_id:
            raise VlmLoadError(f"model_path: tokenizer maps {IMAGE_TOKEN} to {image_token_id}, config.json expects "
                               f"image_token_id {model.config.image_token_id}")
        self._torch = torch
        self.model = model
        self.vlm = self.model.model  # Qwen2_5_VLModel: vision tower + language model, no LM head
        self.config = config
        self.device = config.device
        self.dtype = dtype
        self.image_token_id = image_token_id
        self.feature_dim = model.config.text_config.hidden_size
        visual = self.vlm.visual
        self.merge_unit = visual.spatial_merge_unit
        self.window_cells = visual.window_size // visual.spatial_merge_size // visual.patch_size
        self._plans: dict[tuple, dict] = {}
        use_graphs = config.cuda_graphs and config.device == "cuda"
        self.fast_forward = StaticForward(self._fast_features, use_graphs=use_graphs, compile_mode=config.compile_mode)
        self.stock_forward = StaticForward(self._stock_features, use_graphs=False)
        self.patches = tensor_preprocessor(QwenPatches, self.image_processor, config.device,
                                           config.tensor_preprocessing)
        self.text_inputs = InstructionCache()

    # -- CPU side ------------------------------------------------------------------------------
    def prepare(self, images: list[np.ndarray], instruction: str) -> tuple[bool, dict]:
        """(fast path usable, inputs on the device): pixels (tensor ops on the device, or the image
        processor) and the prompt's tensors, built once per instruction and patch grid."""
        pixel_values, grid = self.patches(images)
        fast, text = self.text_inputs.get((instruction, tuple(grid.flatten().tolist())),
                                          lambda: self._tokenise(grid, instruction))
        return fast, {**text, "pixel_values": pixel_values}

    def _tokenise(self, grid, instruction: str) -> tuple[bool, dict]:
        """Token ids with the grid's image tokens, pooling indices, and the fast path's rope positions,
        4-D mask, image-token index and window plan (or the stock forward's mask and grid)."""
        torch = self._torch
        tokens = (grid.prod(dim=-1) // self.merge_unit).tolist()
        texts = [self.prompt.format(instruction=instruction).replace(IMAGE_TOKEN, IMAGE_TOKEN * n) for n in tokens]
        text = self.tokenizer(texts, return_tensors="pt", padding=True)
        text = pad_to_bucket({"input_ids": text["input_ids"], "attention_mask": text["attention_mask"]},
                             ("input_ids", "attention_mask"), {"input_ids": self.tokenizer.pad_token_id},
                             self.config.text_bucket)
        ids, mask = text["input_ids"], text["attention_mask"]
        image_mask = ids.eq(self.image_token_id)
        weights = image_mask if self.config.pooling == "mean_image" else mask.bool() & ~image_mask
        common = {"input_ids": ids, **pooling_indices(mask, weights)}
        if not self._fast_path_ok(grid):
            inputs = {**common, "attention_mask": mask, "image_grid_thw": grid}
            return False, {k: v.to(self.device) for k, v in inputs.items()}
        position_ids, _ = self.vlm.get_rope_index(ids, grid, None, attention_mask=mask)
        length = ids.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        inputs = {**common, "position_ids": position_ids,
                  "attention_mask_4d": causal[None, None] & mask.bool()[:, None, None, :],
                  "image_index": image_mask.flatten().nonzero().squeeze(1)}
        inputs = {k: v.to(self.device, non_blocking=True) for k, v in inputs.items()}
        return True, {**inputs, **self._plan(grid)}

    def _fast_path_ok(self, grid) -> bool:
        if not bool((grid == grid[0]).all()) or int(grid[0, 0]) != 1:
            return False
        merge = self.vlm.visual.spatial_merge_size
        return all((int(side) // merge) % self.window_cells == 0 for side in grid[0, 1:])

    def _plan(self, grid) -> dict:
        """Window permutation and rotary tables of this grid, computed once with the model's own helpers."""
        key = tuple(grid.flatten().tolist())
        plan = self._plans.get(key)
        if plan is None:
            torch, visual = self._torch, self.vlm.visual
            with torch.inference_mode():
                grid_dev = grid.to(self.device)
                rotary = visual.rot_pos_emb(grid_dev)
                window_index, _ = visual.get_window_index(grid_dev)
                patches = rotary.shape[0]
                rotary = rotary.reshape(patches // self.merge_unit, self.merge_unit, -1)[window_index]
                emb = torch.cat([rotary.reshape(patches, -1)] * 2, dim=-1)
                plan = {"window_index": window_index, "reverse_index": torch.argsort(window_index),
                        "cos": emb.cos(), "sin": emb.sin()}
                plan = {k: v.to(self.device) for k, v in plan.items()}  # get_window_index builds on the CPU
            self._plans[key] = plan
        return plan

    # -- device side ---------------------------------------------------------------------------
    def _fast_features(self, pixel_values, input_ids, attention_mask_4d, position_ids, image_index, last_index,
                       text_weights, window_index, reverse_index, cos, sin):
        visual = self.vlm.visual
        hidden = visual.patch_embed(pixel_values.to(self.dtype))
        patches = hidden.shape[0]
        hidden = hidden.view(patches // self.merge_unit, self.merge_unit, -1)[window_index].reshape(patches, -1)
        window = self.window_cells ** 2 * self.merge_unit  # patches per attention window
        per_image = patches // last_index.shape[0]
        for i, block in enumerate(visual.blocks):
            segment = per_image if i in visual.fullatt_block_indexes else window
            hidden = hidden + segment_attention(block.attn, block.norm1(hidden), segment, cos, sin)
            hidden = hidden + block.mlp(block.norm2(hidden))
        image_embeds = visual.merger(hidden)[reverse_index]
        language = self.vlm.language_model
        embeds = language.embed_tokens(input_ids)
        flat = embeds.reshape(-1, embeds.shape[-1]).index_copy(0, image_index, image_embeds.to(embeds.dtype))
        out = language(inputs_embeds=flat.view_as(embeds), attention_mask=attention_mask_4d,
                       position_ids=position_ids, use_cache=False, return_dict=True)
        return pool_hidden(out.last_hidden_state, self.config.pooling, last_index, text_weights).float()

    def _stock_features(self, pixel_values, image_grid_thw, input_ids, attention_mask, last_index, text_weights):
        out = self.vlm(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                       image_grid_thw=image_grid_thw, use_cache=False, return_dict=True)
        return pool_hidden(out.last_hidden_state, self.config.pooling, last_index, text_weights).float()

    def extract(self, images: list[np.ndarray], instruction: str) -> np.ndarray:
        fast, inputs = self.prepare(images, instruction)
        pooled = (self.fast_forward if fast else self.stock_forward)(**inputs)
        return pooled.mean(dim=0, keepdim=True).cpu().numpy().astype(np.float32)


def segment_attention(attn, x, segment: int, cos, sin):
    """Qwen2.5-VL vision attention over equal-length segments (windows or whole images) as one
    batched SDPA call: [S, D] -> [S, D]. Same weights and maths as the transformers module."""
    import torch
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

    length = x.shape[0]
    q, k, v = attn.qkv(x).reshape(length, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
    q, k, v = (t.reshape(length // segment, segment, attn.num_heads, -1).transpose(1, 2) for t in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=attn.scaling)
    return attn.proj(out.transpose(1, 2).reshape(length, -1))
