"""A procedurally drawn toy world for training and evaluating the two-stage method at toy scale on a CPU.

Humanoid figures drawn from COCO-17 keypoints (:mod:`.poses`, :mod:`pose_extraction.figure`) in a
named colour on a uniform background of another named colour, captioned with both
(:mod:`.captions`), written in the formats of the real builders (:mod:`.writers`:
LAION-Pose shards for stage 1, clip shards for stage 2) plus held-out evaluation
sets (:mod:`.heldout`). The entry point is ``pipelines/build_toy_world.py``.
"""
