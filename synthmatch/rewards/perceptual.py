"""The combined perceptual distance used as the environments' reward, with cached features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from synthmatch.devices import CPU_SPECTRA_CHUNK, chunk_size, chunks
from synthmatch.rewards.audio_features import AudioFeatures
from synthmatch.rewards.descriptors import SpectralDescriptors
from synthmatch.rewards.distances import (
    DEFAULT_FFT_SIZES,
    DEFAULT_HOP_SIZES,
    LoudnessDistance,
    MFCCDistance,
    MultiResolutionSTFTDistance,
    SpectralCentroidDistance,
    check_weight,
)
from synthmatch.rewards.features import (
    POWER_EPS,
    LogMelSpectrogram,
    check_audio,
    magnitude_from_power,
    stft_powers,
)
from synthmatch.rewards.penalties import penalties_from_stats, signal_stats


class _Spectra(NamedTuple):
    """The spectral part of :class:`AudioFeatures`, with the front end's projection."""

    mag: tuple[Tensor, ...]
    log_mag: tuple[Tensor, ...]
    mag_norm: Tensor
    proj: Tensor  # (B, frames, n_mels + 3) power on PerceptualDistance._front_basis

    def rows(self, rows: slice) -> _Spectra:
        """Rows ``rows`` of every tensor, as views."""
        return _Spectra(tuple(m[rows] for m in self.mag), tuple(m[rows] for m in self.log_mag),
                        self.mag_norm[rows], self.proj[rows])


class PerceptualDistance(nn.Module):
    """Perceptual distance between audio batches, one value per item: the default reward.

    ``w_stft * stft + w_mfcc * mfcc + w_centroid * centroid + w_loudness * loudness
    + w_penalty * (dc + clipping + silence)``, where each term is the module of the same name
    in :mod:`synthmatch.rewards.distances` and the penalties are
    :func:`~synthmatch.rewards.penalties.penalties_from_stats` (see :meth:`components`). The
    MR-STFT term (Yamamoto et al., 2020; Arik et al., 2019) is fine-grained but saturates when
    spectra barely overlap; the MFCC (envelope), centroid (brightness) and loudness terms are
    low-dimensional and keep improving smoothly there. Spectral and MFCC errors are the usual
    sound-matching metrics (Yee-King et al., 2018; Esling et al., 2020, "Flow synthesizer").

    Identical audio scores exactly 0. The default weights make the four terms contribute about
    equally on unrelated sounds: on 256 random pairs of subtractive-synth presets the
    unweighted means are stft 6.4, mfcc 1.16, centroid 2.4 octaves, loudness 0.92, so the
    weighted terms are each about 0.5 and the total about 2.2 (small parameter perturbations,
    +-1 % per parameter, score about 0.26). A penalty (silence, say) adds up to 1, about half
    the distance of an unrelated sound.

    Speed: the STFT at ``(n_fft, hop_length)`` serves the log-mel, MFCC, centroid and loudness
    (one matmul for all three) and, when it is one of the MR-STFT resolutions (the default),
    that term too; every STFT reads one reflect-padded copy of the audio. Cache a target's
    :meth:`features` and pass them instead of audio to avoid recomputing them.

    Args:
        sample_rate: Sample rate in Hz.
        fft_sizes: MR-STFT FFT sizes.
        hop_sizes: MR-STFT hops.
        win_lengths: MR-STFT window lengths; ``None`` means equal to ``fft_sizes``.
        sc_max: Cap of spectral convergence per resolution (near-silent targets).
        n_fft: FFT size of the mel/MFCC/centroid/loudness front end.
        hop_length: Its hop.
        n_mels: Mel bands.
        n_mfcc: MFCCs (``c0`` is computed but not compared).
        f_min: Lowest mel edge in Hz.
        f_max: Highest mel edge in Hz; ``None`` means Nyquist.
        w_stft: Weight of the MR-STFT distance.
        w_mfcc: Weight of :class:`~synthmatch.rewards.distances.MFCCDistance`.
        w_centroid: Weight of the centroid distance (octaves).
        w_loudness: Weight of the loudness distance (units of 20 dB).
        w_penalty: Weight of each degenerate-audio penalty.

    Example:
        >>> reward_fn = PerceptualDistance(16000)
        >>> target = reward_fn.features(torch.randn(8, 16000) * 0.1)  # cache once
        >>> pred = torch.randn(8, 16000) * 0.1
        >>> reward = -reward_fn(pred, target)                           # (8,)
    """

    def __init__(
        self,
        sample_rate: int,
        *,
        fft_sizes: Sequence[int] = DEFAULT_FFT_SIZES,
        hop_sizes: Sequence[int] = DEFAULT_HOP_SIZES,
        win_lengths: Sequence[int] | None = None,
        sc_max: float | None = 10.0,
        n_fft: int = 1024,
        hop_length: int = 256,
        n_mels: int = 64,
        n_mfcc: int = 20,
        f_min: float = 20.0,
        f_max: float | None = None,
        w_stft: float = 0.1,
        w_mfcc: float = 0.5,
        w_centroid: float = 0.2,
        w_loudness: float = 0.5,
        w_penalty: float = 1.0,
    ):
        super().__init__()
        self.sample_rate = int(sample_rate)
        self.weights = {
            "stft": check_weight("w_stft", w_stft),
            "mfcc": check_weight("w_mfcc", w_mfcc),
            "centroid": check_weight("w_centroid", w_centroid),
            "loudness": check_weight("w_loudness", w_loudness),
            "penalty": check_weight("w_penalty", w_penalty),
        }
        self.stft_distance = MultiResolutionSTFTDistance(
            fft_sizes=fft_sizes, hop_sizes=hop_sizes, win_lengths=win_lengths, sc_max=sc_max
        )
        self.mfcc_distance = MFCCDistance(
            sample_rate, n_mfcc=n_mfcc, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
            f_min=f_min, f_max=f_max,
        )
        self.centroid_distance = SpectralCentroidDistance(
            sample_rate, n_fft=n_fft, hop_length=hop_length
        )
        self.loudness_distance = LoudnessDistance(sample_rate, n_fft=n_fft, hop_length=hop_length)
        front_basis = torch.cat([self.log_mel.projection, self.descriptors.basis], dim=1)
        self.register_buffer("_front_basis", front_basis, persistent=False)
        # The front end's power is the MR-STFT's at the same resolution (the default), else an
        # extra spectrogram computed alongside them.
        front_end = (int(n_fft), int(hop_length), int(n_fft))
        resolutions = self.stft_distance.resolutions
        self._shared = front_end in resolutions
        self._front = resolutions.index(front_end) if self._shared else len(resolutions)

    @property
    def log_mel(self) -> LogMelSpectrogram:
        """The log-mel front end; ``features(x).log_mel`` equals ``log_mel(x)``."""
        return self.mfcc_distance.mfcc.log_mel

    @property
    def descriptors(self) -> SpectralDescriptors:
        """The centroid/loudness front end (same STFT as :attr:`log_mel`)."""
        return self.loudness_distance.descriptors

    def features(self, audio: Tensor) -> AudioFeatures:
        """Compute every feature of a ``(B, T)`` batch once.

        Args:
            audio: ``(B, T)`` audio.

        Returns:
            :class:`AudioFeatures` on ``audio``'s device.
        """
        x = check_audio(audio)
        # Out-of-place writes cannot record gradients: a batch that needs them goes whole.
        size = None if x.requires_grad else chunk_size(x.device, CPU_SPECTRA_CHUNK)
        pieces = chunks(x.shape[0], size)
        if len(pieces) == 1:
            spectra = self._spectra(x)
        else:
            spectra = self._empty_spectra(x)
            for rows in pieces:
                self._spectra(x[rows], out=spectra.rows(rows))
        n_mels = self.log_mel.n_mels
        log_mel = self.log_mel.db_from_projection(spectra.proj[..., :n_mels])
        centroid_hz, loudness_db = self.descriptors.from_projection(spectra.proj[..., n_mels:])
        return AudioFeatures(
            mag=spectra.mag,
            log_mag=spectra.log_mag,
            mag_norm=spectra.mag_norm,
            log_mel=log_mel,
            mfcc=self.mfcc_distance.mfcc.from_log_mel(log_mel),
            centroid_hz=centroid_hz,
            loudness_db=loudness_db,
            stats=signal_stats(x),
        )

    def _stfts(self) -> tuple[list[tuple[int, int]], list[Tensor]]:
        """``(n_fft, hop_length)`` and window of every STFT: the MR-STFT's, then the front
        end's unless it is one of them."""
        sizes, windows = self.stft_distance.stft_sizes, self.stft_distance.windows()
        if not self._shared:
            sizes = [*sizes, (self.log_mel.n_fft, self.log_mel.hop_length)]
            windows = [*windows, self.log_mel.window]
        return sizes, windows

    def _spectra(self, x: Tensor, out: _Spectra | None = None) -> _Spectra:
        """The spectral features of ``x`` ``(B, T)``, written into ``out`` when given."""
        powers = stft_powers(x, *self._stfts())
        front = powers[self._front]
        basis = self._front_basis.to(device=front.device, dtype=front.dtype)
        # Mel bands, centroid and loudness are all linear in the power: one matmul serves them,
        # before the powers become magnitudes in place.
        proj = torch.matmul(front.transpose(-2, -1), basis,
                            out=None if out is None else out.proj)
        num = len(self.stft_distance.resolutions)
        pairs = [
            magnitude_from_power(p, POWER_EPS, inplace=True,
                                 out=None if out is None else (out.mag[r], out.log_mag[r]))
            for r, p in enumerate(powers[:num])
        ]
        mags, logs = zip(*pairs, strict=True)
        norms = torch.stack([torch.linalg.vector_norm(m, dim=(-2, -1)) for m in mags], -1,
                            out=None if out is None else out.mag_norm)
        return _Spectra(tuple(mags), tuple(logs), norms, proj)

    def _empty_spectra(self, x: Tensor) -> _Spectra:
        """Uninitialised :class:`_Spectra` for ``x`` ``(B, T)``, laid out as :meth:`_spectra`
        computes them (spectrograms frame-major, see
        :func:`~synthmatch.rewards.features.stft_powers`)."""
        (batch, num_samples), opts = x.shape, {"device": x.device, "dtype": x.dtype}

        def spectrogram(n_fft: int, hop_length: int) -> Tensor:
            return torch.empty(batch, 1 + num_samples // hop_length, n_fft // 2 + 1,
                               **opts).transpose(-2, -1)

        sizes = self.stft_distance.stft_sizes
        front_frames = 1 + num_samples // self.log_mel.hop_length
        return _Spectra(
            mag=tuple(spectrogram(*size) for size in sizes),
            log_mag=tuple(spectrogram(*size) for size in sizes),
            mag_norm=torch.empty(batch, len(sizes), **opts),
            proj=torch.empty(batch, front_frames, self._front_basis.shape[1], **opts),
        )

    def _as_features(self, x: Tensor | AudioFeatures) -> AudioFeatures:
        return x if isinstance(x, AudioFeatures) else self.features(x)

    def _check_pair(self, pred: AudioFeatures, target: AudioFeatures) -> None:
        if target.batch_size not in (pred.batch_size, 1):
            raise ValueError(
                f"target batch size must equal pred's ({pred.batch_size}) or be 1, got "
                f"{target.batch_size}"
            )
        if pred.log_mel.shape[1:] != target.log_mel.shape[1:] or len(pred.mag) != len(
            target.mag
        ):
            raise ValueError(
                "pred and target features differ in shape: audio of different lengths, or "
                "features from a differently configured PerceptualDistance"
            )

    def _components(self, pred: AudioFeatures, target: AudioFeatures) -> dict[str, Tensor]:
        self._check_pair(pred, target)
        penalties = penalties_from_stats(pred.stats, target.stats)
        return {
            "stft": self.stft_distance.from_magnitudes(
                pred.mag, pred.log_mag, target.mag, target.log_mag, target.mag_norm
            ),
            "mfcc": self.mfcc_distance.from_mfcc(pred.mfcc, target.mfcc),
            "centroid": self.centroid_distance.from_descriptors(
                pred.centroid_hz, target.centroid_hz, target.loudness_db
            ),
            "loudness": self.loudness_distance.from_loudness(pred.loudness_db, target.loudness_db),
            **penalties.as_dict(),
        }

    def components(
        self, pred: Tensor | AudioFeatures, target: Tensor | AudioFeatures
    ) -> dict[str, Tensor]:
        """Unweighted value of every term, for logging and analysis.

        Args:
            pred: ``(B, T)`` audio or its features.
            target: ``(B, T)`` audio or its features (batch ``B`` or 1).

        Returns:
            ``{"stft", "mfcc", "centroid", "loudness", "dc", "clipping", "silence"}``, each
            ``(B,)``; ``forward`` is their weighted sum (the three penalties share
            ``w_penalty``).
        """
        return self._components(self._as_features(pred), self._as_features(target))

    def distance(self, pred: AudioFeatures, target: AudioFeatures) -> Tensor:
        """Weighted distance between precomputed features.

        Args:
            pred: Features of the ``(B, T)`` prediction.
            target: Features of the target (batch ``B`` or 1), typically cached per episode.

        Returns:
            ``(B,)`` distance, 0 for identical audio.
        """
        weights = self.weights
        total = 0.0
        for name, value in self._components(pred, target).items():
            total = total + weights.get(name, weights["penalty"]) * value
        return total

    def forward(self, pred: Tensor | AudioFeatures, target: Tensor | AudioFeatures) -> Tensor:
        """``(B, T)`` prediction vs ``(B, T)`` target audio or cached features -> ``(B,)``."""
        return self.distance(self._as_features(pred), self._as_features(target))

    def extra_repr(self) -> str:
        weights = ", ".join(f"w_{k}={v:g}" for k, v in self.weights.items())
        return f"sample_rate={self.sample_rate}, {weights}"

