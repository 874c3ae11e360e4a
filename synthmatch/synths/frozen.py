"""Freeze any subset of a synth's parameters at a preset and expose the rest."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from synthmatch.synths.base import Synth


class FrozenSynth(Synth):
    """A view of ``synth`` with only ``free`` parameters exposed; the others are fixed.

    The wrapper has its own, smaller :class:`ParamTable` (the free parameters, in the inner
    table's order); ``render`` validates the free columns, fills in the frozen ones and renders
    with the inner synth without validating the full batch again.

    Args:
        synth: The backend to wrap.
        free: Names of the parameters left free.
        frozen: Normalised values for frozen parameters, by name; parameters not given stay at
            their default.

    Example:
        >>> easy = FrozenSynth(SubtractiveSynth(), free=["cutoff_hz", "osc1_shape"])
        >>> easy.render(torch.rand(4, 2)).shape
        torch.Size([4, 16000])
    """

    def __init__(self, synth: Synth, free: Iterable[str],
                 frozen: Mapping[str, float] | None = None):
        free = list(free)
        if not free:
            raise ValueError("FrozenSynth needs at least one free parameter")
        super().__init__(synth.params.subset(free), synth.probe, synth.device)
        self.inner = synth
        self.name = synth.name
        self.differentiable = synth.differentiable
        self.batched = synth.batched
        base = synth.params.defaults(1)[0]
        for key, value in (frozen or {}).items():
            j = synth.params.index(key)
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"frozen value for {key!r} must be normalised, got {value}")
            base[j] = float(value)
        self.base_params = base.to(synth.device)
        self.free_index = torch.tensor([synth.params.index(n) for n in self.params.names],
                                       device=synth.device)

    def expand(self, params: Tensor) -> Tensor:
        """``(B, P_free)`` -> the inner synth's full ``(B, P)`` batch."""
        full = self.base_params.to(params.device, params.dtype).expand(params.shape[0], -1)
        index = self.free_index.to(params.device).expand(params.shape[0], -1)
        return full.scatter(1, index, params)

    def _render(self, params: Tensor) -> Tensor:
        # The free columns are validated, and the frozen ones were checked when frozen.
        return self.inner._render_chunks(self.expand(params))

    def to(self, device: torch.device | str) -> FrozenSynth:
        self.inner.to(device)
        self.device = self.inner.device
        self.base_params = self.base_params.to(self.device)
        self.free_index = self.free_index.to(self.device)
        return self
