"""Video metrics behind one registry: ``clip``, ``frame_consistency``, ``pose_ap`` and more.

Each metric lives in its own module and registers itself with
:func:`~evaluation.metrics.registry.register`; see :mod:`evaluation.metrics.base`
for the update/compute contract.
"""

from evaluation.metrics.base import Metric, MetricContext
from evaluation.metrics.registry import METRICS, build_metrics, check_metric_names, metric_names

__all__ = ["METRICS", "Metric", "MetricContext", "build_metrics", "check_metric_names", "metric_names"]
