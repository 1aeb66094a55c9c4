"""FiLM: feature-wise linear modulation (Perez, Strub, de Vries, Dumoulin & Courville, AAAI 2018).

A FiLM generator maps the conditioning input (here the task descriptor ``z_i``) to a gain and
a bias per channel, and each FiLM-ed layer applies them feature-wise (eq. 1-3 of the paper):
``gamma_{p} = f_p(z_i)``, ``beta_{p} = h_p(z_i)``,
``FiLM(F_{p,c} | gamma_{p,c}, beta_{p,c}) = gamma_{p,c} F_{p,c} + beta_{p,c}``, with the same
``(gamma, beta)`` at every spatial position of channel ``c``. Here ``f_p, h_p`` are one linear
map ``[gamma_delta ; beta] = A_p z_i + b_p`` per chosen position, and
``gamma = 1 + gamma_delta`` so that an untrained generator is close to the identity (our
choice). The paper FiLMs the batch-normalised pre-activation inside residual blocks; on our
generic stages it acts on each chosen stage's output.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from manytask.nn.backbones import BackboneFactory
from manytask.nn.conditioning.base import (
    DescriptorConditioned,
    HeadMode,
    check_positions,
    per_channel,
)

__all__ = ["FiLM"]


class FiLM(DescriptorConditioned):
    """Feature-wise gains and biases generated from ``z_i`` at chosen layers.

    Args:
        backbone: a factory building the backbone.
        input_shape: per-example input shape.
        num_outputs: output size of every task.
        descriptors: ``[K, D]`` task descriptors (default one-hot).
        at: FiLM-ed positions (``0`` = input, ``l`` = after stage ``l``); default every stage
            output.
        heads: ``"shared"`` or ``"per_task"`` output layers.
        head_hidden: hidden widths of the head tower(s).

    Example:
        >>> import torch
        >>> from manytask.nn import Conv4
        >>> model = FiLM(lambda: Conv4(1, hidden=8), (1, 28, 28), (5, 3), at=(2, 4))
        >>> model(torch.zeros(2, 1, 28, 28), 0).shape
        torch.Size([2, 5])
        >>> gamma, beta = model.film(2, model.descriptors)
        >>> gamma.shape, beta.shape
        (torch.Size([2, 8]), torch.Size([2, 8]))
    """

    def __init__(
        self,
        backbone: BackboneFactory,
        input_shape: Sequence[int],
        num_outputs: Sequence[int],
        *,
        descriptors: Tensor | None = None,
        at: Sequence[int] | None = None,
        heads: HeadMode = "shared",
        head_hidden: Sequence[int] = (),
    ) -> None:
        super().__init__(
            backbone,
            input_shape,
            num_outputs,
            descriptors=descriptors,
            heads=heads,
            head_hidden=head_hidden,
        )
        self.at = check_positions(type(self).__name__, "at", at, self.trunk.depth)
        self.generators = nn.ModuleDict(
            {str(p): nn.Linear(self.descriptor_dim, 2 * self.trunk.channels(p)) for p in self.at}
        )
        self._build_heads(self.trunk.out_features)

    def film(self, position: int, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(gamma, beta)``, each ``[B, C_p]``, for descriptors ``z [B, D]`` at ``position``."""
        delta_gamma, beta = self.generators[str(position)](z).chunk(2, dim=1)
        return 1.0 + delta_gamma, beta

    def _condition(self, position: int, h: Tensor, z: Tensor) -> Tensor:
        if position not in self.at:
            return h
        gamma, beta = self.film(position, z)
        return per_channel(gamma, h) * h + per_channel(beta, h)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, at={self.at}"
