"""Gradient aggregators: a Jacobian ``[K, P]`` of task gradients -> one update direction ``[P]``.

Pure tensor maths (see :mod:`manytask.mtl.aggregators.base`); one module per method, each
naming its paper and equation:

=================  ====================================================  =========================
name               method                                                memory / randomness
=================  ====================================================  =========================
``Mean``, ``Sum``  equal weighting                                       --
``MGDA``           min-norm point (Sener & Koltun 2018); MGDA-UB via     --
                   :meth:`GramianAggregator.weights`
``PCGrad``         gradient surgery (Yu et al. 2020)                     generator
``GradDrop``       gradient sign dropout (Chen et al. 2020)              generator
``CAGrad``         conflict-averse (Liu et al. 2021)                     --
``GradVac``        gradient vaccine (Wang et al. 2021)                   state + generator
``IMTLG``          impartial MTL, gradient part (Liu et al. 2021)        --
``NashMTL``        bargaining game (Navon et al. 2022)                   state
``AlignedMTL``     independent component alignment (Senushkin 2023)      --
``UPGrad``         dual-cone projections (Quinton & Rey 2024)            --
=================  ====================================================  =========================
"""

from manytask.mtl.aggregators.aligned_mtl import AlignedMTL
from manytask.mtl.aggregators.base import (
    Aggregator,
    GramianAggregator,
    State,
    check_jacobian,
    gramian,
)
from manytask.mtl.aggregators.cagrad import CAGrad
from manytask.mtl.aggregators.graddrop import GradDrop
from manytask.mtl.aggregators.gradvac import GradVac
from manytask.mtl.aggregators.imtl_g import IMTLG
from manytask.mtl.aggregators.mean import Mean, Sum
from manytask.mtl.aggregators.mgda import MGDA, min_norm_weights
from manytask.mtl.aggregators.nash_mtl import NashMTL
from manytask.mtl.aggregators.pcgrad import PCGrad
from manytask.mtl.aggregators.upgrad import UPGrad, dual_cone_weights

__all__ = [
    "IMTLG",
    "MGDA",
    "Aggregator",
    "AlignedMTL",
    "CAGrad",
    "GradDrop",
    "GradVac",
    "GramianAggregator",
    "Mean",
    "NashMTL",
    "PCGrad",
    "State",
    "Sum",
    "UPGrad",
    "check_jacobian",
    "dual_cone_weights",
    "gramian",
    "min_norm_weights",
]
