"""The stock transformers forward of Qwen2.5-VL, the reference our synchronisation-free forward is
compared with: the image processor's pixels and the prompt with the processor's image-token count."""

from __future__ import annotations

import torch


def qwen_stock_hidden(extractor, model, views, instruction: str):
    """(last hidden state [views, T, D] of `model`'s own forward, its input ids [views, T])."""
    pixels = extractor.image_processor(images=views, return_tensors="pt")
    n = int(pixels["image_grid_thw"][0].prod()) // extractor.merge_unit
    prompt = extractor.prompt.format(instruction=instruction).replace("<|image_pad|>", "<|image_pad|>" * n)
    text = extractor.tokenizer([prompt] * len(views), return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**text, **pixels, use_cache=False).last_hidden_state
    return hidden, text["input_ids"]
