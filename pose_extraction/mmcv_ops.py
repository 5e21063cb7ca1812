"""A stand-in for mmcv's compiled ops when only ``mmcv-lite`` is installed.

mmdet and mmpose import ``mmcv.ops``, which loads the compiled extension
``mmcv._ext`` and checks that every op it names is there. ``mmcv-lite`` ships
no extension, so both libraries fail at import. The person detector and the
top-down pose model of this project need only one compiled op at inference
time: ``nms`` (through ``mmcv.ops.batched_nms``). :func:`ensure_mmcv_ops`
registers, only when no real ``mmcv._ext`` exists, a module whose ``nms``
runs :func:`torchvision.ops.nms` and whose every other op raises
:class:`NotImplementedError` naming the op and telling how to get it.

A user with the full mmcv (compiled ops, CUDA on a GPU cluster) gets the real
extension untouched: the stand-in is registered only when Python cannot find
``mmcv._ext`` at all. A real extension that is present but fails to load
(built against another torch, say) raises its own error rather than being
hidden behind the stand-in.

Call :func:`ensure_mmcv_ops` in every process that imports mmdet or mmpose
(each Ray worker too) before that import; the MMPose estimator does so in its
``__init__``. Nothing happens when this module is imported.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import logging
import sys
import threading
import types

logger = logging.getLogger(__name__)

STANDIN_MARK = "__follow_your_pose_standin__"
"""Attribute set on the stand-in module (and only on it)."""

_lock = threading.Lock()


def nms(bboxes, scores, iou_threshold: float, offset: int = 0):
    """mmcv's ``_ext.nms`` contract: indices of kept boxes, highest score first.

    ``offset=1`` is mmcv's legacy pixel convention (a box spans ``x2 - x1 + 1``
    pixels); adding it to ``x2, y2`` gives the same areas and overlaps.
    """
    import torchvision

    if offset:
        bboxes = bboxes.clone()
        bboxes[:, 2:4] += offset
    return torchvision.ops.nms(bboxes.float(), scores.float(), float(iou_threshold))


def _missing_op(name: str):
    def missing(*args, **kwargs):
        raise NotImplementedError(
            f"mmcv op {name!r} is not available: only mmcv-lite is installed, which has no compiled ops, and "
            f"this project provides only 'nms' (via torchvision). Install the full mmcv built for your torch "
            f"(and CUDA) to use {name!r}, e.g. `pip install mmcv==2.1.0` built from source with MMCV_WITH_OPS=1."
        )

    missing.__name__ = name
    missing.__qualname__ = name
    return missing


def _module_getattr(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    return _missing_op(name)


def _standin_module() -> types.ModuleType:
    module = types.ModuleType("mmcv._ext", "Stand-in for mmcv's compiled ops: nms via torchvision, the rest raise.")
    # A spec with no loader: importlib/pkgutil look-ups work and report that no real (loadable) extension exists.
    module.__spec__ = importlib.machinery.ModuleSpec("mmcv._ext", None)
    module.nms = nms
    module.__getattr__ = _module_getattr  # any other op name resolves to a raising function
    setattr(module, STANDIN_MARK, True)
    return module


def is_standin(module: types.ModuleType | None = None) -> bool:
    """Whether ``module`` (default: the loaded ``mmcv._ext``) is this stand-in."""
    module = module if module is not None else sys.modules.get("mmcv._ext")
    return module is not None and module.__dict__.get(STANDIN_MARK, False) is True


def ensure_mmcv_ops() -> types.ModuleType:
    """Make ``import mmcv._ext`` work; returns the real extension, or the stand-in when none is installed.

    Idempotent and thread-safe. Raises :class:`ImportError` when mmcv itself is missing.
    """
    with _lock:
        loaded = sys.modules.get("mmcv._ext")
        if loaded is not None:
            return loaded
        import mmcv

        if importlib.util.find_spec("mmcv._ext") is not None:
            return importlib.import_module("mmcv._ext")  # the real compiled ops; errors surface as they are
        module = _standin_module()
        sys.modules["mmcv._ext"] = module
        mmcv._ext = module
        logger.warning(
            "mmcv has no compiled ops (mmcv-lite): using a stand-in whose nms runs torchvision.ops.nms; "
            "other mmcv ops raise NotImplementedError. Install the full mmcv for them."
        )
        return module
