"""Meta-learners behind one interface: ``learner(support_x, support_y, query_x) -> logits``."""

from manytask.meta.anil import ANIL
from manytask.meta.base import MetaLearner, check_task_batch
from manytask.meta.cnp import CNP
from manytask.meta.functional import (
    GroupedNet,
    LoopNet,
    PerTaskNet,
    adapt,
    per_task,
    task_loss,
)
from manytask.meta.inner import InnerLoopLearner
from manytask.meta.lrua import LRUAController
from manytask.meta.maml import MAML
from manytask.meta.mann import MANN
from manytask.meta.matching import MatchingNet
from manytask.meta.metasgd import MetaSGD
from manytask.meta.protonet import ProtoNet, prototypes, squared_distances
from manytask.meta.relation import RelationNet
from manytask.meta.reptile import Reptile
from manytask.meta.snail import SNAIL

__all__ = [
    "ANIL",
    "CNP",
    "MAML",
    "MANN",
    "SNAIL",
    "GroupedNet",
    "InnerLoopLearner",
    "LRUAController",
    "LoopNet",
    "MatchingNet",
    "MetaLearner",
    "MetaSGD",
    "PerTaskNet",
    "ProtoNet",
    "RelationNet",
    "Reptile",
    "adapt",
    "check_task_batch",
    "per_task",
    "prototypes",
    "squared_distances",
    "task_loss",
]
