"""Meta-learners behind one interface: ``learner(support_x, support_y, query_x) -> logits``."""

from manytask.meta.anil import ANIL
from manytask.meta.base import MetaLearner, check_task_batch
from manytask.meta.functional import GroupedNet, LoopNet, adapt, per_task, task_loss
from manytask.meta.inner import InnerLoopLearner
from manytask.meta.maml import MAML
from manytask.meta.metasgd import MetaSGD
from manytask.meta.protonet import ProtoNet, prototypes, squared_distances
from manytask.meta.reptile import Reptile

__all__ = [
    "ANIL",
    "MAML",
    "GroupedNet",
    "InnerLoopLearner",
    "LoopNet",
    "MetaLearner",
    "MetaSGD",
    "ProtoNet",
    "Reptile",
    "adapt",
    "check_task_batch",
    "per_task",
    "prototypes",
    "squared_distances",
    "task_loss",
]
