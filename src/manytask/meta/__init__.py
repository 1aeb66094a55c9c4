"""Meta-learners behind one interface: ``learner(support_x, support_y, query_x) -> logits``."""

from manytask.meta.base import MetaLearner, check_task_batch
from manytask.meta.cnp import CNP
from manytask.meta.lrua import LRUAController
from manytask.meta.mann import MANN
from manytask.meta.matching import MatchingNet
from manytask.meta.protonet import ProtoNet, prototypes, squared_distances
from manytask.meta.relation import RelationNet
from manytask.meta.snail import SNAIL

__all__ = [
    "CNP",
    "MANN",
    "SNAIL",
    "LRUAController",
    "MatchingNet",
    "MetaLearner",
    "ProtoNet",
    "RelationNet",
    "check_task_batch",
    "prototypes",
    "squared_distances",
]
