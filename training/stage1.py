"""Stage 1: train the pose encoder on LAION-Pose against a frozen Stable Diffusion.

    python -m training.stage1 --preset tiny|paper --data LAION_POSE_DIR --output DIR [--max-steps N] [--resume latest]

Every field of :class:`training.config.Stage1Config` is a flag (``--help`` lists
them). Multi-GPU: ``accelerate launch -m training.stage1 ...`` or
``torchrun --nproc-per-node 8 -m training.stage1 ...``. DIR receives
``checkpoints/``, ``logs/`` (TensorBoard), ``samples/``, ``metrics.jsonl``,
``config.json`` and the exported ``model/`` that stage 2 (``--init DIR``) and
``python -m training.generate --model DIR/model`` load.
"""

from __future__ import annotations

from training.entry import run_stage


def main(argv: list[str] | None = None):
    """Parse ``argv`` (default: the process arguments), train, and return the :class:`training.loop.TrainResult`."""
    from training.stages import PoseImageStage

    return run_stage(argv, stage=1, stage_class=PoseImageStage, prog="python -m training.stage1", description=__doc__)


if __name__ == "__main__":
    main()
