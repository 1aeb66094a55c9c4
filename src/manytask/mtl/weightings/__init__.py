"""Loss weightings: per-task weights ``w [K]`` for ``sum_i w_i L_i``, with explicit state.

Each is a :class:`~manytask.mtl.base.LossWeighting` (or, for GradNorm, a method that also
measures gradient norms): pure tensor maths on the detached losses and the state, one backward
pass per step. Fixed weights are the run family's ``fixed`` method
(:class:`manytask.mtl.fixed.FixedWeights`) and the min-max objective its ``minmax``.

============================  ===============================  ==========================
class                         paper                            state
============================  ===============================  ==========================
:class:`UncertaintyWeighting` Kendall et al. 2018              log-variances + Adam
:class:`GradNorm`             Chen et al. 2018                 weights + Adam, L(0)
:class:`DWA`                  Liu et al. 2019                  loss averages per period
:class:`RLW`                  Lin et al. 2022                  generator
:class:`FAMO`                 Liu et al. 2023                  logits + Adam, losses
============================  ===============================  ==========================
"""

from manytask.mtl.weightings.dwa import DWA
from manytask.mtl.weightings.famo import FAMO
from manytask.mtl.weightings.gradnorm import GradNorm, gradnorm_gradient
from manytask.mtl.weightings.rlw import RLW
from manytask.mtl.weightings.uncertainty import UncertaintyWeighting

__all__ = ["DWA", "FAMO", "RLW", "GradNorm", "UncertaintyWeighting", "gradnorm_gradient"]
