"""Neural network building blocks: backbones (and, later, task conditioning)."""

from manytask.nn.conv4 import Conv4, conv_block
from manytask.nn.init import init_parameters

__all__ = ["Conv4", "conv_block", "init_parameters"]
