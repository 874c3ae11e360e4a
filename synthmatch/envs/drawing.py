"""Spectrogram pictures for ``render_mode="rgb_array"`` (numpy only, no plotting library)."""

from __future__ import annotations

import numpy as np

# A perceptually ordered dark-to-bright ramp (approximately "magma"), interpolated.
_RAMP = np.array([[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104],
                  [254, 159, 109], [252, 253, 191]], dtype=np.float64)
SCALE = 3  # pixels per spectrogram cell
GAP = 6  # pixels between the two panels


def colorize(values: np.ndarray) -> np.ndarray:
    """Map an array in ``[-1, 1]`` to RGB ``uint8`` (shape + ``(3,)``)."""
    pos = (np.clip(values, -1.0, 1.0) + 1.0) * 0.5 * (len(_RAMP) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_RAMP) - 2)
    frac = (pos - lo)[..., None]
    return (_RAMP[lo] * (1.0 - frac) + _RAMP[lo + 1] * frac).round().astype(np.uint8)


def side_by_side(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Two ``(n_mels, frames)`` spectrograms in ``[-1, 1]``: target left, current right.

    Low frequencies at the bottom, time to the right. Returns ``(H, W, 3)`` ``uint8``.
    """
    panels = [np.repeat(np.repeat(colorize(s[::-1]), SCALE, 0), SCALE, 1)
              for s in (target, current)]
    gap = np.full((panels[0].shape[0], GAP, 3), 255, dtype=np.uint8)
    return np.concatenate([panels[0], gap, panels[1]], axis=1)
