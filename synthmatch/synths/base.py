"""The synth interface: normalised ``(B, P)`` parameter batches in, ``(B, T)`` audio out."""

from __future__ import annotations

import abc
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from synthmatch.devices import chunk_size, free_memory, resolve_device
from synthmatch.synths.params import ParamTable


@dataclass(frozen=True)
class ProbeNote:
    """The note every render plays: explicit configuration, never hidden in a backend.

    Args:
        midi_pitch: MIDI note number (60 = middle C, 261.6 Hz).
        velocity: MIDI velocity, 1-127.
        note_duration_s: Time from note-on to note-off (the release starts here).
        render_duration_s: Length of the rendered audio; must be >= ``note_duration_s``.
        sample_rate: Output sample rate in Hz.
    """

    midi_pitch: int = 60
    velocity: int = 100
    note_duration_s: float = 0.75
    render_duration_s: float = 1.0
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        if not 0 <= self.midi_pitch <= 127:
            raise ValueError(f"midi_pitch must be in 0..127, got {self.midi_pitch}")
        if not 1 <= self.velocity <= 127:
            raise ValueError(f"velocity must be in 1..127, got {self.velocity}")
        if self.sample_rate < 4000:
            raise ValueError(f"sample_rate must be >= 4000 Hz, got {self.sample_rate}")
        if not 0 < self.note_duration_s <= self.render_duration_s:
            raise ValueError(
                "need 0 < note_duration_s <= render_duration_s, got "
                f"{self.note_duration_s} and {self.render_duration_s}"
            )

    @property
    def num_samples(self) -> int:
        return int(round(self.render_duration_s * self.sample_rate))

    @property
    def frequency_hz(self) -> float:
        return 440.0 * 2.0 ** ((self.midi_pitch - 69) / 12.0)

    @property
    def gain(self) -> float:
        """Linear velocity gain in (0, 1]."""
        return self.velocity / 127.0

    def to_dict(self) -> dict:
        return asdict(self)


class Synth(abc.ABC):
    """Base class of every backend.

    Subclasses set :attr:`params` (the declared table), the capability flags, and implement
    :meth:`_render`, which receives validated normalised parameters on :attr:`device`.

    Attributes:
        name: Registry name of the backend (``"subtractive"``).
        params: The parameter table; columns of every parameter batch follow it.
        differentiable: ``render`` supports autograd w.r.t. the parameters.
        batched: One call renders the whole batch at once (not a loop over items).
    """

    name: str = "synth"
    differentiable: bool = False
    batched: bool = True
    # The parameter table every instance has, where it does not depend on how the synth is
    # made (a plugin, a parameter subset): what ``synthmatch synths`` lists.
    fixed_params: ParamTable | None = None
    # On CPU, batches larger than this render in chunks of this many items: every item is
    # independent, and chunks keep temporaries in cache and below the allocator's threshold
    # for fresh (page-faulting) memory. ``None``: one call for any batch (and always on GPU).
    cpu_chunk: int | None = None
    # Peak working memory of one call, as a multiple of its output's size (measured on the
    # torch synths with torch.profiler, rounded up): what :meth:`render` checks a batch against
    # before it starts.
    work_factor: int = 16

    def __init__(self, params: ParamTable, probe: ProbeNote | None = None,
                 device: torch.device | str = "cpu"):
        self.params = params
        self.probe = probe if probe is not None else ProbeNote()
        self.device = resolve_device(device)

    @property
    def num_params(self) -> int:
        return len(self.params)

    @property
    def sample_rate(self) -> int:
        return self.probe.sample_rate

    @property
    def num_samples(self) -> int:
        return self.probe.num_samples

    def render(self, params: Tensor) -> Tensor:
        """Render one sound per row.

        Args:
            params: ``(B, P)`` normalised parameters in ``[0, 1]``, columns in the order of
                :attr:`params` (a tensor, or a numpy array or nested list of numbers). Moved
                to :attr:`device` if needed.

        Returns:
            ``(B, T)`` mono float32 audio on :attr:`device`, ``T = probe.num_samples``.

        Raises:
            ValueError: wrong shape, NaN/inf or out-of-range values (naming the parameter).
            MemoryError: the batch would not fit in the device's free memory (checked before
                rendering, so it fails at once rather than after a long render).
        """
        if not isinstance(params, Tensor):
            try:
                params = torch.as_tensor(np.asarray(params, dtype=np.float32))
            except (TypeError, ValueError):
                raise TypeError(f"parameters must be numbers of shape (B, {self.num_params}), "
                                f"got {type(params).__name__}") from None
        # Validated where the batch comes from: free when that is the host, and on a GPU one
        # synchronisation (see ParamTable.validate).
        u = self.params.validate(params)
        self.check_memory(u.shape[0])
        return self._render_chunks(u.to(self.device))

    def check_memory(self, batch_size: int) -> None:
        """Refuse a batch whose output plus one call's working memory exceeds what the device
        has free (only asked for batches above 256 MB, so small renders pay nothing).

        Raises:
            MemoryError: saying how much the batch needs, what is free, and what to do.
        """
        item = self.num_samples * 4
        per_call = chunk_size(self.device, cpu=self.cpu_chunk) or batch_size
        needed = item * (batch_size + self.work_factor * min(per_call, batch_size))
        if needed < 256 * 2**20:
            return
        free = free_memory(self.device)
        if free is not None and needed > free:
            raise MemoryError(
                f"rendering {batch_size} sounds on {self.device} needs about "
                f"{needed / 2**30:.1f} GiB, and {free / 2**30:.1f} GiB is free: render in "
                "smaller batches")

    def _render_chunks(self, u: Tensor) -> Tensor:
        """Render a batch that :meth:`ParamTable.validate` already accepted, in CPU chunks.

        Wrappers such as :class:`~synthmatch.synths.FrozenSynth` call this on their inner
        synth so a batch is validated once.
        """
        chunk = chunk_size(self.device, cpu=self.cpu_chunk)
        if chunk is not None and u.shape[0] > chunk:
            audio = torch.cat([self._render(part) for part in u.split(chunk)])
        else:
            audio = self._render(u)
        if audio.shape != (u.shape[0], self.num_samples):
            raise RuntimeError(
                f"{type(self).__name__} rendered {tuple(audio.shape)}, "
                f"expected {(u.shape[0], self.num_samples)}"
            )
        return audio

    @abc.abstractmethod
    def _render(self, params: Tensor) -> Tensor:
        """Render validated ``(B, P)`` float32 params on :attr:`device` to ``(B, T)``."""

    def to(self, device: torch.device | str) -> Synth:
        """Move the synth's state to ``device`` (in place) and return it."""
        self.device = resolve_device(device)
        return self

    def close(self) -> None:
        """Release worker processes or threads (plugin backends); a torch synth holds none."""
        return None

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.num_params} params, {self.probe.sample_rate} Hz, "
                f"{self.probe.render_duration_s} s, device={self.device})")


# The tensor helpers below use exp rather than exp2/pow: on CPU, exp2 and pow round one ulp
# differently in their vector and scalar paths, which would tie an item's value to its
# position in the batch.
_LN2 = math.log(2.0)
_LN10 = math.log(10.0)


def midi_to_hz(pitch: Tensor | float) -> Tensor | float:
    """Equal temperament, A4 = 440 Hz."""
    if isinstance(pitch, Tensor):
        return 440.0 * torch.exp((pitch - 69.0) * (_LN2 / 12.0))
    return 440.0 * 2.0 ** ((pitch - 69.0) / 12.0)


def db_to_gain(db: Tensor) -> Tensor:
    return torch.exp(db * (_LN10 / 20.0))


def cents_to_ratio(cents: Tensor) -> Tensor:
    return torch.exp(cents * (_LN2 / 1200.0))


TWO_PI = 2.0 * math.pi
