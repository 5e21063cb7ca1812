"""The Follow-Your-Pose model library: networks, the generation pipeline, long videos, the release's weights.

It imports nothing from ``training``, ``evaluation`` or ``pipelines`` (``tests/test_import_graph.py`` checks it),
so a user can generate without the trainer:

- :mod:`follow_your_pose.models`: the control (pose) encoder, the inflated video UNet and its designs (ours and the
  release's), the release's key layout;
- :mod:`follow_your_pose.pipeline`: ``FollowYourPosePipeline`` (a diffusers pipeline) and :mod:`.long_video`;
- :mod:`follow_your_pose.control_frames`: skeleton frames to the encoder's input (ours and the release's way);
- :mod:`follow_your_pose.export`: the exported model folder every loader reads;
- :mod:`follow_your_pose.generate` and :mod:`follow_your_pose.convert`: what ``python -m training.generate`` and
  ``python -m training.convert_official`` run;
- :mod:`follow_your_pose.tiny`: tiny random SD-shaped models for tests, demos and CPU presets.
"""
