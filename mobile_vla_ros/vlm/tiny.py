"""Tiny models of the supported VLM architectures with their processors/tokenizers, saved in
from_pretrained layout: Kosmos-2, CLIP vision (for the hybrid) and Qwen2.5-VL.

Used by the tests (real loading code, no downloads) and as the shipped stand-in VLM in
models/default/vlm (Kosmos-2): same architectures and files as the real checkpoints, tiny sizes,
random weights. They are not trained VLMs.
"""

from __future__ import annotations

from pathlib import Path

from .kosmos2 import RESAMPLER_CAUSAL_KEY

# Instructions the tokenizer is trained on (a unigram model over these words).
CORPUS = [
    "go to the red cylinder", "drive to the green box", "move towards the blue ball",
    "navigate to the yellow cube", "approach the red object", "go to the green cylinder",
    "turn left", "turn right", "stop", "go forward slowly", "move back", "find the blue box",
    "head for the yellow ball on the left", "drive to the object on the right",
]


KOSMOS2_SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def kosmos2_tokenizer():
    """The stand-in's unigram tokenizer, trained on CORPUS. The trainer orders near-tied pieces, and
    gives them their scores, differently from one process to the next (two single-character ids swapped
    between builds); pieces ordered by their score to 0.01, then by text, with those scores, give the
    same ids every time."""
    import json

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(CORPUS * 4, trainers.UnigramTrainer(
        vocab_size=120, special_tokens=KOSMOS2_SPECIAL_TOKENS, unk_token="<unk>"))
    trained = json.loads(tok.to_str())["model"]["vocab"]
    specials = [(piece, score) for piece, score in trained[:len(KOSMOS2_SPECIAL_TOKENS)]]
    pieces = sorted(((piece, round(score, 2)) for piece, score in trained[len(KOSMOS2_SPECIAL_TOKENS):]),
                    key=lambda piece_score: (-piece_score[1], piece_score[0]))
    tok.model = models.Unigram(specials + pieces, unk_id=KOSMOS2_SPECIAL_TOKENS.index("<unk>"), byte_fallback=False)
    return tok


def build_tiny_kosmos2(out_dir: str | Path, seed: int = 0, embed_dim: int = 64, image_size: int = 224,
                       patch_size: int = 32, image_tokens: int = 16, layers: int = 2, full_size: bool = False,
                       trainable: bool = False, resampler_causal: bool = False) -> Path:
    """With `full_size`, the layer sizes of microsoft/kosmos-2-patch14-224 (1.66 B parameters,
    saved in FP16): for latency benchmarks, where the weight values do not matter. With `trainable`,
    the initialisation of `trainable_init` (the start of the shipped stand-in's grounding training).
    `resampler_causal`: the resampler's latent i attends to image tokens 0..i only (the architecture of the
    stand-in shipped before 2026-12-03, recorded in config.json; Kosmos-2 and the stand-in shipped now
    attend to all)."""
    from tokenizers import processors
    from transformers import (
        CLIPImageProcessor,
        Kosmos2Config,
        Kosmos2ForConditionalGeneration,
        Kosmos2Processor,
        XLMRobertaTokenizerFast,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = kosmos2_tokenizer()
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
    if full_size:  # transformers' defaults are the released checkpoint's sizes
        config = Kosmos2Config()
    else:
        config = Kosmos2Config(
            text_config={"vocab_size": vocab, "embed_dim": embed_dim, "layers": layers, "attention_heads": 4,
                         "ffn_dim": 2 * embed_dim, "max_position_embeddings": 256},
            vision_config={"hidden_size": embed_dim, "intermediate_size": 2 * embed_dim, "num_hidden_layers": layers,
                           "num_attention_heads": 4, "image_size": image_size, "patch_size": patch_size},
            latent_query_num=image_tokens,
        )
    if resampler_causal:
        setattr(config, RESAMPLER_CAUSAL_KEY, True)
    _save_random(Kosmos2ForConditionalGeneration, config, out, seed, full_size,
                 trainable_init if trainable else None)
    processor.save_pretrained(out)
    return out


def trainable_init(model) -> None:
    """Re-initialise a tiny Kosmos-2 so that image information reaches the text model and gradients
    reach the image path. With transformers' default init (std 0.02 everywhere) the resampler's
    chain of small linears on L2-normalised image tokens yields image latents ~1e-3 of the text
    embeddings' size, and position embeddings ~1/50 of the patch embeddings: the features ignore the
    image and where things are in it, and training cannot start. Here: variance-preserving resampler
    weights, unit-scale latent queries, 2-D sin-cos position embeddings, and token embeddings of the
    latents' scale."""
    import math

    import torch

    proj = model.image_to_text_projection
    dim = proj.dense.weight.shape[0]
    with torch.no_grad():
        for linear in (proj.dense, proj.x_attn.q_proj, proj.x_attn.k_proj, proj.x_attn.v_proj, proj.x_attn.out_proj):
            torch.nn.init.normal_(linear.weight, std=1 / math.sqrt(linear.weight.shape[1]))
            linear.bias.zero_()
        proj.dense.weight.mul_(math.sqrt(dim))  # its inputs are L2-normalised tokens (norm 1, not sqrt(dim))
        torch.nn.init.normal_(proj.latent_query, std=1.0)
        embeddings = model.vision_model.model.embeddings
        grid = int(round(math.sqrt(embeddings.position_embedding.weight.shape[0] - 1)))
        ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
        quarter = embeddings.position_embedding.weight.shape[1] // 4
        freqs = torch.exp(-torch.arange(quarter) * (math.log(100.0) / quarter))
        table = torch.zeros_like(embeddings.position_embedding.weight)  # row 0: the class token
        for i, coord in enumerate((xs.flatten().float(), ys.flatten().float())):
            angles = coord[:, None] * freqs[None]
            table[1:, 2 * i * quarter:(2 * i + 1) * quarter] = torch.sin(angles)
            table[1:, (2 * i + 1) * quarter:(2 * i + 2) * quarter] = torch.cos(angles)
        embeddings.position_embedding.weight.copy_(table)
        tokens = model.text_model.model.embed_tokens
        scale = 0.7 / tokens(torch.arange(tokens.weight.shape[0])).abs().mean()
        tokens.weight.mul_(scale)


def build_tiny_clip_vision(out_dir: str | Path, seed: int = 0, hidden: int = 32, projection_dim: int = 24,
                           image_size: int = 224, patch_size: int = 32, full_size: bool = False) -> Path:
    """A CLIPVisionModelWithProjection (as in the hybrid's CLIP checkpoint) and its image processor;
    `full_size`: ViT-L/14 at 224 px with a 768-dim projection (openai/clip-vit-large-patch14)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    out = Path(out_dir)
    if full_size:
        config = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                  num_attention_heads=16, image_size=224, patch_size=14, projection_dim=768)
    else:
        config = CLIPVisionConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                                  num_attention_heads=4, image_size=image_size, patch_size=patch_size,
                                  projection_dim=projection_dim)
    _save_random(CLIPVisionModelWithProjection, config, out, seed, full_size)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(out)
    return out


QWEN_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                       "<|image_pad|>", "<|video_pad|>"]


def build_tiny_qwen2_5_vl(out_dir: str | Path, seed: int = 0, hidden: int = 64, image_pixels: int = 224 * 224,
                          full_size: bool = False) -> Path:
    """Qwen2.5-VL layout (windowed vision tower with full-attention blocks, M-RoPE language model),
    a byte-level BPE tokenizer with Qwen's special tokens, and the image processor; `full_size`: the
    layer sizes of Qwen2.5-VL-3B-Instruct (3.75 B parameters, saved in FP16)."""
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
    if full_size:
        text = {"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
                "num_attention_heads": 16, "num_key_value_heads": 2, "max_position_embeddings": 128000,
                "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True,
                "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}}
        vision = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
                  "out_hidden_size": 2048, "fullatt_block_indexes": [7, 15, 23, 31], "window_size": 112,
                  "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}
        config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=config.image_token_id,
                                  video_token_id=config.video_token_id,
                                  vision_start_token_id=config.vision_start_token_id,
                                  vision_end_token_id=config.vision_end_token_id, tie_word_embeddings=True)
    _save_random(Qwen2_5_VLForConditionalGeneration, config, out, seed, full_size)
    tokenizer.save_pretrained(out)
    Qwen2VLImageProcessor(min_pixels=image_pixels, max_pixels=image_pixels).save_pretrained(out)
    return out


def _save_random(model_class, config, out: Path, seed: int, full_size: bool, init=None) -> None:
    """Seeded random weights; full-size models are initialised on the GPU when there is one (minutes
    on a CPU) and saved in FP16."""
    import torch

    torch.manual_seed(seed)
    device = "cuda" if full_size and torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = model_class(config)
    if init is not None:
        init(model)
    if full_size:
        model = model.half()
    model.save_pretrained(out)
    del model


BUILDERS = {"kosmos2": build_tiny_kosmos2, "clip": build_tiny_clip_vision, "qwen2_5_vl": build_tiny_qwen2_5_vl}


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Write a tiny random-weight model (stand-in VLM) to OUT.")
    ap.add_argument("out", type=Path)
    ap.add_argument("--architecture", choices=sorted(BUILDERS), default="kosmos2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full-size", action="store_true", help="layer sizes of the released checkpoint (GBs)")
    args = ap.parse_args(argv)
    print(BUILDERS[args.architecture](args.out, seed=args.seed, full_size=args.full_size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
