"""Record schemas and readers shared by every part of the project.

One module per record kind: :mod:`datasets.laion_pose` (an image with its
caption and the poses found in it) and, for video, :mod:`datasets.clips`.
:mod:`datasets.keypoints` holds the COCO-17 layout they both use.
:mod:`datasets.output_folder` checks and locks the output folder of every
builder and trainer.

This package shadows Hugging Face ``datasets`` inside the project's own
virtual environment; the project does not depend on it (see README).
"""
