"""Diagnostics of negative transfer: gradient conflict, task affinity and groupings, the
multi-task vs single-task report, and the two-task toy problem (none of the incumbents ships
them).
"""

from manytask.mtl.diagnostics._plot import png
from manytask.mtl.diagnostics.affinity import (
    AffinityProbe,
    Grouping,
    TaskAffinity,
    affinity_heatmap,
    group_tasks,
    grouping_score,
    lookahead_affinity,
)
from manytask.mtl.diagnostics.conflict import (
    conflict_curve,
    conflict_heatmap,
    gradient_cosines,
    mean_cosines,
)
from manytask.mtl.diagnostics.toy import (
    TOY_STARTS,
    pareto_points,
    toy_figure,
    toy_losses,
    trajectory,
)
from manytask.mtl.diagnostics.transfer import TransferRow, negative_transfer, transfer_table

__all__ = [
    "TOY_STARTS",
    "AffinityProbe",
    "Grouping",
    "TaskAffinity",
    "TransferRow",
    "affinity_heatmap",
    "conflict_curve",
    "conflict_heatmap",
    "gradient_cosines",
    "group_tasks",
    "grouping_score",
    "lookahead_affinity",
    "mean_cosines",
    "negative_transfer",
    "pareto_points",
    "png",
    "toy_figure",
    "toy_losses",
    "trajectory",
    "transfer_table",
]
