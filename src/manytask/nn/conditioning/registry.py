"""Conditioning models by name, and the builder a recipe calls.

``build_conditioning("film", tasks, input_shape, backbone="conv4", backbone_args={...},
descriptor="text", at=(2, 4))`` turns typed arguments into a model: the tasks give every
output size and (for descriptor-conditioned models) the descriptor table; the backbone name
and arguments give the factory the model calls for every copy it needs. Unknown names and
arguments fail at once with the valid ones listed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from manytask.nn.backbones import backbone_factory, check_arguments
from manytask.nn.conditioning.additive import AdditiveConditioning
from manytask.nn.conditioning.base import MultiTaskModel
from manytask.nn.conditioning.concat import ConcatConditioning, FullSharing
from manytask.nn.conditioning.cross_stitch import CrossStitch
from manytask.nn.conditioning.film import FiLM
from manytask.nn.conditioning.gating import MultiplicativeGating
from manytask.nn.conditioning.mmoe import MMoE
from manytask.nn.conditioning.multi_head import MultiHead
from manytask.nn.conditioning.multiplicative import MultiplicativeConditioning
from manytask.nn.conditioning.ple import CGC, PLE
from manytask.nn.conditioning.soft_ordering import SoftOrdering
from manytask.nn.descriptors import DescriptorKind, task_descriptors
from manytask.nn.tasks import TaskLike
from manytask.nn.text_encoders import build_text_encoder

__all__ = ["CONDITIONING", "build_conditioning"]

#: name -> class, from most shared to least shared
CONDITIONING: dict[str, type[MultiTaskModel]] = {
    "full_sharing": FullSharing,
    "concat": ConcatConditioning,
    "additive": AdditiveConditioning,
    "multiplicative": MultiplicativeConditioning,
    "film": FiLM,
    "multi_head": MultiHead,
    "soft_ordering": SoftOrdering,
    "mmoe": MMoE,
    "cgc": CGC,
    "ple": PLE,
    "cross_stitch": CrossStitch,
    "gating": MultiplicativeGating,
}

_FILLED = frozenset({"backbone", "input_shape", "num_outputs", "descriptors"})


def build_conditioning(
    name: str,
    tasks: Sequence[TaskLike],
    input_shape: Sequence[int],
    *,
    backbone: str = "mlp",
    backbone_args: Mapping[str, Any] | None = None,
    descriptor: DescriptorKind | Sequence[DescriptorKind] = "one_hot",
    text_encoder: str = "hashed_ngrams",
    text_encoder_args: Mapping[str, Any] | None = None,
    **args: Any,
) -> MultiTaskModel:
    """Build the conditioning model ``name`` for ``tasks``.

    Args:
        name: a key of :data:`CONDITIONING`.
        tasks: the ``K`` task specs (``num_outputs``; ``description``/``metadata`` for those
            descriptors).
        input_shape: per-example input shape.
        backbone: a registered backbone (``"mlp"``, ``"conv4"``).
        backbone_args: the backbone's constructor arguments.
        descriptor: ``z_i`` for descriptor-conditioned models: ``"one_hot"``,
            ``"metadata"``, ``"text"`` or several (concatenated). Models that pick their
            task-specific parts by index take only ``"one_hot"``.
        text_encoder: a registered text encoder for ``"text"``.
        text_encoder_args: its constructor arguments.
        **args: the model's own typed arguments (checked against its constructor).

    Example:
        >>> import torch
        >>> from types import SimpleNamespace as T
        >>> tasks = [T(name=f"t{i}", num_outputs=n) for i, n in enumerate((3, 5))]
        >>> model = build_conditioning("mmoe", tasks, (8,), backbone_args={"hidden": (16,)},
        ...                            num_experts=2)
        >>> model(torch.zeros(4, 8), 1).shape
        torch.Size([4, 5])
    """
    if name not in CONDITIONING:
        raise ValueError(f"unknown conditioning model {name!r}; choose one of {list(CONDITIONING)}")
    cls = CONDITIONING[name]
    if not tasks:
        raise ValueError("build_conditioning needs at least one task")
    check_arguments(f"conditioning model {name!r}", cls.__init__, args, _FILLED)
    factory = backbone_factory(backbone, input_shape, backbone_args)
    num_outputs = [t.num_outputs for t in tasks]
    if "descriptors" in inspect.signature(cls.__init__).parameters:
        encoder = None
        kinds = [descriptor] if isinstance(descriptor, str) else list(descriptor)
        if "text" in kinds:
            encoder = build_text_encoder(text_encoder, **dict(text_encoder_args or {}))
        args["descriptors"] = task_descriptors(tasks, descriptor, text_encoder=encoder)
    elif descriptor != "one_hot":
        raise ValueError(
            f"conditioning model {name!r} picks its task-specific parts by task index and reads "
            f"no descriptor; use descriptor='one_hot' (got {descriptor!r}), or a "
            "descriptor-conditioned model (concat, additive, multiplicative, film, full_sharing)"
        )
    build: Callable[..., MultiTaskModel] = cls
    return build(factory, tuple(input_shape), num_outputs, **args)
