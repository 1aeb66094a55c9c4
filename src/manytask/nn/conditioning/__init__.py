"""Conditioning and sharing: every multi-task model behind ``model(x, task)``.

Choosing how to condition on the task descriptor ``z_i`` is choosing what to share (CS330).
See ``docs/conditioning.md`` for the table of models and what each shares.
"""

from manytask.nn.conditioning.additive import AdditiveConditioning
from manytask.nn.conditioning.base import (
    DescriptorConditioned,
    HeadMode,
    MultiTaskModel,
    TaskHeads,
    mask_logits,
)
from manytask.nn.conditioning.concat import ConcatConditioning, FullSharing
from manytask.nn.conditioning.cross_stitch import CrossStitch, CrossStitchUnit
from manytask.nn.conditioning.film import FiLM
from manytask.nn.conditioning.gating import MultiplicativeGating
from manytask.nn.conditioning.mmoe import MMoE
from manytask.nn.conditioning.multi_head import MultiHead
from manytask.nn.conditioning.multiplicative import MultiplicativeConditioning
from manytask.nn.conditioning.ple import CGC, PLE, ExtractionLevel
from manytask.nn.conditioning.registry import CONDITIONING, build_conditioning
from manytask.nn.conditioning.soft_ordering import OrderScalars, SoftOrdering

__all__ = [
    "CGC",
    "CONDITIONING",
    "PLE",
    "AdditiveConditioning",
    "ConcatConditioning",
    "CrossStitch",
    "CrossStitchUnit",
    "DescriptorConditioned",
    "ExtractionLevel",
    "FiLM",
    "FullSharing",
    "HeadMode",
    "MMoE",
    "MultiHead",
    "MultiTaskModel",
    "MultiplicativeConditioning",
    "MultiplicativeGating",
    "OrderScalars",
    "SoftOrdering",
    "TaskHeads",
    "build_conditioning",
    "mask_logits",
]
