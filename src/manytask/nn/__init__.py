"""Neural network building blocks: backbones (and, later, task conditioning)."""

from manytask.nn.conv4 import Conv4, conv_block
from manytask.nn.init import init_parameters
from manytask.nn.mlp import MLP, Flatten, output_features

__all__ = ["MLP", "Conv4", "Flatten", "conv_block", "init_parameters", "output_features"]
