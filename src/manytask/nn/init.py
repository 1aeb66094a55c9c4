"""Seeded parameter initialisation that leaves every global RNG alone.

PyTorch modules initialise themselves from the global RNG when built. :func:`init_parameters`
re-draws every parameter from a private ``torch.Generator`` with the same distributions as
PyTorch's defaults, so two modules built with the same seed are identical and nothing else's
randomness moves (no global generator, CPU or CUDA, is read, seeded or advanced).

Rules, by layer type:

- ``Linear``, ``Conv1d/2d/3d``, ``ConvTranspose1d/2d/3d``: Kaiming-uniform weights with
  ``a = sqrt(5)``, biases ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``;
- batch, layer, group and instance norms: weights 1, biases 0, running statistics reset;
- ``Embedding``: ``N(0, 1)`` (the padding row zero);
- ``RNN``, ``LSTM``, ``GRU`` and their cells: every parameter ``U(-1/sqrt(H), 1/sqrt(H))``;
- ``MultiheadAttention``: Xavier-uniform input projections, zero projection biases,
  Xavier-normal ``bias_k``/``bias_v`` (its output projection is a ``Linear``);
- ``PReLU``: 0.25.

Any other module that owns parameters must define ``reset_parameters(self, generator)``
drawing them from ``generator``; it is called after the rules above have run on its
sub-modules, so it may also override them (e.g. a zero-initialised output layer). A module
that owns parameters with neither a rule nor such a method is an error that names it.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import math
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["derived_seed", "global_rng_untouched", "init_parameters"]

_NORMS = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
)
_CONVS = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


def _takes_generator(module: nn.Module) -> bool:
    reset = getattr(module, "reset_parameters", None)
    if not callable(reset):
        return False
    try:
        return "generator" in inspect.signature(reset).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


def _init_known(m: nn.Module, g: torch.Generator) -> bool:
    """Apply the built-in rule for ``m``; False if there is none."""
    if isinstance(m, _CONVS):
        nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=g)
        if m.bias is not None:
            fan_in, _ = nn.init._calculate_fan_in_and_fan_out(m.weight)
            if isinstance(m, nn.modules.conv._ConvTransposeNd):
                fan_in = m.weight.shape[0] * m.weight[0][0].numel()
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            nn.init.uniform_(m.bias, -bound, bound, generator=g)
    elif isinstance(m, _NORMS):
        if getattr(m, "weight", None) is not None:
            nn.init.ones_(m.weight)
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
            m.reset_running_stats()
    elif isinstance(m, nn.Embedding):
        nn.init.normal_(m.weight, generator=g)
        if m.padding_idx is not None:
            m.weight[m.padding_idx].zero_()
    elif isinstance(m, nn.RNNBase | nn.modules.rnn.RNNCellBase):
        bound = 1.0 / math.sqrt(m.hidden_size) if m.hidden_size > 0 else 0.0
        for p in m.parameters(recurse=False):
            nn.init.uniform_(p, -bound, bound, generator=g)
    elif isinstance(m, nn.MultiheadAttention):
        for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
            w = getattr(m, name, None)
            if w is not None:
                nn.init.xavier_uniform_(w, generator=g)
        if m.in_proj_bias is not None:
            nn.init.zeros_(m.in_proj_bias)
        for name in ("bias_k", "bias_v"):
            b = getattr(m, name, None)
            if b is not None:
                nn.init.xavier_normal_(b, generator=g)
    elif isinstance(m, nn.PReLU):
        nn.init.constant_(m.weight, 0.25)
    else:
        return False
    return True


def init_parameters(module: nn.Module, seed: int | torch.Generator) -> nn.Module:
    """Re-initialise every parameter of ``module`` in place from ``seed``; returns the module.

    Args:
        module: any module built from the layers listed above and from modules that define
            ``reset_parameters(self, generator)``.
        seed: an int, or a CPU ``torch.Generator`` to draw from (and advance).

    Raises:
        TypeError: a module owns parameters and has no rule here and no
            ``reset_parameters(generator)`` method (its name and type are given).

    Example:
        >>> a = init_parameters(nn.LSTM(4, 8), seed=0)
        >>> b = init_parameters(nn.LSTM(4, 8), seed=0)
        >>> all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
        True
    """
    g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    named = list(module.named_modules())
    covered: set[int] = set()
    with torch.no_grad():
        for _, m in named:  # built-in rules, parents before children
            if _init_known(m, g):
                covered.update(id(p) for p in m.parameters(recurse=False))
        for _, m in reversed(named):  # own rules after their sub-modules' defaults
            if _takes_generator(m):
                m.reset_parameters(generator=g)
                covered.update(id(p) for p in m.parameters(recurse=False))
                for child in m.children():
                    if isinstance(child, nn.ParameterList | nn.ParameterDict):
                        covered.update(id(p) for p in child.parameters())
    missing = [
        f"{name or '<root>'} ({type(m).__name__})"
        for name, m in named
        if any(id(p) not in covered for p in m.parameters(recurse=False))
    ]
    if missing:
        raise TypeError(
            "init_parameters: no seeded rule for the parameters of "
            f"{', '.join(missing)}. Give such a module a method "
            "`reset_parameters(self, generator)` that draws its own parameters from "
            "`generator` (see manytask.nn.init)."
        )
    return module


def derived_seed(*parts: object) -> int:
    """A 63-bit seed derived from ``parts`` (e.g. a run's seed, a stream, a step), stable
    across processes and machines (a hash of their text, not Python's salted ``hash``).

    Example:
        >>> derived_seed(0, "step", 5) == derived_seed(0, "step", 5) != derived_seed(0, "step", 6)
        True
    """
    text = "/".join(str(p) for p in parts)
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


@contextlib.contextmanager
def global_rng_untouched(
    seed: int | None = None, device: torch.device | None = None
) -> Iterator[None]:
    """Run a block without moving torch's global generators; optionally seeded inside.

    PyTorch's layer constructors draw their default initialisation from the global generator
    (``nn.Linear`` calls ``kaiming_uniform_``) even when :func:`init_parameters` redraws every
    parameter from a seed afterwards; inside this block those draws leave the caller's random
    state as it was. With ``seed``, the CPU generator (and ``device``'s, if it is a CUDA device)
    starts from it, so modules that draw from the global generators (``nn.Dropout``) get the
    same numbers on every run; other CUDA devices are left alone.

    Example:
        >>> state = torch.get_rng_state()
        >>> with global_rng_untouched():
        ...     net = init_parameters(nn.Linear(3, 2), seed=0)
        >>> with global_rng_untouched(seed=1):
        ...     a = torch.rand(2)
        >>> with global_rng_untouched(seed=1):
        ...     b = torch.rand(2)
        >>> torch.equal(a, b) and torch.equal(torch.get_rng_state(), state)
        True
    """
    devices = [device.index or 0] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.default_generator.manual_seed(seed)
            for index in devices:  # only this device: torch.manual_seed would seed them all
                with torch.cuda.device(index):
                    torch.cuda.manual_seed(seed)
        yield
