"""Follow-Your-Pose networks on stock diffusers parts: the pose encoder and the inflated UNet."""

from follow_your_pose.models.control_encoder import (
    ControlEncoder,
    ControlEncoderOutput,
    control_unet_inputs,
    expand_conv_in,
    fold_frames,
    repeat_features,
    unfold_frames,
)
from follow_your_pose.models.inflated_unet import (
    STAGE2_TRAINABLE,
    InflatedUNet,
    InflationConfig,
    freeze_for_stage2,
    load_inflated,
    parameter_counts,
    save_inflated,
)

__all__ = [
    "STAGE2_TRAINABLE",
    "InflatedUNet",
    "InflationConfig",
    "ControlEncoder",
    "ControlEncoderOutput",
    "expand_conv_in",
    "fold_frames",
    "freeze_for_stage2",
    "load_inflated",
    "parameter_counts",
    "control_unet_inputs",
    "repeat_features",
    "save_inflated",
    "unfold_frames",
]
