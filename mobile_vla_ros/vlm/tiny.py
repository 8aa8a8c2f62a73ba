"""Builds a tiny Kosmos-2-architecture model with its processor, saved in from_pretrained layout.

Used by the tests (real loading code, no downloads) and as the shipped stand-in VLM in
models/default/vlm: same architecture and files as microsoft/kosmos-2-patch14-224, tiny sizes,
random weights. It is not a trained VLM.
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


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Write a tiny random-weight Kosmos-2 (stand-in VLM) to OUT.")
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(build_tiny_kosmos2(args.out, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
