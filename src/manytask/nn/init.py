"""Seeded parameter initialisation that leaves the global RNG alone.

PyTorch modules initialise themselves from the global RNG when built. :func:`init_parameters`
re-draws every parameter from a private ``torch.Generator`` with the same distributions as
PyTorch's defaults (Kaiming-uniform weights with ``a = sqrt(5)`` and ``U(-1/sqrt(fan_in),
1/sqrt(fan_in))`` biases for convolutions and linear layers; ones and zeros for norms), so
two learners built with the same seed are identical and nothing else's randomness moves.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["init_parameters"]

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm)


def init_parameters(module: nn.Module, seed: int | torch.Generator) -> nn.Module:
    """Re-initialise ``module`` in place from ``seed``; returns the module.

    Layers without a known rule that own parameters are re-initialised with their own
    ``reset_parameters`` under a forked global RNG (saved and restored around the call).
    """
    g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Linear):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=g)
                if m.bias is not None:
                    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(m.weight)
                    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                    nn.init.uniform_(m.bias, -bound, bound, generator=g)
            elif isinstance(m, _NORMS):
                if getattr(m, "weight", None) is not None:
                    nn.init.ones_(m.weight)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.reset_running_stats()
            elif any(True for _ in m.parameters(recurse=False)) and hasattr(m, "reset_parameters"):
                sub_seed = int(torch.randint(0, 2**62, (1,), generator=g))
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(sub_seed)
                    m.reset_parameters()  # type: ignore[operator]
    return module
