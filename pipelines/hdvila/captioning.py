"""The captioning stage of the HD-VILA builder: :class:`ClipCaptioner` (no Ray here; resources are set in the job).

HD-VILA-100M's own text is speech transcripts, and the caption file the
authors' training config points to was never published; this stage writes the
captions itself. For each kept clip it samples ``frames`` frames (the centres of
equal parts of the clip, :func:`frame_positions`), runs a transformers model on
them (:class:`Captioner`), checks the caption (:mod:`.caption_gate`) and records
it with its source ``model:<id>`` beside any caption-file text (source ``file``).

A batch is a dict of columns (numpy object arrays) of cut rows
(:data:`pipelines.hdvila.stages.RESULT_FIELDS`); rows not ``kept`` pass through.
A clip whose frames do not decode, or whose caption the gate rejects, becomes a
row with a caption status and its reason; nothing raises out of a batch.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np

from datasets.clips import KEPT, FILE_SOURCE, caption_sources
from datasets.hub import HubUnreachableError, check_reachable
from datasets.video_io import decode_frames
from pipelines.hdvila.caption_gate import ClipSimilarity, check_text
from pipelines.hdvila.config import CaptionConfig
from pipelines.hdvila.stages import batch_to_rows, rows_to_batch
from pose_extraction.estimator import resolve_device

logger = logging.getLogger(__name__)


def frame_positions(total: int, count: int) -> np.ndarray:
    """Indices of ``count`` frames of a ``total``-frame clip: the centres of ``count`` equal parts (fewer for short clips)."""
    count = max(1, min(count, total))
    return np.floor((np.arange(count) + 0.5) * total / count).astype(np.int64)


def resolve_dtype(name: str, device: str):
    """The torch dtype of ``name`` (``auto``: bfloat16 on a GPU that has it, float16 on another GPU, float32 on a CPU)."""
    import torch

    if name != "auto":
        return getattr(torch, name)  # float32, float16 or bfloat16: CaptionConfig checks the name
    if not device.startswith("cuda"):
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def check_model_folder(name: str, flag: str) -> None:
    """Fail before any work when ``name`` is neither a model folder nor loadable from the hub (one-line ``ValueError``).

    A local folder must hold a ``config.json``; a hub id is resolved through ``AutoConfig.from_pretrained`` (with
    ``HF_HUB_OFFLINE=1`` it must be in the local cache; this answers at once).
    """
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ValueError(f"{flag} {name}: this folder holds no config.json (not a transformers model folder)")
        return
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ValueError(f"{flag} {name}: no such folder")
    try:
        check_reachable(name, flag=flag)  # seconds, not the hub libraries' minutes of retries, without a network
    except HubUnreachableError as error:
        raise ValueError(str(error)) from None
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{flag} {name}: not a local folder, and the hub cannot give it ({first_line}); pass a local folder") from None


class Captioner:
    """One transformers image-to-text or image-text-to-text model with its processor; captions clips' frames.

    With a chat template (VLMs) every frame of a clip goes into one user message with the prompt; without one
    (captioners such as BLIP or GIT) the middle frame is captioned. Calling it on a list of clips (each a list
    of RGB frames) returns ``(caption, truncated)`` per clip, ``truncated`` when the generation reached
    ``max_new_tokens`` without ending.
    """

    def __init__(self, config: CaptionConfig) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        self.processor = AutoProcessor.from_pretrained(config.model, revision=config.revision)
        self.model = AutoModelForImageTextToText.from_pretrained(config.model, revision=config.revision, dtype=self.dtype)
        self.model.to(self.device).eval()
        self.chat = bool(getattr(self.processor, "chat_template", None))
        tokenizer = getattr(self.processor, "tokenizer", None)
        if self.chat and tokenizer is not None:
            tokenizer.padding_side = "left"  # a decoder-only model continues every prompt from its last token
        self.eos_ids = self._eos_ids(tokenizer)

    def _eos_ids(self, tokenizer) -> set[int]:
        candidates = [self.model.generation_config.eos_token_id]
        text_config = getattr(self.model.config, "text_config", self.model.config)
        candidates += [getattr(text_config, "eos_token_id", None), getattr(text_config, "sep_token_id", None)]
        if tokenizer is not None:
            candidates += [tokenizer.eos_token_id, tokenizer.sep_token_id]
        flat = [c for item in candidates for c in (item if isinstance(item, (list, tuple)) else [item])]
        return {int(c) for c in flat if c is not None}

    @property
    def name(self) -> str:
        return f"{type(self.model).__name__} ({'chat, ' if self.chat else ''}{self.device}, {str(self.dtype).removeprefix('torch.')})"

    def _inputs(self, clips: list[list[np.ndarray]]):
        from PIL import Image

        if not self.chat:
            return self.processor(images=[Image.fromarray(clip[len(clip) // 2]) for clip in clips], return_tensors="pt")
        texts, images = [], []
        for clip in clips:
            content = [{"type": "image"} for _ in clip] + [{"type": "text", "text": self.config.prompt}]
            messages = [{"role": "user", "content": content}]
            texts.append(self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
            images.append([Image.fromarray(frame) for frame in clip])
        return self.processor(text=texts, images=images, return_tensors="pt", padding=True)

    def __call__(self, clips: list[list[np.ndarray]]) -> list[tuple[str, bool]]:
        import torch

        inputs = self._inputs(clips)
        inputs = {
            name: value.to(self.device, self.dtype) if value.is_floating_point() else value.to(self.device)
            for name, value in inputs.items()
            if hasattr(value, "to")
        }
        with torch.inference_mode():
            output = self.model.generate(
                **inputs, max_new_tokens=self.config.max_new_tokens, num_beams=self.config.num_beams, do_sample=False
            )
        prompt = inputs.get("input_ids")
        if prompt is not None and output.shape[1] >= prompt.shape[1] and torch.equal(output[:, : prompt.shape[1]], prompt):
            output = output[:, prompt.shape[1] :]  # decoder-only models return the prompt before the answer
        texts = self.processor.batch_decode(output, skip_special_tokens=True)
        hit_limit = output.shape[1] >= self.config.max_new_tokens
        return [
            (" ".join(text.split()), hit_limit and not any(int(token) in self.eos_ids for token in row.tolist()))
            for text, row in zip(texts, output)
        ]

    def close(self) -> None:
        self.model = None


class ClipCaptioner:
    """Caption the kept clips of a batch, gate the captions and record them with their source.

    ``timing`` accumulates seconds spent decoding frames, in the captioning model and in the gate, and the
    clips seen; :meth:`take_timing` returns and resets it.
    """

    def __init__(self, config: CaptionConfig, captioner: Captioner | None = None) -> None:
        self.config = config
        self.captioner = captioner if captioner is not None else Captioner(config)
        self.similarity = None
        if config.clip_model:
            self.similarity = ClipSimilarity(
                config.clip_model, device=self.captioner.device, dtype=self.captioner.dtype
            )
        self.source = config.source_name
        self.timing: Counter = Counter()

    @property
    def name(self) -> str:
        return f"{self.config.model}: {self.captioner.name}"

    def take_timing(self) -> dict:
        """Seconds and counts since the last call (``decode_s``, ``model_s``, ``gate_s``, ``captioned``)."""
        timing = {name: round(value, 3) if isinstance(value, float) else value for name, value in self.timing.items()}
        self.timing = Counter()
        return timing

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = batch_to_rows(batch)
        todo = [row for row in rows if row["status"] == KEPT]
        for start in range(0, len(todo), self.config.clips_per_call):
            self._caption(todo[start : start + self.config.clips_per_call])
        return rows_to_batch(rows)

    def _caption(self, rows: list[dict]) -> None:
        started = time.monotonic()
        ready: list[tuple[dict, list[np.ndarray]]] = []
        for row in rows:
            try:
                frames = decode_frames(row["mp4"], frame_positions(int(row["frames"]), self.config.frames), decoder="pyav")
                ready.append((row, list(frames)))
            except Exception as error:  # noqa: BLE001 - a clip that does not decode is a row, not a failed shard
                self._reject(row, "caption_failed", f"frames did not decode: {type(error).__name__}: {error}", None)
        decoded = time.monotonic()
        results = self._generate([frames for _, frames in ready])
        generated = time.monotonic()
        passed: list[tuple[dict, list[np.ndarray], str]] = []
        for (row, frames), result in zip(ready, results):
            if isinstance(result, Exception):
                self._reject(row, "caption_failed", f"the captioning model raised: {type(result).__name__}: {result}", None)
                continue
            text, truncated = result
            status, reason = check_text(text, truncated=truncated and self.config.reject_cut_off, max_words=self.config.max_words, max_repeats=self.config.max_repeats)
            if status is not None:
                self._refuse(row, status, reason, text)
            else:
                passed.append((row, frames, text))
        scores: list[float | None] = [None] * len(passed)
        if self.similarity is not None and passed:
            scores = self.similarity([text for _, _, text in passed], [frames for _, frames, _ in passed])
        for (row, _, text), score in zip(passed, scores):
            if score is not None and score < self.config.min_similarity:
                self._refuse(row, "caption_mismatch", f"CLIP similarity {score:.3f} < min_similarity {self.config.min_similarity}", text, score)
            else:
                self._accept(row, text, score)
        self.timing.update(
            decode_s=decoded - started, model_s=generated - decoded, gate_s=time.monotonic() - generated, captioned=len(rows)
        )

    def _generate(self, clips: list[list[np.ndarray]]) -> list:
        """Captions of ``clips`` in one call; if the call raises, clip by clip (a failing clip gets its exception)."""
        if not clips:
            return []
        try:
            return self.captioner(clips)
        except Exception:  # noqa: BLE001 - find the clip that fails, keep the others
            logger.warning("a captioning call of %d clips failed; retrying them one by one", len(clips), exc_info=True)
        results: list = []
        for clip in clips:
            try:
                results.extend(self.captioner([clip]))
            except Exception as error:  # noqa: BLE001
                results.append(error)
        return results

    @staticmethod
    def _reject(row: dict, status: str, reason: str, text: str | None, score: float | None = None) -> None:
        row.update(status=status, error=reason, generated_caption=text, caption_similarity=score, mp4=None, annotation=None)

    def _refuse(self, row: dict, status: str, reason: str, text: str, score: float | None = None) -> None:
        """The gate rejected ``text``: drop the clip, or with ``on_reject="file"`` keep it with its caption-file text
        (when it has one), recording the rejected generation in the annotation."""
        annotation = json.loads(row["annotation"])
        from_file = caption_sources(annotation).get(FILE_SOURCE)
        if self.config.on_reject != "file" or not from_file:
            return self._reject(row, status, reason, text, score)
        annotation.update(
            caption=from_file, caption_source=FILE_SOURCE, captions={FILE_SOURCE: from_file},
            rejected_caption={"source": self.source, "text": text, "status": status, "reason": reason, "similarity": score},
        )  # fmt: skip
        row.update(
            annotation=json.dumps(annotation, ensure_ascii=False).encode("utf-8"), caption=from_file,
            caption_source=FILE_SOURCE, caption_sources=[FILE_SOURCE], generated_caption=text, caption_similarity=score,
        )  # fmt: skip

    def _accept(self, row: dict, text: str, score: float | None) -> None:
        annotation = json.loads(row["annotation"])
        captions = {**caption_sources(annotation), self.source: text}
        source = FILE_SOURCE if self.config.stored == "file" and captions.get(FILE_SOURCE) else self.source
        annotation.update(
            caption=captions[source], caption_source=source, captions=captions, caption_similarity=score,
            caption_model={"model": self.config.model, "revision": self.config.revision, "frames": self.config.frames,
                           "prompt": self.config.prompt if self.captioner.chat else None},
        )  # fmt: skip
        row.update(
            annotation=json.dumps(annotation, ensure_ascii=False).encode("utf-8"),
            caption=captions[source],
            caption_source=source,
            caption_sources=sorted(captions),
            generated_caption=text,
            caption_similarity=score,
        )
