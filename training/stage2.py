"""Stage 2: train the inflated UNet's temporal and cross-frame attention on pose-free video clips.

    python -m training.stage2 --preset tiny|paper --data CLIPS_DIR --init STAGE1_DIR --output DIR [--max-steps N] [--resume latest]

STAGE1_DIR is a stage-1 output folder (or its ``model`` folder): its base model
and pose encoder are loaded; only ``attn1.to_q``, ``attn2.to_q``, the temporal
attention and the temporal conv train. Every field of
:class:`training.config.Stage2Config` is a flag (``--help`` lists them).
Multi-GPU: ``accelerate launch -m training.stage2 ...`` or ``torchrun ... -m training.stage2``.
DIR receives ``checkpoints/``, ``logs/``, ``samples/``, ``metrics.jsonl``,
``config.json`` and the exported ``model/`` that
``python -m training.generate --model DIR/model`` loads.
"""

from __future__ import annotations

from training.entry import run_stage


def main(argv: list[str] | None = None):
    """Parse ``argv`` (default: the process arguments), train, and return the :class:`training.loop.TrainResult`."""
    from training.stages import VideoStage

    return run_stage(argv, stage=2, stage_class=VideoStage, prog="python -m training.stage2", description=__doc__)


if __name__ == "__main__":
    main()
