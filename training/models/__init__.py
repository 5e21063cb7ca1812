"""Follow-Your-Pose networks on stock diffusers parts: the pose encoder and the inflated UNet."""

from training.models.inflated_unet import (
    STAGE2_TRAINABLE,
    InflatedUNet,
    InflationConfig,
    freeze_for_stage2,
    load_inflated,
    parameter_counts,
    save_inflated,
)
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
    "STAGE2_TRAINABLE",
    "InflatedUNet",
    "InflationConfig",
    "PoseEncoder",
    "PoseEncoderOutput",
    "expand_conv_in",
    "fold_frames",
    "freeze_for_stage2",
    "load_inflated",
    "parameter_counts",
    "pose_unet_inputs",
    "repeat_features",
    "save_inflated",
    "unfold_frames",
]
