"""Spectral front end shared by every reward term: STFT, Slaney mel filterbank, log-mel, MFCC.

Everything in the forward path is torch, so it runs on whatever device the audio is on; the
filterbank and DCT matrices are built once in numpy/torch at construction and kept as buffers.
No torchaudio or librosa is needed: :func:`mel_filterbank` follows ``librosa.filters.mel``'s
defaults (Slaney mel scale, Slaney area normalisation) and :func:`dct_matrix` is SciPy's
``dct(type=2, norm="ortho")`` as a matrix.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

# auraloss clamps the STFT power at 1e-8 before the square root (a magnitude floor of 1e-4);
# the reward uses the same floor so its MR-STFT term equals auraloss's.
POWER_EPS = 1e-8
# librosa.power_to_db's default floor: 10 * log10(1e-10) = -100 dB for silence.
MEL_AMIN = 1e-10

# Slaney's mel scale (Auditory Toolbox; librosa's default, htk=False): linear below 1 kHz,
# logarithmic above.
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def check_audio(x: Tensor, name: str = "audio") -> Tensor:
    """Validate a ``(B, T)`` mono batch and return it as float32/float64.

    Args:
        x: ``(B, T)`` audio.
        name: Argument name used in the error message.

    Returns:
        ``x``, upcast to float32 when it is a half-precision tensor (``torch.stft`` needs it).

    Raises:
        TypeError: ``x`` is not a floating-point tensor.
        ValueError: ``x`` is not two-dimensional or is empty.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape (B, T), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(
            f"{name} must have shape (B, T) (mono, batch first), got {tuple(x.shape)}; "
            "squeeze a channel dimension or add a batch dimension with x[None]"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    return x


def check_audio_pair(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Validate two ``(B, T)`` batches of identical shape (see :func:`check_audio`)."""
    pred = check_audio(pred, "pred")
    target = check_audio(target, "target")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}"
        )
    return pred, target


def check_resolution(n_fft: int, hop_length: int, win_length: int) -> None:
    """Raise ``ValueError`` unless ``0 < hop_length`` and ``0 < win_length <= n_fft``."""
    if n_fft < 2 or hop_length < 1:
        raise ValueError(f"need n_fft >= 2 and hop_length >= 1, got {n_fft} and {hop_length}")
    if not 0 < win_length <= n_fft:
        raise ValueError(f"win_length must be in 1..n_fft={n_fft}, got {win_length}")


def stft_power(x: Tensor, n_fft: int, hop_length: int, window: Tensor) -> Tensor:
    """Power spectrogram ``|STFT|^2`` with auraloss's/``torch.stft``'s conventions.

    Centred frames with reflect padding, unnormalised one-sided DFT. A window shorter than
    ``n_fft`` is zero-padded on both sides by ``torch.stft``.

    Args:
        x: ``(B, T)`` audio, ``T > n_fft // 2`` (reflect padding needs it).
        n_fft: FFT size.
        hop_length: Hop between frames in samples.
        window: ``(win_length,)`` analysis window; moved to ``x``'s device/dtype if needed.

    Returns:
        ``(B, n_fft // 2 + 1, 1 + T // hop_length)`` power, unclamped.
    """
    return stft_powers(x, [(n_fft, hop_length)], [window])[0]


def stft_powers(
    x: Tensor, resolutions: Sequence[tuple[int, int]], windows: Sequence[Tensor]
) -> list[Tensor]:
    """:func:`stft_power` at several resolutions of one batch, from one padded copy of it.

    A centred STFT reflect-pads ``n_fft // 2`` samples on each side, and the reflect padding
    for the largest FFT holds every smaller one (reflection starts at the edge sample and
    walks inwards), so the batch is padded once and each STFT reads a view of that copy.
    The values equal separate :func:`stft_power` calls bit for bit.

    Args:
        x: ``(B, T)`` audio, ``T > n_fft // 2`` for every resolution.
        resolutions: ``(n_fft, hop_length)`` of each spectrogram.
        windows: The ``(win_length,)`` window of each (see :func:`stft_power`).

    Returns:
        Per resolution, ``(B, n_fft // 2 + 1, 1 + T // hop_length)`` power, unclamped: a
        transposed view of frame-major ``(B, frames, n_fft // 2 + 1)`` memory.
    """
    num_samples = x.shape[-1]
    largest = max(n_fft for n_fft, _ in resolutions)
    pad = largest // 2
    if num_samples <= pad:
        raise ValueError(
            f"audio of {num_samples} samples is too short for n_fft={largest} "
            f"(need more than {pad} for the centred, reflect-padded STFT)"
        )
    # Equals F.pad(x, (pad, pad), mode="reflect"), in about half the time on CPU.
    padded = torch.cat([x[..., 1 : pad + 1].flip(-1), x, x[..., -pad - 1 : -1].flip(-1)], -1)
    powers = []
    for (n_fft, hop_length), window in zip(resolutions, windows, strict=True):
        start = pad - n_fft // 2
        view = padded[..., start : start + num_samples + 2 * (n_fft // 2)]
        window = window.to(device=x.device, dtype=x.dtype)
        spec = torch.stft(view, n_fft, hop_length, window.shape[0], window, center=False,
                          return_complex=True)
        # torch.stft's (B, F, N) result is a transposed view of frame-major memory. Squaring
        # the real and imaginary parts in that memory order gives a dense real tensor (2-3x
        # faster than abs(), which calls hypot), and keeping it frame-major lets the
        # filterbank matmuls run as one plain GEMM.
        parts = torch.view_as_real(spec.transpose(-2, -1))
        # In place when no gradient is needed: every fresh large CPU tensor costs page faults.
        squares = parts.square() if parts.requires_grad else parts.square_()
        powers.append((squares[..., 0] + squares[..., 1]).transpose(-2, -1))
    return powers


def magnitude_from_power(
    power: Tensor,
    eps: float = POWER_EPS,
    *,
    inplace: bool = False,
    out: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Clamped magnitude and its natural log, exactly as auraloss's ``STFTLoss.stft``.

    Args:
        power: ``(..., F, N)`` power spectrogram (see :func:`stft_power`).
        eps: Power floor applied before the square root.
        inplace: Turn ``power`` itself into the magnitude (saves a large allocation; ignored
            when ``power`` requires grad).
        out: ``(mag, log_mag)`` tensors shaped like ``power`` to write the results into;
            ``power`` is then clamped in place, as scratch. Not for tensors that need grad.

    Returns:
        ``(mag, log_mag)``, both shaped like ``power``: ``sqrt(max(power, eps))`` and its log.
    """
    if out is not None:
        mag, log_mag = out
        torch.sqrt(power.clamp_min_(eps), out=mag)
        return mag, torch.log(mag, out=log_mag)
    if inplace and not power.requires_grad:
        mag = power.clamp_min_(eps).sqrt_()
    else:
        mag = power.clamp_min(eps).sqrt()
    return mag, mag.log()


def hz_to_mel(freq_hz: np.ndarray | float) -> np.ndarray:
    """Slaney mel scale (librosa ``htk=False``): ``f / (200/3)`` below 1 kHz, log above."""
    f = np.asarray(freq_hz, dtype=np.float64)
    linear = f / _F_SP
    log = _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(f >= _MIN_LOG_HZ, log, linear)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    m = np.asarray(mel, dtype=np.float64)
    linear = m * _F_SP
    log = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(m, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(m >= _MIN_LOG_MEL, log, linear)


def mel_band_edges(n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """The ``n_mels + 2`` band edges in Hz, equally spaced in Slaney mels.

    Filter ``i`` rises from edge ``i`` to its centre, edge ``i + 1``, and falls to edge ``i + 2``.
    """
    return mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))


def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None
) -> Tensor:
    """Triangular Slaney-mel filterbank with Slaney area normalisation.

    Same construction as ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)`` with its
    defaults (``htk=False, norm="slaney"``): each triangle is scaled to height
    ``2 / (f_hi - f_lo)`` so its area in Hz is 1 (Slaney, *Auditory Toolbox*, 1998).

    Args:
        sample_rate: Sample rate in Hz.
        n_fft: FFT size; the filterbank acts on ``n_fft // 2 + 1`` bins.
        n_mels: Number of mel bands.
        f_min: Lowest band edge in Hz.
        f_max: Highest band edge in Hz; ``None`` means ``sample_rate / 2``.

    Returns:
        ``(n_mels, n_fft // 2 + 1)`` float32 weights.

    Raises:
        ValueError: invalid frequencies, or a band so narrow that it covers no FFT bin (lower
            ``n_mels`` or raise ``n_fft``).
    """
    f_max = sample_rate / 2.0 if f_max is None else float(f_max)
    if not 0.0 <= f_min < f_max <= sample_rate / 2.0:
        raise ValueError(
            f"need 0 <= f_min < f_max <= sample_rate / 2 = {sample_rate / 2}, got "
            f"f_min={f_min}, f_max={f_max}"
        )
    if n_mels < 1:
        raise ValueError(f"n_mels must be >= 1, got {n_mels}")
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    edges = mel_band_edges(n_mels, f_min, f_max)
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    empty = np.flatnonzero(weights.max(axis=1) <= 0.0)
    if empty.size:
        raise ValueError(
            f"mel bands {empty.tolist()} cover no FFT bin with n_fft={n_fft} at "
            f"{sample_rate} Hz; use fewer mels (n_mels={n_mels}) or a larger n_fft"
        )
    return torch.from_numpy(weights.astype(np.float32))


def dct_matrix(n_out: int, n_in: int) -> Tensor:
    """Orthonormal DCT-II as a matrix: ``dct_matrix(K, M) @ x == scipy.fft.dct(x, 2,
    norm="ortho")[:K]`` along the first axis of ``x``.

    Args:
        n_out: Number of coefficients kept (``<= n_in``).
        n_in: Input length (number of mel bands).

    Returns:
        ``(n_out, n_in)`` float32 matrix with orthonormal rows (``D @ D.T = I``).
    """
    if not 1 <= n_out <= n_in:
        raise ValueError(f"need 1 <= n_out <= n_in, got n_out={n_out}, n_in={n_in}")
    k = torch.arange(n_out, dtype=torch.float64)[:, None]
    m = torch.arange(n_in, dtype=torch.float64)[None, :]
    basis = torch.cos(math.pi * k * (2.0 * m + 1.0) / (2.0 * n_in)) * math.sqrt(2.0 / n_in)
    basis[0] /= math.sqrt(2.0)
    return basis.float()


class LogMelSpectrogram(nn.Module):
    """Power mel spectrogram in dB, ``10 * log10(max(mel, 1e-10))``.

    Scaling (so the numbers read like a spectrum analyser): the STFT power is divided by
    ``(sum(window) / 2) ** 2``, so a full-scale sine's peak bin has power 1 (0 dB), and the
    Slaney filterbank is divided by its largest triangle height ``2 / (f_hi - f_lo)``, so the
    narrowest bands (with the defaults, every band below 1 kHz, where the Slaney scale is
    linear) have unit gain at their centre. A full-scale sine at the centre of such a band
    reads about +1 dB (the Hann window spreads it over three bins); above 1 kHz the bands
    widen and the area normalisation lowers the reading by ``10 * log10(width / narrowest
    width)`` (with the defaults at 16 kHz: -1 dB at 1.6 kHz, -4 dB at 3.2 kHz, -7 dB at
    6.6 kHz). Silence reads -100 dB.

    Args:
        sample_rate: Sample rate in Hz.
        n_fft: FFT size (Hann window of the same length).
        hop_length: Hop in samples.
        n_mels: Number of mel bands.
        f_min: Lowest mel band edge in Hz.
        f_max: Highest mel band edge in Hz; ``None`` means Nyquist.

    Example:
        >>> mel = LogMelSpectrogram(16000)
        >>> mel(torch.zeros(2, 16000)).shape
        torch.Size([2, 64, 63])
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        n_fft: int = 1024,
        hop_length: int = 256,
        n_mels: int = 64,
        f_min: float = 20.0,
        f_max: float | None = None,
    ):
        super().__init__()
        check_resolution(n_fft, hop_length, n_fft)
        self.sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.n_mels = int(n_mels)
        window = torch.hann_window(n_fft)
        fb = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max)
        edges = mel_band_edges(n_mels, f_min, sample_rate / 2.0 if f_max is None else f_max)
        max_height = float(np.max(2.0 / (edges[2:] - edges[:-2])))
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("filterbank", fb, persistent=False)
        # Scaling and filterbank folded into one (n_fft // 2 + 1, n_mels) matrix: one matmul.
        power_gain = (2.0 / float(window.sum())) ** 2
        projection = (fb * (power_gain / max_height)).T.contiguous()
        self.register_buffer("projection", projection, persistent=False)

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` of audio (centred STFT: ``1 + T // hop``)."""
        return 1 + int(num_samples) // self.hop_length

    def power(self, x: Tensor) -> Tensor:
        """``(B, T)`` audio -> ``(B, n_fft // 2 + 1, frames)`` unnormalised STFT power."""
        return stft_power(check_audio(x), self.n_fft, self.hop_length, self.window)

    def from_power(self, power: Tensor) -> Tensor:
        """Log-mel from a power spectrogram computed with this module's STFT settings.

        Args:
            power: ``(B, n_fft // 2 + 1, frames)`` from :meth:`power` or :func:`stft_power`
                (clamping it at :data:`POWER_EPS` first does not change the result: that
                floor lies far below -100 dB after scaling).

        Returns:
            ``(B, n_mels, frames)`` in dB.
        """
        fb = self.projection.to(device=power.device, dtype=power.dtype)
        # (B, N, F) @ (F, M) is a single GEMM when power is frame-major (see stft_power).
        return self.db_from_projection(torch.matmul(power.transpose(-2, -1), fb))

    def db_from_projection(self, mel_power: Tensor) -> Tensor:
        """``(B, frames, n_mels)`` power projected on :attr:`projection` -> ``(B, n_mels,
        frames)`` dB."""
        return (10.0 * mel_power.clamp_min(MEL_AMIN).log10()).transpose(-2, -1).contiguous()

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T)`` audio -> ``(B, n_mels, frames)`` log-mel in dB."""
        return self.from_power(self.power(x))


class MFCC(nn.Module):
    """Mel-frequency cepstral coefficients: orthonormal DCT-II over the dB log-mel.

    Equivalent to ``librosa.feature.mfcc(S=log_mel, n_mfcc=n_mfcc)`` (``dct_type=2,
    norm="ortho"``) on :class:`LogMelSpectrogram`'s output; coefficients are in dB, and
    ``c0 = sqrt(n_mels) * mean(log_mel)`` carries the overall level.

    Args:
        sample_rate: Sample rate in Hz.
        n_mfcc: Number of coefficients, ``<= n_mels``.
        **mel_kwargs: Keyword arguments of :class:`LogMelSpectrogram`.
    """

    def __init__(self, sample_rate: int, *, n_mfcc: int = 20, **mel_kwargs):
        super().__init__()
        self.log_mel = LogMelSpectrogram(sample_rate, **mel_kwargs)
        self.n_mfcc = int(n_mfcc)
        self.register_buffer("dct", dct_matrix(n_mfcc, self.log_mel.n_mels), persistent=False)

    def from_log_mel(self, log_mel: Tensor) -> Tensor:
        """``(B, n_mels, frames)`` log-mel -> ``(B, n_mfcc, frames)`` MFCC."""
        return torch.matmul(self.dct.to(device=log_mel.device, dtype=log_mel.dtype), log_mel)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T)`` audio -> ``(B, n_mfcc, frames)`` MFCC."""
        return self.from_log_mel(self.log_mel(x))
