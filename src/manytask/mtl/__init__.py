"""Multi-task training methods: how per-task losses become one update.

:mod:`manytask.mtl.base` defines the seam (:class:`MTLMethod`, its state and the step
information); each method is one module, found by name in
:data:`manytask.registry.MTL_METHODS`:

- ``fixed`` (:class:`FixedWeights`): ``sum_i w_i L_i`` with constant weights;
- ``minmax`` (:class:`MinMax`): ``max_i L_i`` or its log-sum-exp smoothing.
"""

from manytask.mtl.base import (
    INJECTED,
    LossWeighting,
    MethodState,
    MTLMethod,
    SharedModel,
    State,
    StepInfo,
    check_losses,
)
from manytask.mtl.fixed import FixedWeights
from manytask.mtl.minmax import MinMax, minmax_objective

__all__ = [
    "INJECTED",
    "FixedWeights",
    "LossWeighting",
    "MTLMethod",
    "MethodState",
    "MinMax",
    "SharedModel",
    "State",
    "StepInfo",
    "check_losses",
    "minmax_objective",
]
