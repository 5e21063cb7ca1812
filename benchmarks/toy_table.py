"""The paper's claims at toy scale, on a CPU: one command trains, generates, evaluates and tabulates.

    python benchmarks/toy_table.py [--out toy-table] [--scale full|smoke] [--device auto] [--jobs N]

Every step runs the project's real entry points on the toy world (:mod:`pipelines.build_toy_world`):

1. world: 32x32 LAION-Pose images, clips and a held-out evaluation set (poses and colour pairs training never saw),
   with the table's figure sizes (:data:`WORLD`);
2. stage 0 (``training.stage0 --preset toy``): the tiny VAE learns to reconstruct the images, then the UNet learns
   text-to-image without pose: the base model;
3. stage 1 from that base, the same steps for each variant: residual injection into all four down blocks (the paper),
   channel concatenation (the paper's Fig. 8 ablation), residual into the first down block only; and the untrained
   zero-init encoder (``--max-steps 0``): the base model with no pose control;
4. stage 2 from the residual stage-1 model (temporal and cross-frame attention on clips);
5. generation of the held-out set with each model (DDIM, fixed seeds per entry, the pose in the conditional
   guidance branch only unless the row says otherwise), stage-1 models frame by frame (cross-frame attention off)
   unless the row says otherwise; long held-out sequences with the noise-reuse scheme and with independent windows;
6. evaluation (``pose_iou``, ``prompt_fidelity``, ``background_stability`` from the evaluation registry, window
   boundaries from :mod:`evaluation.toy_metrics`), then ``OUT/table.md``, ``OUT/grid.png`` and ``OUT/table.json``.

Steps 3-5 run ``--jobs`` at a time, each in its own process, as soon as the model they need exists (on a 2-core
CPU two one-thread processes do more work than one two-thread process). A rerun with the same ``--out`` resumes:
finished steps (an exported model, a generated video, a scored run) are skipped. ``--scale smoke`` runs every step
for a few iterations (the test suite runs it); ``full`` is the table.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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
WORLD = {"figure_height": (0.4, 0.6), "limb_width": 0.5, "head_radius": 0.55}
"""The table's world: figures 40-60% of the frame high at random places, thick limbs (2-3 pixels at 32x32). Any two
such silhouettes overlap little (IoU 0.16 on average, against 0.22 for the default 55-85% high figures), so a figure
that follows its pose stands out from one that does not; the limbs are at least as wide in pixels as the default world's."""


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
    pose_guidance: bool = True
    """The pose to the conditional guidance branch only (``training.generate --pose-guidance``); false: both branches."""


RUNS = (
    *(Run(v.name, v.label, f"stage1_{v.name}") for v in STAGE1),
    *(Run(f"{v.name}_seen", f"{v.label}, trained colour pairs", f"stage1_{v.name}", "seen") for v in STAGE1),
    Run("residual_both_branches", "stage 1: residual, pose in both guidance branches (public release)", "stage1_residual",
        pose_guidance=False),
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
        self.record(name, time.monotonic() - started)

    def record(self, name: str, seconds: float) -> None:
        self.timings[name] = round(seconds, 1)
        log.info("%s: %.0f s", name, seconds)
        (self.out / "timings.json").write_text(json.dumps(self.timings, indent=1))

    def add_wall(self, seconds: float) -> float:
        """Add this invocation's wall-clock seconds to the ones before it (a resumed table sums its runs)."""
        path = self.out / "wall.json"
        total = (json.loads(path.read_text())["seconds"] if path.is_file() else 0.0) + seconds
        path.write_text(json.dumps({"seconds": total}))
        return total

    @property
    def world(self) -> Path:
        return self.out / "world"

    def build_world(self) -> None:
        from pipelines.build_toy_world import main

        s = self.scale
        argv = ["--output", str(self.world), "--size", str(SIZE), "--images", str(s.images), "--clips", str(s.clips),
                "--eval-videos", str(s.eval_videos), "--eval-long-videos", str(s.eval_long_videos),
                "--eval-long-frames", str(s.eval_long_frames), "--workers", "2"]  # fmt: skip
        for name, value in WORLD.items():
            argv += [f"--{name.replace('_', '-')}", *map(str, value if isinstance(value, tuple) else (value,))]
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
        from datasets.toy_world import make_caption, reference
        from evaluation.spec import toy_item

        eval_dir, spec = self.world / "eval", self.spec
        held_out = {tuple(pair) for pair in spec["held_out_pairs"]}
        seen = [(f, b) for f in spec["palette"] for b in spec["palette"] if f != b and (f, b) not in held_out]
        items = []
        for entry in spec["entries"]:
            if entry["set"] != ("short" if run.subset == "seen" else run.subset):
                continue
            item = toy_item(spec, entry)
            if run.subset == "seen":
                pair = seen[len(items) * 7 % len(seen)]
                item.update(prompt=make_caption(*pair, spec["caption_template"]), toy=reference(spec, *pair))
            item.update(pose=str(eval_dir / entry["pose"]), steps=self.scale.steps, guidance_scale=self.scale.guidance_scale,
                        pose_guidance=run.pose_guidance)  # fmt: skip
            if run.overlap is not None:
                item["overlap"] = run.overlap
            items.append(item)
        return items

    def evaluate(self, name: str, videos: Path) -> None:
        from evaluation.config import EvalConfig
        from evaluation.evaluator import evaluate_folder

        config = EvalConfig(metrics=METRICS, device=self.device, bootstrap=self.scale.bootstrap, report=False)
        evaluate_folder(videos, self.out / "scores" / name, config)


@dataclass(frozen=True)
class Task:
    """One step of the table: its name (as in the timings), the file that exists once it finished, what it runs
    (a :class:`Steps` method and its argument) and the steps it needs first."""

    name: str
    done: Path
    method: str
    argument: object = None
    after: tuple[str, ...] = ()


def model_tasks(steps: Steps) -> list[Task]:
    """Stage 1, stage 2 and generation, in priority order: the critical path (residual -> stage 2 -> its runs) first;
    among the generation runs of either kind of model the longer ones first (long videos, then cross-frame attention,
    which attends to more frames), so the last run to start is a short one and both processes stay busy to the end."""
    out = steps.out
    variants = sorted(STAGE1, key=lambda v: v.name != "residual")
    tasks = [Task(f"stage1_{v.name}", out / f"stage1_{v.name}" / "model", "stage1", v) for v in variants]
    tasks.insert(1, Task("stage2", out / "stage2" / "model", "stage2", after=("stage1_residual",)))
    runs = sorted(RUNS, key=lambda r: (r.model != "stage2", r.subset != "long", not r.cross_frame))
    tasks += [Task(f"generate_{r.name}", out / "videos" / r.name / "done.json", "generate", r, (r.model,)) for r in runs]
    return tasks


def _start_worker(threads: int) -> None:
    """A worker process's set-up: its share of the torch threads, and logging like the parent's."""
    import torch

    torch.set_num_threads(threads)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")


def _run_task(steps: Steps, task: Task) -> float:
    """Run ``task``; returns its seconds."""
    started = time.monotonic()
    method = getattr(steps, task.method)
    method() if task.argument is None else method(task.argument)
    return time.monotonic() - started


def run_tasks(steps: Steps, tasks: list[Task], jobs: int) -> None:
    """Run the unfinished ``tasks``, ``jobs`` at a time (each in its own process, torch threads split between them),
    a task only once the ones it needs are done. A failed task stops new ones; those running finish and are kept."""
    pending = [t for t in tasks if not t.done.exists()]
    for task in tasks:
        if task.done.exists():
            log.info("%s: already done", task.name)
    if jobs == 1:
        for task in pending:
            steps.timed(task.name, False, functools.partial(_run_task, steps, task))
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    finished = {t.name for t in tasks if t.done.exists()}
    threads = max(1, (os.cpu_count() or 1) // jobs)
    running, failure = {}, None
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker, initargs=(threads,)) as pool:
        while pending or running:
            ready = [t for t in pending if set(t.after) <= finished] if failure is None else []
            for task in ready[: jobs - len(running)]:
                log.info("%s: running", task.name)
                running[pool.submit(_run_task, steps, task)] = task
                pending.remove(task)
            if not running:
                break
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                task = running.pop(future)
                if future.exception() is not None:
                    log.error("%s failed: %s", task.name, future.exception())
                    failure = failure or future.exception()
                    continue
                finished.add(task.name)
                steps.record(task.name, future.result())
    if failure is not None:
        raise failure
    if pending:
        raise RuntimeError(f"steps never became ready: {[t.name for t in pending]}")


def run_table(out: Path, scale: TableScale, device: str = "auto", jobs: int = 1) -> dict:
    """Run (or resume) every step into ``out``, the model steps ``jobs`` at a time; returns the table's figures
    (also in ``out/table.json``)."""
    from benchmarks.toy_table_report import write_outputs

    out.mkdir(parents=True, exist_ok=True)
    steps = Steps(out, scale, device)
    started = time.monotonic()
    steps.timed("world", (steps.world / "eval" / "spec.json").is_file(), steps.build_world)
    steps.timed("stage0", (out / "stage0" / "model").is_dir(), steps.stage0)
    run_tasks(steps, model_tasks(steps), jobs)
    scored = [("oracle", steps.world / "eval" / "oracle")] + [(r.name, out / "videos" / r.name) for r in RUNS]
    for name, videos in scored:
        steps.timed(f"evaluate_{name}", (out / "scores" / name / "results.json").is_file(), lambda n=name, v=videos: steps.evaluate(n, v))
    wall = steps.add_wall(time.monotonic() - started)
    return write_outputs(out, RUNS, scale, steps.timings, wall, jobs)


def default_jobs(device: str) -> int:
    """Two processes of one torch thread each on a CPU of two or more cores (a UNet step at batch 16 takes 0.78 s on
    one thread and 0.59 s on two here, so two one-thread processes do 1.5x the work), one process on a GPU."""
    import torch

    on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    return 1 if on_gpu else min(2, os.cpu_count() or 1)


@dataclass(frozen=True, kw_only=True)
class TableConfig:
    """What the toy table runs (``python benchmarks/toy_table.py --help``)."""

    out: str = "toy-table"
    """Output folder (a rerun resumes)."""
    scale: Literal["full", "smoke"] = "full"
    """``full``: the table; ``smoke``: a few steps each."""
    device: str = "auto"
    """Torch device for training and generation (auto: cuda if present)."""
    jobs: int | None = None
    """Model steps run at once, each in its own process (None: 2 on a CPU, 1 on a GPU)."""


def main(argv: list[str] | None = None) -> int:
    from datasets import cli

    config = cli.parse(TableConfig, argv, prog="python benchmarks/toy_table.py", description=__doc__.split("\n")[0])
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    out = Path(config.out)
    table = run_table(out, SCALES[config.scale], config.device, config.jobs or default_jobs(config.device))
    print((out / "table.md").read_text())
    print(f"total {table['seconds']['total_wall']:.0f} s; table: {out / 'table.md'}, grid: {out / 'grid.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
