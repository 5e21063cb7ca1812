"""Follow-Your-Pose networks on stock diffusers parts: the pose encoder and the inflated UNet."""

from training.models.pose_encoder import (
    PoseEncoder,
    PoseEncoderOutput,
    expand_conv_in,
    fold_frames,
    pose_unet_inputs,
    repeat_features,
    unfold_frames,
)

__all__ = [
    "PoseEncoder",
    "PoseEncoderOutput",
    "expand_conv_in",
    "fold_frames",
    "pose_unet_inputs",
    "repeat_features",
    "unfold_frames",
]
