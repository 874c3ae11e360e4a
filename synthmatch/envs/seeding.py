"""Seeds and random draws of the envs, written once for the single env, the vector env and SB3.

Every env owns a seed and an episode counter. The random numbers of an episode (its target
preset and its random start) are a hash of ``(seed, episode, stream, column)``: a counter-based
generator. So a batch draws all its envs' presets in one vectorised call on its own device, and
env ``i`` of a batch plays exactly the episodes of a single env with the same seed, whatever
the batch size, the order of resets or the device.

The hash is SplitMix64's finaliser (Steele, Lea and Flood, "Fast splittable pseudorandom number
generators", OOPSLA 2014) on 64-bit integers; :func:`hashed_uniform` is checked against a plain
numpy ``uint64`` version in the tests.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

# Streams: independent sequences of draws within one episode.
TARGET_STREAM, START_STREAM = 0, 1
_MAX_COLUMNS = 1 << 16

_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB
_GOLDEN = 0x9E3779B97F4A7C15
SEED_LIMIT = 1 << 64


def _signed(value: int) -> int:
    """A 64-bit pattern as the signed integer torch's int64 holds."""
    value &= SEED_LIMIT - 1
    return value - SEED_LIMIT if value >= 1 << 63 else value


def _shift_right(z: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 bit patterns (torch's ``>>`` is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _mix(z: Tensor) -> Tensor:
    """SplitMix64's finaliser: a bijection of 64-bit patterns with full avalanche.

    int64 multiplication wraps modulo 2**64 on every torch device, as the algorithm needs.
    """
    z = (z ^ _shift_right(z, 30)) * _signed(_M1)
    z = (z ^ _shift_right(z, 27)) * _signed(_M2)
    return z ^ _shift_right(z, 31)


def hashed_uniform(seeds: Tensor, episodes: Tensor, stream: int, width: int) -> Tensor:
    """Uniform float32 draws in ``[0, 1)``: row ``i`` depends only on ``(seeds[i], episodes[i],
    stream)``, column ``j`` on ``j``.

    Args:
        seeds: ``(n,)`` int64 seeds (64-bit patterns).
        episodes: ``(n,)`` int64 episode numbers.
        stream: Which sequence of the episode (:data:`TARGET_STREAM`, :data:`START_STREAM`).
        width: Draws per row.

    Returns:
        ``(n, width)`` float32 on the seeds' device, multiples of ``2**-24``.
    """
    if not 0 < width <= _MAX_COLUMNS:
        raise ValueError(f"width must be in 1..{_MAX_COLUMNS}, got {width}")
    key = _mix(_mix(seeds + _signed(_GOLDEN)) + episodes * _signed(_GOLDEN))
    counter = stream * _MAX_COLUMNS + torch.arange(1, width + 1, device=seeds.device)
    bits = _mix(key.unsqueeze(1) + counter * _signed(_GOLDEN))
    return _shift_right(bits, 40).to(torch.float32) * (2.0**-24)


def check_seed(seed: object, name: str = "seed") -> int:
    """A seed as a Python int in ``[0, 2**64)``.

    Raises:
        ValueError: anything else (bools, floats, strings, negative or too large integers).
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"{name} must be an integer in [0, 2**64) or None, got {seed!r}")
    if not 0 <= int(seed) < SEED_LIMIT:
        raise ValueError(f"{name} must be in [0, 2**64), got {seed}")
    return int(seed)


def per_env_seeds(seed: int | Sequence[int | None] | None, num_envs: int) -> list[int | None]:
    """The seed of each of ``num_envs`` envs: ``seed + i`` for an integer (the rule of
    Gymnasium's vector envs), the entries of a sequence, or ``None`` (keep or draw fresh).

    Raises:
        ValueError: a sequence of the wrong length, or a bad seed (see :func:`check_seed`).
    """
    if seed is None:
        return [None] * num_envs
    if isinstance(seed, Sequence) and not isinstance(seed, str | bytes):
        if len(seed) != num_envs:
            raise ValueError(f"got {len(seed)} seeds for {num_envs} envs")
        return [None if s is None else check_seed(s, f"seed[{i}]") for i, s in enumerate(seed)]
    base = check_seed(seed)
    if base + num_envs > SEED_LIMIT:
        raise ValueError(f"seed + env index must stay below 2**64, got seed {base}")
    return [base + i for i in range(num_envs)]


def fresh_seed() -> int:
    """A seed from the operating system's entropy."""
    return int(np.random.SeedSequence().generate_state(1, np.uint64)[0])


class EnvSeeds:
    """The seed and episode counter of each env, on the envs' device.

    A seeded env restarts its counter; each reset of an env draws with its current counter and
    then advances it. An env that was never seeded gets fresh entropy at its first reset.
    """

    def __init__(self, num_envs: int, device: torch.device):
        self.seeds = torch.zeros(num_envs, dtype=torch.long, device=device)
        self.episodes = torch.zeros(num_envs, dtype=torch.long, device=device)
        self.seeded = np.zeros(num_envs, dtype=bool)

    def seed(self, seed: int | Sequence[int | None] | None,
             idx: Sequence[int] | None = None) -> None:
        """Apply the seed rule of :func:`per_env_seeds` to the envs ``idx`` (default: all)
        only; other envs (mid-episode ones in a masked reset) keep their streams."""
        wanted = per_env_seeds(seed, len(self.seeded))
        idx = range(len(self.seeded)) if idx is None else [int(i) for i in idx]
        chosen, values = [], []
        for i in idx:
            s = wanted[i]
            if s is None and not self.seeded[i]:
                s = fresh_seed()
            if s is not None:
                chosen.append(i)
                values.append(_signed(s))
        if chosen:
            where = torch.as_tensor(chosen, device=self.seeds.device)
            self.seeds[where] = torch.as_tensor(values, dtype=torch.long,
                                                device=self.seeds.device)
            self.episodes[where] = 0
            self.seeded[chosen] = True

    def draw(self, idx: Tensor, stream: int, width: int) -> Tensor:
        """``(len(idx), width)`` uniforms of the current episode of envs ``idx``.

        Envs never seeded get fresh entropy first (a host-side check, no device sync)."""
        if not self.seeded.all():
            self.seed(None, idx.tolist())
        return hashed_uniform(self.seeds[idx], self.episodes[idx], stream, width)

    def advance(self, idx: Tensor) -> None:
        """Count one more episode for envs ``idx``."""
        self.episodes[idx] += 1
