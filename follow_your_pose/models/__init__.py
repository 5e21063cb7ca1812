"""Follow-Your-Pose networks on stock diffusers parts: the control (pose) encoder and the inflated UNet.

The names below load their module (and diffusers) on first use, so importing a light module of this package
(``follow_your_pose.models.release``) does not import diffusers.
"""

from importlib import import_module

_EXPORTS = {
    "control_encoder": (
        "ControlEncoder", "ControlEncoderOutput", "control_unet_inputs", "expand_conv_in", "fold_frames", "repeat_features",
        "unfold_frames",
    ),
    "inflated_unet": (
        "STAGE2_TRAINABLE", "InflatedUNet", "InflationConfig", "freeze_for_stage2", "load_inflated", "parameter_counts",
        "save_inflated",
    ),
}  # fmt: skip
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
