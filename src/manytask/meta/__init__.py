"""Meta-learners behind one interface: ``learner(support_x, support_y, query_x) -> logits``."""

from manytask.meta.base import MetaLearner, check_task_batch
from manytask.meta.cnp import CNP
from manytask.meta.protonet import ProtoNet, prototypes, squared_distances
from manytask.meta.snail import SNAIL

__all__ = [
    "CNP",
    "SNAIL",
    "MetaLearner",
    "ProtoNet",
    "check_task_batch",
    "prototypes",
    "squared_distances",
]
