"""Tiny models of the supported VLM architectures with their processors/tokenizers, saved in
from_pretrained layout: Kosmos-2, CLIP vision (for the hybrid) and Qwen2.5-VL.

Used by the tests (real loading code, no downloads) and as the shipped stand-in VLM in
models/default/vlm (Kosmos-2): same architectures and files as the real checkpoints, tiny sizes,
random weights. They are not trained VLMs.
"""

from __future__ import annotations

from pathlib import Path

# Instructions the tokenizer is trained on (a unigram model over these words).
CORPUS = [
    "go to the red cylinder", "drive to the green box", "move towards the blue ball",
    "navigate to the yellow cube", "approach the red object", "go to the green cylinder",
    "turn left", "turn right", "stop", "go forward slowly", "move back", "find the blue box",
    "head for the yellow ball on the left", "drive to the object on the right",
]


def build_tiny_kosmos2(out_dir: str | Path, seed: int = 0, embed_dim: int = 64, image_size: int = 224,
                       patch_size: int = 32, image_tokens: int = 16) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import (
        CLIPImageProcessor,
        Kosmos2Config,
        Kosmos2ForConditionalGeneration,
        Kosmos2Processor,
        XLMRobertaTokenizerFast,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(CORPUS * 4, trainers.UnigramTrainer(vocab_size=120, special_tokens=specials,
                                                                 unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tokenizer = XLMRobertaTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                        cls_token="<s>", sep_token="</s>")
    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size},
                                         crop_size={"height": image_size, "width": image_size})
    processor = Kosmos2Processor(image_processor, tokenizer, num_patch_index_tokens=16)
    # Image placeholder ids start right after <unk>, so the vocabulary must cover them.
    vocab = max(len(processor.tokenizer), image_tokens + 8)
    config = Kosmos2Config(
        text_config={"vocab_size": vocab, "embed_dim": embed_dim, "layers": 2, "attention_heads": 4,
                     "ffn_dim": 2 * embed_dim, "max_position_embeddings": 256},
        vision_config={"hidden_size": embed_dim, "intermediate_size": 2 * embed_dim, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "image_size": image_size, "patch_size": patch_size},
        latent_query_num=image_tokens,
    )
    torch.manual_seed(seed)
    Kosmos2ForConditionalGeneration(config).save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_clip_vision(out_dir: str | Path, seed: int = 0, hidden: int = 32, projection_dim: int = 24,
                           image_size: int = 224, patch_size: int = 32) -> Path:
    """A CLIPVisionModelWithProjection (as in the hybrid's CLIP checkpoint) and its image processor."""
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    out = Path(out_dir)
    config = CLIPVisionConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                              num_attention_heads=4, image_size=image_size, patch_size=patch_size,
                              projection_dim=projection_dim)
    torch.manual_seed(seed)
    CLIPVisionModelWithProjection(config).save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(out)
    return out


QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>", "<|video_pad|>"]


def build_tiny_qwen2_5_vl(out_dir: str | Path, seed: int = 0, hidden: int = 64, image_pixels: int = 224 * 224) -> Path:
    """Qwen2.5-VL layout (windowed vision tower with full-attention blocks, M-RoPE language model),
    a byte-level BPE tokenizer with Qwen's special tokens, and the image processor."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2TokenizerFast,
        Qwen2VLImageProcessor,
    )

    out = Path(out_dir)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS * 4, trainers.BpeTrainer(vocab_size=400, special_tokens=QWEN_SPECIAL_TOKENS,
                                                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = Qwen2TokenizerFast(tokenizer_object=tok, unk_token=None, bos_token=None, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    heads = 4
    half_head = hidden // heads // 2
    config = Qwen2_5_VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": hidden, "intermediate_size": 2 * hidden,
                     "num_hidden_layers": 2, "num_attention_heads": heads, "num_key_value_heads": 2,
                     "max_position_embeddings": 1024, "tie_word_embeddings": True,
                     "rope_scaling": {"type": "mrope", "mrope_section": [half_head - 2 * (half_head // 3),
                                                                        half_head // 3, half_head // 3]}},
        vision_config={"depth": 4, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                       "out_hidden_size": hidden, "fullatt_block_indexes": [1, 3], "window_size": 112,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True)
    torch.manual_seed(seed)
    Qwen2_5_VLForConditionalGeneration(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    Qwen2VLImageProcessor(min_pixels=image_pixels, max_pixels=image_pixels).save_pretrained(out)
    return out


BUILDERS = {"kosmos2": build_tiny_kosmos2, "clip": build_tiny_clip_vision, "qwen2_5_vl": build_tiny_qwen2_5_vl}


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Write a tiny random-weight model (stand-in VLM) to OUT.")
    ap.add_argument("out", type=Path)
    ap.add_argument("--architecture", choices=sorted(BUILDERS), default="kosmos2")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(BUILDERS[args.architecture](args.out, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
