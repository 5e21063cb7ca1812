"""The captioning stage of the HD-VILA builder: the gate, the stage on real clips, the whole job on Ray, caption-only mode.

Models are tiny random transformers models built from configs and saved with ``save_pretrained`` to a temporary
folder, then loaded back by the stage through ``AutoProcessor``/``AutoModelForImageTextToText``/``CLIPModel``
``from_pretrained``, the path a hub id takes: a BLIP captioner (image-to-text, no chat template), a LLaVA VLM
(image-text-to-text with a chat template) and a CLIP model for the gate.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from datasets.clips import CAPTION_STATUSES, FILE_SOURCE, INDEX_SCHEMA, KEPT, pick_caption, read_index, shard_paths
from pipelines.hdvila.caption_gate import ClipSimilarity, check_text
from pipelines.hdvila.captioning import Captioner, ClipCaptioner, frame_positions
from pipelines.hdvila.config import CaptionConfig, CutConfig
from pipelines.hdvila.stages import ClipCutter, batch_to_rows, rows_to_batch
from pipelines.hdvila.tiny_captioner import WORDS, save_tiny_blip
from tests.test_hdvila_job import _entry, _job_inputs, _plan, _span, ray_cluster, videos  # noqa: F401  # fixtures


def save_tiny_llava(folder: Path) -> Path:
    """A random LLaVA VLM with a chat template (image-text-to-text), tokenizer over :data:`WORDS`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<image>"]
    vocab = {token: index for index, token in enumerate(specials + WORDS + ["user", "assistant", ":", "describe"])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )  # fmt: skip
    template = (
        "{% for m in messages %}{{ m['role'] }} : {% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
        "{% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}{% if add_generation_prompt %}assistant : {% endif %}"
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer, chat_template=template, patch_size=8, vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )  # fmt: skip
    shape = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2)
    config = LlavaConfig(
        vision_config=dict(model_type="clip_vision_model", **shape, num_hidden_layers=2, image_size=32, patch_size=8),
        text_config=dict(model_type="llama", **shape, num_hidden_layers=1, num_key_value_heads=2, vocab_size=len(vocab),
                         bos_token_id=1, eos_token_id=2, pad_token_id=0),
        image_token_index=vocab["<image>"], vision_feature_layer=-1, vision_feature_select_strategy="default",
    )  # fmt: skip
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id = 0
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def save_tiny_clip(folder: Path) -> Path:
    """A random CLIP model with a byte-level BPE tokenizer (no merges) and its image processor."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    characters = list(bytes_to_unicode().values())
    vocab = {token: index for index, token in enumerate(characters + [c + "</w>" for c in characters] + ["<|startoftext|>", "<|endoftext|>"])}
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=CLIPTokenizer(vocab=vocab, merges=[]),
    )
    shape = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(**shape, vocab_size=len(vocab), max_position_embeddings=77, bos_token_id=len(vocab) - 2,
                         eos_token_id=len(vocab) - 1, pad_token_id=len(vocab) - 1),
        vision_config=dict(**shape, image_size=32, patch_size=8),
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("caption_models")
    return {"blip": save_tiny_blip(root / "blip"), "llava": save_tiny_llava(root / "llava"), "clip": save_tiny_clip(root / "clip")}


def _test_config(model: Path, **options) -> CaptionConfig:
    """Random models rarely end a caption or vary it: the tests keep cut-off and repeating ones unless they check the gate."""
    return CaptionConfig(enabled=True, model=str(model), max_new_tokens=6, max_repeats=8, reject_cut_off=False, **options)


def test_gate_rejects_what_it_should_on_captions_made_here():
    assert check_text("a woman in a red shirt dances on a stage.") == (None, "")
    for empty in ("", "   ", "...", "\n"):
        assert check_text(empty)[0] == "caption_empty"
    assert check_text("a man dancing dancing dancing on stage", max_repeats=3)[0] == "caption_repetitive"
    status, reason = check_text("the video shows a man on a stage on a stage on a stage", max_repeats=3)
    assert status == "caption_repetitive" and "'on a stage'" in reason
    assert check_text("a man dancing dancing on stage", max_repeats=3)[0] is None  # twice is language, not a loop
    assert check_text(" ".join(f"word{i}" for i in range(81)), max_words=80)[0] == "caption_too_long"
    assert check_text(" ".join(f"word{i}" for i in range(80)), max_words=80)[0] is None
    status, reason = check_text("a man walking in the", truncated=True)
    assert status == "caption_too_long" and "max_new_tokens" in reason
    assert set(CAPTION_STATUSES) >= {check_text("")[0], check_text("a a a")[0], check_text("a", truncated=True)[0]}


def test_clip_similarity_is_the_mean_over_frames_and_thresholds_reject(tiny_models, people_photos, scenery_photo):
    similarity = ClipSimilarity(str(tiny_models["clip"]))
    photo, other = people_photos["astronaut"], scenery_photo
    single, repeated, mixed, alone = similarity(["an astronaut"] * 3 + ["a cup of coffee"], [[photo], [photo, photo, photo], [photo, other], [other]])
    assert -1.0 <= single <= 1.0 and repeated == pytest.approx(single, abs=1e-5)
    assert mixed == pytest.approx((single + similarity(["an astronaut"], [[other]])[0]) / 2, abs=1e-5)
    assert alone != pytest.approx(single, abs=1e-6)  # other text and frame, another score


@pytest.fixture(scope="module")
def cut_rows(tmp_path_factory, videos):  # noqa: F811
    tmp = tmp_path_factory.mktemp("cut")
    source, rows = _plan(tmp, [_entry("good-A", [_span(0, 1), _span(1, 2.5), _span(3.9, 5)]), _entry("good_B", [_span(0, 1)])], videos)
    for row in rows:
        row["caption"] = "a counter on blue" if row["key"] == "good-A_0" else ""
    return batch_to_rows(ClipCutter(CutConfig(fps=10, size=64), source)(rows_to_batch(rows)))


def test_stage_captions_kept_clips_records_sources_and_gates(tiny_models, cut_rows):
    rows = [dict(row) for row in cut_rows]
    assert [row["status"] for row in rows] == [KEPT, KEPT, "span_past_end", KEPT]
    rows[3]["mp4"] = rows[3]["mp4"][: len(rows[3]["mp4"]) // 3]  # a clip whose frames no longer decode
    stage = ClipCaptioner(_test_config(tiny_models["blip"], clip_model=str(tiny_models["clip"]), min_similarity=-1.0))
    out = {row["key"]: row for row in batch_to_rows(stage(rows_to_batch(rows)))}
    source = f"model:{tiny_models['blip']}"
    for key in ("good-A_0", "good-A_1"):
        row, annotation = out[key], json.loads(out[key]["annotation"])
        assert row["status"] == KEPT and row["generated_caption"] and set(row["generated_caption"].split()) <= set(WORDS)
        assert annotation["captions"][source] == row["generated_caption"] and -1 <= row["caption_similarity"] <= 1
        assert row["caption"] == annotation["caption"] == row["generated_caption"] and row["caption_source"] == source
    assert out["good-A_0"]["caption_sources"] == [FILE_SOURCE, source] and out["good-A_1"]["caption_sources"] == [source]
    assert json.loads(out["good-A_0"]["annotation"])["captions"][FILE_SOURCE] == "a counter on blue"
    assert out["good-A_2"]["status"] == "span_past_end" and out["good-A_2"]["generated_caption"] is None  # passed through
    assert out["good_B_0"]["status"] == "caption_failed" and "did not decode" in out["good_B_0"]["error"]
    timing = stage.take_timing()
    assert timing["captioned"] == 3 and timing["model_s"] > 0 and stage.take_timing() == {}

    keep_file = ClipCaptioner(_test_config(tiny_models["blip"], stored="file"))
    row = batch_to_rows(keep_file(rows_to_batch([dict(cut_rows[0])])))[0]
    assert row["caption"] == "a counter on blue" and row["caption_source"] == FILE_SOURCE and row["generated_caption"]
    annotation = json.loads(row["annotation"])
    assert pick_caption(annotation, "model") == row["generated_caption"] and pick_caption(annotation, "file") == "a counter on blue"

    strict = ClipCaptioner(_test_config(tiny_models["blip"], clip_model=str(tiny_models["clip"]), min_similarity=1.0))
    rejected = batch_to_rows(strict(rows_to_batch([dict(r) for r in cut_rows[:2]])))
    assert [r["status"] for r in rejected] == ["caption_mismatch"] * 2 and all("< min_similarity 1.0" in r["error"] for r in rejected)
    assert all(r["mp4"] is None and r["generated_caption"] for r in rejected)
    fall_back = ClipCaptioner(_test_config(tiny_models["blip"], clip_model=str(tiny_models["clip"]), min_similarity=1.0, on_reject="file"))
    with_file, without = batch_to_rows(fall_back(rows_to_batch([dict(r) for r in cut_rows[:2]])))  # good-A_0 has file text
    annotation = json.loads(with_file["annotation"])
    assert with_file["status"] == KEPT and with_file["mp4"] and with_file["caption"] == annotation["caption"] == "a counter on blue"
    assert with_file["caption_source"] == annotation["caption_source"] == FILE_SOURCE and annotation["captions"] == {FILE_SOURCE: "a counter on blue"}
    assert annotation["rejected_caption"]["status"] == "caption_mismatch" and annotation["rejected_caption"]["text"] == with_file["generated_caption"]
    assert without["status"] == "caption_mismatch" and without["mp4"] is None  # no file text to fall back on
    cut_off = ClipCaptioner(CaptionConfig(enabled=True, model=str(tiny_models["blip"]), max_new_tokens=3, max_repeats=8))
    assert {r["status"] for r in batch_to_rows(cut_off(rows_to_batch([dict(cut_rows[0])])))} == {"caption_too_long"}


def test_chat_vlm_sees_every_sampled_frame_with_the_prompt(tiny_models, cut_rows):
    captioner = Captioner(_test_config(tiny_models["llava"], prompt="describe", frames=3))
    assert captioner.chat and captioner.processor.tokenizer.padding_side == "left"
    stage = ClipCaptioner(_test_config(tiny_models["llava"], prompt="describe", frames=3), captioner=captioner)
    out = batch_to_rows(stage(rows_to_batch([dict(row) for row in cut_rows[:2]])))
    assert [row["status"] for row in out] == [KEPT, KEPT] and all(row["generated_caption"] for row in out)
    annotation = json.loads(out[0]["annotation"])
    assert annotation["caption_model"]["prompt"] == "describe" and annotation["caption_model"]["frames"] == 3
    assert list(frame_positions(10, 3)) == [1, 5, 8] and list(frame_positions(2, 4)) == [0, 1]


def test_pick_caption_policies_and_clips_cut_before_captioning():
    both = {"caption": "generated", "captions": {"file": "from file", "model:m": "generated"}, "caption_source": "model:m"}
    assert [pick_caption(both, p) for p in ("stored", "file", "model", "file_or_model", "model_or_file")] == [
        "generated", "from file", "generated", "from file", "generated"]  # fmt: skip
    legacy = {"caption": "old text"}  # written before caption sources existed: the caption file's text
    assert pick_caption(legacy, "file") == "old text" and pick_caption(legacy, "model") == "" and pick_caption(legacy, "model_or_file") == "old text"
    assert pick_caption({"caption": "x"}, "stored", stored="txt member") == "txt member"
    with pytest.raises(ValueError, match="unknown caption policy"):
        pick_caption(both, "best")


def _files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.slow
def test_job_captions_every_kept_clip_on_ray_resumes_then_caption_only_mode(tmp_path, videos, ray_cluster, tiny_models):  # noqa: F811
    import webdataset as wds

    from pipelines.build_hdvila_clips import main

    metadata, captions = _job_inputs(tmp_path)
    out = tmp_path / "clips"
    source = f"model:{tiny_models['blip']}"
    argv = [
        "--metadata", str(metadata), "--videos", str(videos), "--output", str(out), "--fps", "10", "--size", "64",
        "--captions", str(captions), "--caption-column", "text", "--clips-per-shard", "3",
        "--caption-enabled", "--caption-model", str(tiny_models["blip"]), "--caption-clip-model", str(tiny_models["clip"]),
        "--caption-min-similarity", "-1", "--caption-max-new-tokens", "6", "--caption-max-repeats", "8",
        "--no-caption-reject-cut-off", "--caption-clips-per-call", "2",
    ]  # fmt: skip
    assert main(argv) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["input_rows"] == 12 == sum(stats["counts"].values()) and stats["counts"]["kept"] == 5
    assert stats["captioned_clips"] == 5 and stats["caption_model_s"] > 0 and stats["caption_model"] == source
    index = read_index(out)
    assert index.schema.equals(INDEX_SCHEMA)
    kept = {row["key"]: row for row in index.to_pylist() if row["status"] == KEPT}
    samples = {s["__key__"]: s for s in wds.WebDataset([str(p) for p in shard_paths(out)], shardshuffle=False, empty_check=False)}
    assert set(samples) == set(kept) == {"good-A_0", "good-A_1", "good_B_0", "good_B_1", "vfr_0"}
    for key, row in kept.items():
        annotation = json.loads(samples[key]["json"])
        assert row["generated_caption"] and samples[key]["txt"].decode() == row["caption"] == row["generated_caption"]
        assert annotation["captions"][source] == row["generated_caption"] and row["caption_source"] == source
        has_file = key.startswith("good")  # the caption file covers good-A and good_B
        assert row["caption_sources"] == ([FILE_SOURCE, source] if has_file else [source])
        assert pick_caption(annotation, "file") == (annotation["captions"].get(FILE_SOURCE, "")) and (pick_caption(annotation, "file") != "") == has_file
    assert json.loads((out / "config.json").read_text())["shaping"]["caption"]["model"] == str(tiny_models["blip"])
    from training.config import ClipDataConfig
    from training.data import clip_dataset

    for policy, column in (("file", None), ("model", "generated_caption"), ("stored", "caption")):
        data = clip_dataset(out, ClipDataConfig(root=str(out), resolution=32, num_frames=2, frame_stride=1, caption_source=policy), seed=0)
        got = {data.key(i): data.item(0, i)["caption"] for i in range(len(data))}
        file_captions = {key: json.loads(samples[key]["json"])["captions"].get(FILE_SOURCE, "") for key in kept}
        assert got == (file_captions if column is None else {key: row[column] for key, row in kept.items()})

    # resume: a rerun touches nothing; a lost shard is rebuilt with the same captions
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name not in ("stats.json", "config.json")}
    assert main(argv) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name not in ("stats.json", "config.json")} == before
    old_rows = pq.read_table(out / "00000.parquet").to_pylist()
    (out / "00000.stats.json").unlink()
    assert main(argv) == 0
    assert pq.read_table(out / "00000.parquet").to_pylist() == old_rows
    assert json.loads((out / "stats.json").read_text())["counts"] == stats["counts"]

    # caption-only mode on the captioned set with another model: the source shards are never touched
    source_files = _files(out)
    llava = ["--caption-model", str(tiny_models["llava"]), "--caption-max-new-tokens", "6", "--caption-max-repeats", "8",
             "--no-caption-reject-cut-off", "--caption-stored", "file"]  # fmt: skip
    assert main(["recaption", "--clips", str(out), "--output", str(tmp_path / "recaptioned"), *llava]) == 0
    assert main(["recaption", "--clips", str(out), "--output", str(tmp_path / "tables"), "--write", "parquet", *llava]) == 0
    assert _files(out) == source_files
    new_source = f"model:{tiny_models['llava']}"
    recaptioned = {row["key"]: row for row in read_index(tmp_path / "recaptioned").to_pylist()}
    assert len(recaptioned) == 12 and {k for k, r in recaptioned.items() if r["status"] == KEPT} == set(kept)
    for key in kept:
        row = recaptioned[key]
        assert row["generated_caption"] and new_source in row["caption_sources"] and source in row["caption_sources"]
        assert row["caption_source"] == (FILE_SOURCE if key.startswith("good") else new_source)
    table = pq.read_table(tmp_path / "tables" / "captions.parquet").to_pylist()
    assert sorted(row["key"] for row in table) == sorted(kept) and all(row["caption"] and row["caption_source"] == new_source for row in table)
    assert {row["clip_id"] for row in table} == {kept[k]["clip_id"] for k in kept}
    tables_stats = json.loads((tmp_path / "tables" / "stats.json").read_text())
    assert tables_stats["input_rows"] == 12 == sum(tables_stats["counts"].values()) and not list((tmp_path / "tables").glob("*.tar"))
    assert main(["recaption", "--clips", str(out), "--output", str(out), *llava]) == 2  # never into the source


def test_an_output_captioned_before_on_reject_existed_resumes_at_its_default(tmp_path):
    from datasets import cli
    from pipelines.hdvila.config import HdvilaConfig
    from pipelines.hdvila.job import check_and_write_config

    argv = ["--source.metadata", "/m.jsonl", "--source.videos", "/v", "--output", str(tmp_path), "--caption.enabled", "true"]
    config = cli.parse(HdvilaConfig, argv, prog="build_hdvila_clips.py", description="")
    check_and_write_config(config, tmp_path)
    record = json.loads((tmp_path / "config.json").read_text())
    del record["shaping"]["caption"]["on_reject"]  # as an output captioned before the setting existed records it
    (tmp_path / "config.json").write_text(json.dumps(record))
    (tmp_path / "00000.stats.json").write_text("{}")  # a finished shard: resuming checks the settings
    check_and_write_config(config, tmp_path)  # the setting at its default: resumes
    other = cli.parse(HdvilaConfig, [*argv, "--caption.on-reject", "file"], prog="build_hdvila_clips.py", description="")
    with pytest.raises(ValueError, match=r"other settings \(caption\.on_reject\)"):
        check_and_write_config(other, tmp_path)
