"""Neural network building blocks: backbones, task descriptors, conditioning and sharing."""

from manytask.nn.backbones import BACKBONES, MLP, Trunk, backbone_factory, stages_of
from manytask.nn.conditioning import (
    CGC,
    CONDITIONING,
    PLE,
    AdditiveConditioning,
    ConcatConditioning,
    CrossStitch,
    FiLM,
    FullSharing,
    MMoE,
    MultiHead,
    MultiplicativeConditioning,
    MultiplicativeGating,
    MultiTaskModel,
    SoftOrdering,
    build_conditioning,
    mask_logits,
)
from manytask.nn.conv4 import Conv4, conv_block
from manytask.nn.descriptors import (
    metadata_descriptors,
    one_hot_descriptors,
    task_descriptors,
    text_descriptors,
)
from manytask.nn.init import derived_seed, global_rng_untouched, init_parameters
from manytask.nn.mlp import Flatten, output_features, output_shape
from manytask.nn.tasks import TaskLike
from manytask.nn.text_encoders import (
    TEXT_ENCODERS,
    HashedNgramEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    build_text_encoder,
)

__all__ = [
    "BACKBONES",
    "CGC",
    "CONDITIONING",
    "MLP",
    "PLE",
    "TEXT_ENCODERS",
    "AdditiveConditioning",
    "ConcatConditioning",
    "Conv4",
    "CrossStitch",
    "FiLM",
    "Flatten",
    "FullSharing",
    "HashedNgramEncoder",
    "MMoE",
    "MultiHead",
    "MultiTaskModel",
    "MultiplicativeConditioning",
    "MultiplicativeGating",
    "SentenceTransformerEncoder",
    "SoftOrdering",
    "TaskLike",
    "TextEncoder",
    "Trunk",
    "backbone_factory",
    "build_conditioning",
    "build_text_encoder",
    "conv_block",
    "derived_seed",
    "global_rng_untouched",
    "init_parameters",
    "mask_logits",
    "metadata_descriptors",
    "one_hot_descriptors",
    "output_features",
    "output_shape",
    "stages_of",
    "task_descriptors",
    "text_descriptors",
]
