"""Pose models, the keypoint visibility filter and skeleton drawing.

- :mod:`pose_extraction.skeleton`: the one renderer of COCO-17 skeleton images
  used by the data builders, training, generation and evaluation.
- :mod:`pose_extraction.estimator`: the estimator interface;
  :mod:`pose_extraction.backends`: the backend registry (name -> config + estimator)
  and :class:`~pose_extraction.backends.PoseConfig`; backends in
  :mod:`pose_extraction.mediapipe_backend` and :mod:`pose_extraction.mmpose_backend`.
- :mod:`pose_extraction.filtering`: the keep/reject rule of LAION-Pose.
"""
