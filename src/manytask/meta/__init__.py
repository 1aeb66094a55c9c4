"""Meta-learners behind one interface: ``learner(support_x, support_y, query_x) -> logits``."""

from manytask.meta.base import MetaLearner, check_task_batch
from manytask.meta.lrua import LRUAController
from manytask.meta.mann import MANN
from manytask.meta.protonet import ProtoNet, prototypes, squared_distances

__all__ = [
    "MANN",
    "LRUAController",
    "MetaLearner",
    "ProtoNet",
    "check_task_batch",
    "prototypes",
    "squared_distances",
]
