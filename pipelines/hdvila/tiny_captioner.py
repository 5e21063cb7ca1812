"""A random BLIP captioner saved like a hub model, for tests, benchmarks and offline trials of the captioning stage.

Nothing here is trained: captions are random words from :data:`WORDS`. The folder loads through the same
``from_pretrained`` path a hub id such as ``Salesforce/blip-image-captioning-base`` takes.
"""

from __future__ import annotations

from pathlib import Path

WORDS = "a man woman child dancing walking jumping in the room on stage street park with red blue shirt".split()
"""The captioner's whole vocabulary (besides BERT's special tokens)."""


def save_tiny_blip(folder: Path, *, hidden: int = 32, layers: int = 1, image_size: int = 32) -> Path:
    """A random BLIP captioner (BertTokenizer over :data:`WORDS`) saved to ``folder``; its special tokens are never
    generated, so every caption has words. ``hidden``/``layers``/``image_size`` scale it (the captioning benchmark
    makes it take most of a job's time, as a real captioner does)."""
    import torch
    from transformers import BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    vocab = {token: index for index, token in enumerate(specials + WORDS)}
    tokenizer = BertTokenizerFast(vocab=vocab, bos_token="[DEC]")  # as the real BLIP tokenizer declares it
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": image_size, "width": image_size}), tokenizer=tokenizer)
    shape = dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=2)
    config = BlipConfig(
        vision_config=dict(**shape, image_size=image_size, patch_size=8),
        text_config=dict(**shape, vocab_size=len(vocab), encoder_hidden_size=hidden, bos_token_id=5, sep_token_id=3, pad_token_id=0, eos_token_id=3),
        projection_dim=hidden,
    )  # fmt: skip
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[: len(specials)] = -1e4
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
