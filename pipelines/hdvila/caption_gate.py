"""The caption quality gate: text checks on a generated caption, and its CLIP similarity to the clip's frames.

:func:`check_text` rejects what no frame can fix: an empty generation, a
degenerate one repeating a word or phrase over and over, and an over-long one
(more words than allowed, or cut off at the token limit). :class:`ClipSimilarity`
is the LAION recipe: the cosine similarity of CLIP's text embedding of the
caption and its image embedding of each sampled frame, averaged over the frames;
below a threshold the caption does not describe what is seen. A rejected caption
rejects its clip, with the status (:data:`datasets.clips.CAPTION_STATUSES`) and
the reason recorded, so the counts say why. Nothing here imports Ray.
"""

from __future__ import annotations

import re

import numpy as np

_WORD = re.compile(r"\w+(?:'\w+)?", re.UNICODE)
LONGEST_REPEATED_PHRASE = 4
"""Phrases of up to this many words are searched for runs of repeats."""


def words(text: str) -> list[str]:
    """Lower-case words of ``text`` (punctuation dropped)."""
    return [word.lower() for word in _WORD.findall(text)]


def repeated_run(tokens: list[str], max_repeats: int) -> str | None:
    """The first phrase of 1..4 words that occurs ``max_repeats`` times in a row in ``tokens``, or None."""
    for size in range(1, LONGEST_REPEATED_PHRASE + 1):
        span = size * max_repeats
        for start in range(len(tokens) - span + 1):
            phrase = tokens[start : start + size]
            if all(tokens[start + k * size : start + (k + 1) * size] == phrase for k in range(1, max_repeats)):
                return " ".join(phrase)
    return None


def check_text(text: str, *, truncated: bool = False, max_words: int = 80, max_repeats: int = 3) -> tuple[str | None, str]:
    """``(status, reason)`` of a generated caption: ``(None, "")`` when it passes, else a caption status and why.

    ``truncated``: the generation reached the model's token limit without ending.
    """
    tokens = words(text)
    if not tokens:
        return "caption_empty", f"the model generated no words ({text.strip()[:40]!r})"
    phrase = repeated_run(tokens, max_repeats)
    if phrase is not None:
        return "caption_repetitive", f"{phrase!r} is repeated {max_repeats} times in a row: {text[:120]!r}"
    if len(tokens) > max_words:
        return "caption_too_long", f"{len(tokens)} words > max_words {max_words}"
    if truncated:
        return "caption_too_long", f"cut off at the token limit (max_new_tokens) after {len(tokens)} words"
    return None, ""


def _features(output):
    """The embedding tensor of ``get_text_features``/``get_image_features`` (a tensor, or an output whose
    ``pooler_output`` holds the projection, depending on the transformers version)."""
    return output if hasattr(output, "norm") else output.pooler_output


class ClipSimilarity:
    """Mean cosine similarity of captions to their clips' frames, with a transformers ``CLIPModel``.

    ``model`` is a hub id or a local folder holding the model and its processor (loaded with ``from_pretrained``).
    """

    def __init__(self, model: str, *, device: str = "cpu", dtype=None, revision: str | None = None) -> None:
        import torch
        from transformers import AutoProcessor, CLIPModel

        self.device = device
        self.processor = AutoProcessor.from_pretrained(model, revision=revision)
        self.model = CLIPModel.from_pretrained(model, revision=revision, dtype=dtype or torch.float32).to(device).eval()
        self.max_length = int(self.model.config.text_config.max_position_embeddings)

    def __call__(self, captions: list[str], frames: list[list[np.ndarray]]) -> list[float]:
        """For each clip, the mean over its frames of the cosine similarity between caption and frame."""
        import torch

        if not captions:
            return []
        flat = [frame for clip in frames for frame in clip]
        text = self.processor.tokenizer(
            captions, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        pixels = self.processor.image_processor(images=flat, return_tensors="pt")["pixel_values"].to(self.device, self.model.dtype)
        with torch.inference_mode():
            text_embeddings = torch.nn.functional.normalize(_features(self.model.get_text_features(**text)).float(), dim=-1)
            image_embeddings = torch.nn.functional.normalize(_features(self.model.get_image_features(pixel_values=pixels)).float(), dim=-1)
        scores, start = [], 0
        for index, clip in enumerate(frames):
            clip_embeddings = image_embeddings[start : start + len(clip)]
            start += len(clip)
            scores.append(float((clip_embeddings @ text_embeddings[index]).mean()))
        return scores
