"""Evaluation: RITM's simulated user, NoC/NoF/mIoU/NoIC metrics, the protocol loop, reports.

The ``gpcis evaluate`` command lives in :mod:`gpcis.evaluation.cli` (not imported here).
"""

from gpcis.evaluation.clicker import SimulatedUser, error_distance_maps, next_click
from gpcis.evaluation.metrics import aggregate, count_invalid_clicks, iou, iou_at, is_failure, miou_curve, noc
from gpcis.evaluation.protocol import EvalConfig, ObjectRecord, evaluate_dataset, evaluate_object, summarize
from gpcis.evaluation.report import markdown_table, plot_miou_curves, write_metrics_json, write_records_csv

__all__ = [
    "SimulatedUser",
    "error_distance_maps",
    "next_click",
    "aggregate",
    "count_invalid_clicks",
    "iou",
    "iou_at",
    "is_failure",
    "miou_curve",
    "noc",
    "EvalConfig",
    "ObjectRecord",
    "evaluate_dataset",
    "evaluate_object",
    "summarize",
    "markdown_table",
    "plot_miou_curves",
    "write_metrics_json",
    "write_records_csv",
]
