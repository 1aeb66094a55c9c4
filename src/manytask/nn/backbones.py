"""Backbones cut into stages, so that multi-task models can condition or share them per layer.

A multi-task model never copies a backbone by hand: it receives a *factory*, a callable that
builds a fresh backbone (``functools.partial(MLP, 10, hidden=(64, 64))``,
``lambda: Conv4(1, 64)``), calls it once per copy it needs (one per expert, column or task),
and cuts each copy into **stages** with :func:`stages_of`:

- a module with a ``stages()`` method (:class:`MLP`, :class:`~manytask.nn.Conv4`) is cut at
  the stages it lists; by contract ``module(x) == flatten(stage_n(...stage_1(x)))``;
- any other module is one stage.

:class:`Trunk` holds the stages and the per-example shape of every activation between them
(found once, by running one zero example in eval mode, so no running statistic moves). Stage
outputs keep features (channels) in dimension 1, so per-layer conditioning (FiLM gains and
biases, additive biases, cross-stitch mixing) acts on ``h[:, c, ...]`` for every layer type.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from manytask.nn.conv4 import Conv4

__all__ = [
    "BACKBONES",
    "MLP",
    "BackboneFactory",
    "Trunk",
    "backbone_factory",
    "stages_of",
    "widen_first_layer",
]

BackboneFactory = Callable[[], nn.Module]
Norm = Literal["none", "batch", "layer"]
_NORMS: tuple[str, ...] = get_args(Norm)


class MLP(nn.Module):
    """A multilayer perceptron ``[B, *shape] -> [B, hidden[-1]]`` (input flattened first).

    Each stage is ``Linear -> [norm] -> activation -> [dropout]``. With ``hidden=(40, 40)`` it is
    the network of MAML's sinusoid regression (Finn et al. 2017, section 5.1) without its head.

    Args:
        in_features: size of one flattened example (``prod(input_shape)``).
        hidden: widths of the hidden layers, one stage each.
        norm: ``"batch"`` (BatchNorm1d), ``"layer"`` (LayerNorm) or ``"none"``.
        dropout: dropout probability after each stage (``0`` for none).
        activation: ``"relu"`` or ``"tanh"``.

    Example:
        >>> mlp = MLP(12, hidden=(32, 16))
        >>> mlp(torch.zeros(5, 3, 4)).shape
        torch.Size([5, 16])
        >>> len(mlp.stages())
        2
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (64, 64),
        norm: Norm = "none",
        dropout: float = 0.0,
        activation: Literal["relu", "tanh"] = "relu",
    ) -> None:
        super().__init__()
        if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"MLP: in_features must be a positive int; got {in_features!r}")
        hidden = tuple(hidden)
        if not hidden or any(
            isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden
        ):
            raise ValueError(
                f"MLP: hidden must be a non-empty sequence of positive ints; got {hidden!r}"
            )
        if norm not in _NORMS:
            raise ValueError(f"MLP: norm must be one of {_NORMS}; got {norm!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"MLP: dropout must be in [0, 1); got {dropout!r}")
        if activation not in ("relu", "tanh"):
            raise ValueError(f"MLP: activation must be 'relu' or 'tanh'; got {activation!r}")
        self.activation = activation
        self.in_features = in_features
        self.hidden = hidden
        self.norm = norm
        self.dropout = float(dropout)
        layers = []
        width = in_features
        for i, h in enumerate(hidden):
            parts: list[nn.Module] = [nn.Flatten()] if i == 0 else []
            parts.append(nn.Linear(width, h))
            if norm == "batch":
                parts.append(nn.BatchNorm1d(h))
            elif norm == "layer":
                parts.append(nn.LayerNorm(h))
            parts.append(nn.ReLU() if activation == "relu" else nn.Tanh())
            if self.dropout > 0:
                parts.append(nn.Dropout(self.dropout))
            layers.append(nn.Sequential(*parts))
            width = h
        self.layers = nn.Sequential(*layers)

    @property
    def out_features(self) -> int:
        """Size of the output features."""
        return self.hidden[-1]

    def stages(self) -> list[nn.Module]:
        """The hidden layers, one stage each (the first one flattens its input)."""
        return list(self.layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, hidden={self.hidden}, norm={self.norm!r}, "
            f"dropout={self.dropout}, activation={self.activation!r}"
        )


def stages_of(module: nn.Module) -> list[nn.Module]:
    """The stages of a backbone: ``module.stages()`` if it has that method, else ``[module]``."""
    method = getattr(module, "stages", None)
    if callable(method):
        stages = list(method())
        if not stages or not all(isinstance(s, nn.Module) for s in stages):
            raise ValueError(
                f"{type(module).__name__}.stages() must return a non-empty list of modules; "
                f"got {stages!r}"
            )
        return stages
    return [module]


@torch.no_grad()
def _infer_shapes(stages: Sequence[nn.Module], input_shape: tuple[int, ...]) -> list[tuple]:
    """Per-example shapes ``[input, after stage 1, ..., after stage L]`` (one zero example,
    eval mode, so batch-norm statistics do not move)."""
    params = [p for s in stages for p in s.parameters()]
    ref = params[0] if params else torch.zeros(())
    modes = [(m, m.training) for s in stages for m in s.modules()]
    for s in stages:
        s.eval()
    try:
        h = torch.zeros((1, *input_shape), dtype=ref.dtype, device=ref.device)
        shapes = [tuple(input_shape)]
        for i, stage in enumerate(stages):
            try:
                h = stage(h)
            except Exception as e:  # name the stage, keep the original error
                raise ValueError(
                    f"backbone stage {i} ({type(stage).__name__}) failed on an input of "
                    f"per-example shape {tuple(h.shape[1:])}: {e}. Check input_shape and the "
                    "backbone arguments."
                ) from e
            if h.dim() < 2:
                raise ValueError(f"backbone stage {i} must return [B, C, ...]; got {h.shape}")
            shapes.append(tuple(h.shape[1:]))
    finally:
        for m, mode in modes:
            m.train(mode)
    return shapes


class Trunk(nn.Module):
    """A backbone as a list of stages with known activation shapes.

    Args:
        backbone: the module to cut (see :func:`stages_of`).
        input_shape: per-example input shape, e.g. ``(1, 28, 28)`` or ``(103,)``.

    Attributes:
        shapes: ``shapes[0]`` the input shape, ``shapes[l]`` the per-example shape after
            stage ``l`` (``l = 1..L``); channels are ``shapes[l][0]``.

    Example:
        >>> t = Trunk(Conv4(1, hidden=8), (1, 28, 28))
        >>> t.shapes
        [(1, 28, 28), (8, 14, 14), (8, 7, 7), (8, 3, 3), (8, 1, 1)]
        >>> t(torch.zeros(2, 1, 28, 28)).shape, t.out_features
        (torch.Size([2, 8]), 8)
    """

    def __init__(self, backbone: nn.Module, input_shape: Sequence[int]) -> None:
        super().__init__()
        self.input_shape = _check_shape(input_shape)
        self.stages = nn.ModuleList(stages_of(backbone))
        self.shapes = _infer_shapes(list(self.stages), self.input_shape)

    @property
    def depth(self) -> int:
        """Number of stages ``L``."""
        return len(self.stages)

    @property
    def out_features(self) -> int:
        """Size of the flattened output of the last stage."""
        return math.prod(self.shapes[-1])

    def channels(self, position: int) -> int:
        """Channels (dimension 1) of the activation at ``position`` (0 = the input)."""
        return self.shapes[position][0]

    def forward(self, x: Tensor) -> Tensor:
        for stage in self.stages:
            x = stage(x)
        return torch.flatten(x, 1)


def _check_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(
            f"input_shape must be a non-empty tuple of positive ints (per example, without the "
            f"batch dimension), e.g. (1, 28, 28); got {input_shape!r}"
        )
    return shape


def widen_first_layer(
    stage: nn.Module, extra_channels: int, input_shape: Sequence[int]
) -> nn.Module:
    """Let ``stage`` read ``extra_channels`` more input channels: ``stage(cat([h, z], 1))``.

    The first ``Linear``/``Conv`` of ``stage`` gets the new input columns: ``extra_channels``
    for a convolution, ``extra_channels * prod(spatial)`` for a ``Linear`` that reads a
    flattened ``[C, *spatial]`` input (``input_shape`` is the stage's per-example input).
    The new columns come last (where ``torch.cat([h, z], dim=1)`` puts them); the old
    columns keep their weights, the new ones are drawn like PyTorch's default for a layer of
    the new fan-in (and again by :func:`~manytask.nn.init_parameters`). Returns ``stage``
    itself, changed in place, or the new layer if ``stage`` is that layer.
    """
    for name, layer in stage.named_modules():
        if isinstance(layer, nn.Linear):
            extra_in = extra_channels * math.prod(tuple(input_shape)[1:])
            new: nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d = nn.Linear(
                layer.in_features + extra_in, layer.out_features, bias=layer.bias is not None
            )
        elif isinstance(layer, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            if layer.groups != 1:
                raise ValueError(
                    f"cannot concatenate a descriptor before a grouped convolution ({layer}); "
                    "condition at another position"
                )
            new = type(layer)(
                layer.in_channels + extra_channels,
                layer.out_channels,
                kernel_size=layer.kernel_size,  # type: ignore[arg-type]
                stride=layer.stride,  # type: ignore[arg-type]
                padding=layer.padding,  # type: ignore[arg-type]
                dilation=layer.dilation,  # type: ignore[arg-type]
                bias=layer.bias is not None,
                padding_mode=layer.padding_mode,
            )
        else:
            continue
        new.to(device=layer.weight.device, dtype=layer.weight.dtype)
        with torch.no_grad():
            old_in = layer.weight.shape[1]
            new.weight[:, :old_in].copy_(layer.weight)
            if layer.bias is not None:
                assert new.bias is not None
                new.bias.copy_(layer.bias)
        if name == "":
            return new
        parent = stage.get_submodule(name.rpartition(".")[0]) if "." in name else stage
        setattr(parent, name.rpartition(".")[2], new)
        return stage
    raise ValueError(
        f"cannot concatenate a descriptor to the input of {type(stage).__name__}: it has no "
        "Linear or Conv layer to widen; condition at another position"
    )


def _mlp(input_shape: tuple[int, ...], **args: Any) -> nn.Module:
    return MLP(math.prod(input_shape), **args)


def _conv4(input_shape: tuple[int, ...], **args: Any) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(
            f"backbone 'conv4' needs image inputs (C, H, W); got input_shape={input_shape}. "
            "Use backbone='mlp' for vectors."
        )
    return Conv4(input_shape[0], **args)


# name -> (builder from input_shape and args, the class whose signature checks the args, the
# arguments the builder fills in itself)
BACKBONES: dict[str, tuple[Callable[..., nn.Module], type[nn.Module], frozenset[str]]] = {
    "mlp": (_mlp, MLP, frozenset({"in_features"})),
    "conv4": (_conv4, Conv4, frozenset({"in_channels"})),
}


def backbone_factory(
    name: str, input_shape: Sequence[int], args: Mapping[str, Any] | None = None
) -> BackboneFactory:
    """A factory for the registered backbone ``name`` on inputs of ``input_shape``.

    Args:
        name: a key of :data:`BACKBONES` (``"mlp"``, ``"conv4"``).
        input_shape: per-example input shape.
        args: constructor arguments of the backbone, checked now against its signature.

    Example:
        >>> make = backbone_factory("mlp", (10,), {"hidden": (8,)})
        >>> make()(torch.zeros(2, 10)).shape
        torch.Size([2, 8])
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    build, cls, filled = BACKBONES[name]
    shape = _check_shape(input_shape)
    kwargs = dict(args or {})
    check_arguments(f"backbone {name!r}", cls, kwargs, filled)
    build(shape, **kwargs)  # fail now, not at the first copy inside a model

    def factory() -> nn.Module:
        return build(shape, **kwargs)

    return factory


def check_arguments(
    what: str, fn: Callable[..., Any], kwargs: Mapping[str, Any], filled: frozenset[str]
) -> None:
    """Raise a clear error if ``kwargs`` has a key that ``fn`` does not take (or ``filled``)."""
    params = inspect.signature(fn).parameters
    valid = sorted(
        n
        for n, p in params.items()
        if n not in filled and n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        raise ValueError(f"{what}: unknown argument(s) {unknown}; valid arguments: {valid}")
