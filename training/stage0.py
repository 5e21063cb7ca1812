"""Stage 0 (toy scale): train a text-to-image base UNet on captioned images, without pose.

    python -m training.stage0 --preset toy --data TOY_WORLD/laion_pose --output DIR [--max-steps N] [--resume latest]

Starts from ``--model.pretrained`` or, when empty, the tiny random SD-shaped model built
into ``DIR/tiny-base``; trains the whole UNet (:class:`training.base_stage.BaseImageStage`)
through the same loop as stages 1 and 2. Every field of :class:`training.config.Stage0Config`
is a flag (``--help`` lists them). DIR receives ``checkpoints/``, ``logs/``, ``samples/``,
``metrics.jsonl``, ``config.json`` and the exported ``model/``: a complete diffusers
SD-1.x folder that stage 1 loads with ``--model.pretrained DIR/model``.
"""

from __future__ import annotations

from training.entry import run_stage


def main(argv: list[str] | None = None):
    """Parse ``argv`` (default: the process arguments), train, and return the :class:`training.loop.TrainResult`."""
    from training.base_stage import BaseImageStage

    return run_stage(argv, stage=0, stage_class=BaseImageStage, prog="python -m training.stage0", description=__doc__)


if __name__ == "__main__":
    main()
