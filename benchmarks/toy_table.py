"""The paper's claims at toy scale, on a CPU: one command trains, generates, evaluates and tabulates.

    python benchmarks/toy_table.py [--out toy-table] [--scale full|smoke] [--device auto]

Every step runs the project's real entry points on the toy world (:mod:`pipelines.build_toy_world`):

1. world: 32x32 LAION-Pose images, clips and a held-out evaluation set (poses and colour pairs training never saw);
2. stage 0 (``training.stage0 --preset toy``): the tiny VAE learns to reconstruct the images, then the UNet learns
   text-to-image without pose: the base model;
3. stage 1 from that base, the same steps for each variant: residual injection into all four down blocks (the paper),
   channel concatenation (the paper's Fig. 8 ablation), residual into the first down block only; and the untrained
   zero-init encoder (``--max-steps 0``): the base model with no pose control;
4. stage 2 from the residual stage-1 model (temporal and cross-frame attention on clips);
5. generation of the held-out set with each model (DDIM, fixed seeds per entry), stage-1 models frame by frame
   (cross-frame attention off) unless the row says otherwise; long held-out sequences with the noise-reuse scheme
   and with independent windows;
6. evaluation (``pose_iou``, ``prompt_fidelity``, ``background_stability`` from the evaluation registry, window
   boundaries from :mod:`evaluation.toy_metrics`), then ``OUT/table.md``, ``OUT/grid.png`` and ``OUT/table.json``.

A rerun with the same ``--out`` resumes: finished steps (an exported model, a generated video, a scored run) are
skipped. ``--scale smoke`` runs every step for a few iterations (the test suite runs it); ``full`` is the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("toy_table")
METRICS = ("pose_iou", "prompt_fidelity", "background_stability")


@dataclass(frozen=True, kw_only=True)
class TableScale:
    """Sizes of one table run."""

    images: int
    clips: int
    eval_videos: int
    eval_long_videos: int
    eval_long_frames: int
    autoencoder_steps: int
    stage0_steps: int
    stage1_steps: int
    stage2_steps: int
    steps: int
    """DDIM steps per generated video."""
    guidance_scale: float
    bootstrap: int


SCALES = {
    "full": TableScale(
        images=2048, clips=256, eval_videos=16, eval_long_videos=4, eval_long_frames=24, autoencoder_steps=300,
        stage0_steps=2200, stage1_steps=400, stage2_steps=300, steps=20, guidance_scale=5.0, bootstrap=1000,
    ),
    "smoke": TableScale(
        images=32, clips=4, eval_videos=2, eval_long_videos=1, eval_long_frames=12, autoencoder_steps=2,
        stage0_steps=2, stage1_steps=2, stage2_steps=1, steps=2, guidance_scale=5.0, bootstrap=20,
    ),
}  # fmt: skip
SIZE = 32


@dataclass(frozen=True)
class Variant:
    """A stage-1 run of the table: its name and the flags that make it differ from the paper's design."""

    name: str
    label: str
    flags: tuple[str, ...] = ()
    untrained: bool = False


STAGE1 = (
    Variant("no_control", "base model, no pose control (zero-init encoder)", untrained=True),
    Variant("residual", "stage 1: residual into all 4 down blocks (paper)"),
    Variant("concat", "stage 1: channel concatenation (Fig. 8 ablation)", ("--model.pose-injection", "concat")),
    Variant("one_level", "stage 1: residual into 1 down block", ("--model.pose-levels", "0")),
)


@dataclass(frozen=True)
class Run:
    """One generation run: which model, which evaluation set, how."""

    name: str
    label: str
    model: str
    subset: str = "short"
    cross_frame: bool = False
    overlap: int | None = None


RUNS = (
    *(Run(v.name, v.label, f"stage1_{v.name}") for v in STAGE1),
    *(Run(f"{v.name}_seen", f"{v.label}, trained colour pairs", f"stage1_{v.name}", "seen") for v in STAGE1),
    Run("cross_frame", "stage 1 + cross-frame attention, untrained (zero-shot inflation)", "stage1_residual", cross_frame=True),
    Run("stage2", "stage 2 (temporal + cross-frame attention trained)", "stage2", cross_frame=True),
    Run("long_reuse", "stage 2, long video, noise reuse (paper)", "stage2", "long", True),
    Run("long_independent", "stage 2, long video, independent windows", "stage2", "long", True, overlap=0),
)  # fmt: skip


class Steps:
    """Runs the table's steps in order, timing each and skipping what a previous run finished."""

    def __init__(self, out: Path, scale: TableScale, device: str) -> None:
        self.out, self.scale, self.device = out, scale, device
        self.timings: dict[str, float] = {}
        timings = out / "timings.json"
        if timings.is_file():
            self.timings = json.loads(timings.read_text())

    def timed(self, name: str, done: bool, action) -> None:
        if done:
            log.info("%s: already done", name)
            return
        started = time.monotonic()
        log.info("%s: running", name)
        action()
        self.timings[name] = round(time.monotonic() - started, 1)
        log.info("%s: %.0f s", name, self.timings[name])
        (self.out / "timings.json").write_text(json.dumps(self.timings, indent=1))

    @property
    def world(self) -> Path:
        return self.out / "world"

    def build_world(self) -> None:
        from pipelines.build_toy_world import main

        s = self.scale
        argv = ["--output", str(self.world), "--size", str(SIZE), "--images", str(s.images), "--clips", str(s.clips),
                "--eval-videos", str(s.eval_videos), "--eval-long-videos", str(s.eval_long_videos),
                "--eval-long-frames", str(s.eval_long_frames), "--workers", "2"]  # fmt: skip
        if s.images < 1024:
            argv += ["--images-per-shard", str(max(8, s.images // 2)), "--clips-per-shard", str(max(2, s.clips // 2))]
        if main(argv) != 0:
            raise RuntimeError("the toy world builder failed (see its log above)")

    def train(self, module, output: Path, argv: list[str]) -> None:
        common = ["--output", str(output), "--resume", "latest", "--log.progress-bar", "false", "--device", self.device]
        module.main([*argv, *common])

    def stage0(self) -> None:
        from training import stage0

        s = self.scale
        self.train(stage0, self.out / "stage0", ["--preset", "toy", "--data", str(self.world / "images"),
                                                 "--max-steps", str(s.stage0_steps),
                                                 "--model.autoencoder-steps", str(s.autoencoder_steps)])  # fmt: skip

    def stage1(self, variant: Variant) -> None:
        from training import stage1

        steps = 0 if variant.untrained else self.scale.stage1_steps
        self.train(stage1, self.out / f"stage1_{variant.name}", [
            "--preset", "toy", "--data", str(self.world / "images"), "--max-steps", str(steps),
            "--model.pretrained", str(self.out / "stage0" / "model"), *variant.flags])  # fmt: skip

    def stage2(self) -> None:
        from training import stage2

        self.train(stage2, self.out / "stage2", ["--preset", "toy", "--data", str(self.world / "clips"),
                                                 "--max-steps", str(self.scale.stage2_steps),
                                                 "--init", str(self.out / "stage1_residual")])  # fmt: skip

    def generate(self, run: Run) -> None:
        from evaluation.evaluator import write_json
        from evaluation.spec import generate_items

        folder = self.out / "videos" / run.name
        summary = generate_items(self.items(run), self.out / run.model / "model", folder, self.device,
                                 configure=lambda pipeline: pipeline.unet.set_frame_processors(cross_frame=run.cross_frame))
        if summary["failed"]:
            raise RuntimeError(f"{run.name}: could not generate {summary['failed']}")
        write_json(folder / "done.json", {"videos": summary["items"], "run": dataclasses.asdict(run)})

    @functools.cached_property
    def spec(self) -> dict:
        """The held-out set's ``spec.json`` (read once, after the world step wrote it)."""
        from datasets.toy_world import read_spec

        return read_spec(self.world / "eval")

    def items(self, run: Run) -> list[dict]:
        """The run's generation items: the held-out ``short`` or ``long`` entries; ``seen``: the short entries' poses
        with colour pairs that training used (one per entry, in turn), so prompt fidelity has a base rate to keep."""
        from datasets.toy_world import make_caption

        eval_dir, spec = self.world / "eval", self.spec
        held_out = {tuple(pair) for pair in spec["held_out_pairs"]}
        seen = [(f, b) for f in spec["palette"] for b in spec["palette"] if f != b and (f, b) not in held_out]
        items = []
        for entry in spec["entries"]:
            if entry["set"] != ("short" if run.subset == "seen" else run.subset):
                continue
            item = {k: entry[k] for k in ("key", "prompt", "frames", "seed", "width", "height", "fps")}
            if run.subset == "seen":
                item["prompt"] = make_caption(*seen[len(items) * 7 % len(seen)], spec["caption_template"])
            item.update(pose=str(eval_dir / entry["pose"]), steps=self.scale.steps, guidance_scale=self.scale.guidance_scale)
            if run.overlap is not None:
                item["overlap"] = run.overlap
            items.append(item)
        return items

    def evaluate(self, name: str, videos: Path) -> None:
        from evaluation.config import EvalConfig
        from evaluation.evaluator import evaluate_folder

        config = EvalConfig(metrics=METRICS, device=self.device, bootstrap=self.scale.bootstrap, report=False)
        evaluate_folder(videos, self.out / "scores" / name, config)


def run_table(out: Path, scale: TableScale, device: str = "auto") -> dict:
    """Run (or resume) every step into ``out``; returns the table's figures (also in ``out/table.json``)."""
    from benchmarks.toy_table_report import write_outputs

    out.mkdir(parents=True, exist_ok=True)
    steps = Steps(out, scale, device)
    started = time.monotonic()
    steps.timed("world", (steps.world / "eval" / "spec.json").is_file(), steps.build_world)
    steps.timed("stage0", (out / "stage0" / "model").is_dir(), steps.stage0)
    for variant in STAGE1:
        steps.timed(f"stage1_{variant.name}", (out / f"stage1_{variant.name}" / "model").is_dir(), lambda v=variant: steps.stage1(v))
    steps.timed("stage2", (out / "stage2" / "model").is_dir(), steps.stage2)
    for run in RUNS:
        steps.timed(f"generate_{run.name}", (out / "videos" / run.name / "done.json").is_file(), lambda r=run: steps.generate(r))
    scored = [("oracle", steps.world / "eval" / "oracle")] + [(r.name, out / "videos" / r.name) for r in RUNS]
    for name, videos in scored:
        steps.timed(f"evaluate_{name}", (out / "scores" / name / "results.json").is_file(), lambda n=name, v=videos: steps.evaluate(n, v))
    elapsed = time.monotonic() - started
    return write_outputs(out, RUNS, scale, steps.timings, elapsed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/toy_table.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("toy-table"), help="output folder (a rerun resumes)")
    parser.add_argument("--scale", choices=sorted(SCALES), default="full", help="full: the table; smoke: a few steps each")
    parser.add_argument("--device", default="auto", help="torch device for training and generation (auto: cuda if present)")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    table = run_table(args.out, SCALES[args.scale], args.device)
    print((args.out / "table.md").read_text())
    print(f"total {table['seconds']['total_wall']:.0f} s; table: {args.out / 'table.md'}, grid: {args.out / 'grid.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
