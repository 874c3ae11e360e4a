"""The default synth: a fast, batched, differentiable subtractive synth in torch.

Signal flow, per item::

    osc 1 (shape morph, unison) --+
    osc 2 (shape morph, unison,   +--> mix --> 24 dB/oct resonant low-pass --> amp ADSR --> gain
           semitone/cent offset) --+           (cutoff swept by its own ADSR
    noise --------------------------+            and optionally by the LFO)
    LFO --> pitch (semitones) and/or cutoff (octaves)

How it stays fast (no Python loop over samples, cost independent of the preset):

- Oscillators read per-item band-limited wavetables (built once per render by an inverse FFT
  of the morphed harmonic series, cut at the Nyquist limit of the item's highest voice) by
  linear interpolation (:func:`~synthmatch.synths.dsp.wavetable_read`), segment-major: the
  oscillators' audio-rate tensors hold sample ``s * CONTROL_HOP + j`` at ``[..., j, s]``, so
  per-segment values broadcast along a contiguous axis, where element-wise kernels run about
  twice as fast as along the 32 samples of a segment. One transpose restores time order.
- Envelopes and LFOs are evaluated on a 2 ms control grid and interpolated.
- The time-varying filter is applied in the STFT domain: every frame is multiplied by the
  analytic magnitude response of the filter at that frame's cutoff (zero phase), then
  overlap-added back.
- On CPU, per-item and control-rate work runs once per call (its cost is mostly per call)
  and audio-rate work in blocks of ``cpu_audio_chunk`` items, whose temporaries stay in cache.

Item ``i``'s audio does not depend on the batch: every operation is per row, unison voices
are accumulated in a fixed order (inactive voices add exact zeros), and the noise source is
one fixed buffer shared by all items. Nor does it depend on the device's code path: on CPU
the voices an item does not use are skipped, elsewhere they run at weight zero (see
:meth:`SubtractiveSynth._skips_unused_voices`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from synthmatch.devices import chunk_size, chunks, resolve_device
from synthmatch.synths.base import ProbeNote, Synth, midi_to_hz
from synthmatch.synths.dsp import (
    CONTROL_HOP,
    adsr,
    control_times,
    overlap_add,
    sine_lfo,
    sqrt_hann,
    stft_frames,
    to_audio_rate,
    wavetable_read,
)
from synthmatch.synths.params import ParamSpec, ParamTable

SHAPES = ("sine", "triangle", "saw", "square")
TABLE_SIZE = 2048  # a power of two: phases scale to table steps exactly
MAX_UNISON = 4
MAX_Q = 8.0
# Fixed, different start phases (in cycles) so unison voices do not start in phase.
VOICE_PHASE = (0.0, 0.37, 0.71, 0.13)
FILTER_HOP = 256  # 16 ms at 16 kHz; frames of 2 * FILTER_HOP samples

PARAMS = ParamTable([
    ParamSpec("osc1_shape", 0.0, 3.0, 2.0, description="osc 1 waveform: 0 sine, 1 triangle, "
              "2 saw, 3 square, morphing in between"),
    ParamSpec("osc1_level", 0.0, 1.0, 0.8, description="osc 1 level in the mix"),
    ParamSpec("osc2_shape", 0.0, 3.0, 3.0, description="osc 2 waveform (as osc1_shape)"),
    ParamSpec("osc2_level", 0.0, 1.0, 0.0, description="osc 2 level in the mix"),
    ParamSpec("osc2_semitones", -24.0, 24.0, 0.0, choices=tuple(float(s) for s in range(-24, 25)),
              description="osc 2 transposition in whole semitones"),
    ParamSpec("osc2_detune_cents", -50.0, 50.0, 0.0, description="osc 2 fine tuning"),
    ParamSpec("unison_voices", 1.0, 4.0, 1.0, choices=(1.0, 2.0, 3.0, 4.0),
              description="voices per oscillator, spread over +-unison_detune_cents"),
    ParamSpec("unison_detune_cents", 0.0, 50.0, 10.0, description="unison spread"),
    ParamSpec("noise_level", 0.0, 1.0, 0.0, description="white noise level in the mix"),
    ParamSpec("cutoff_hz", 30.0, 20000.0, 2000.0, scale="log",
              description="low-pass cutoff before modulation (capped below Nyquist)"),
    ParamSpec("resonance", 0.0, 1.0, 0.2, description="filter resonance: Q from 0.71 to 8"),
    ParamSpec("filter_env_octaves", -6.0, 6.0, 2.0, description="filter envelope depth"),
    ParamSpec("filter_attack_s", 0.001, 1.0, 0.005, scale="log", description="filter attack"),
    ParamSpec("filter_decay_s", 0.01, 2.0, 0.3, scale="log", description="filter decay"),
    ParamSpec("filter_sustain", 0.0, 1.0, 0.3, description="filter sustain level"),
    ParamSpec("filter_release_s", 0.01, 1.0, 0.2, scale="log", description="filter release"),
    ParamSpec("amp_attack_s", 0.001, 1.0, 0.005, scale="log", description="amp attack"),
    ParamSpec("amp_decay_s", 0.01, 2.0, 0.3, scale="log", description="amp decay"),
    ParamSpec("amp_sustain", 0.0, 1.0, 0.7, description="amp sustain level"),
    ParamSpec("amp_release_s", 0.01, 1.0, 0.15, scale="log", description="amp release"),
    ParamSpec("lfo_rate_hz", 0.1, 20.0, 5.0, scale="log", description="LFO rate (sine)"),
    ParamSpec("lfo_to_pitch_semitones", 0.0, 2.0, 0.0, description="LFO depth on pitch"),
    ParamSpec("lfo_to_cutoff_octaves", 0.0, 4.0, 0.0, description="LFO depth on cutoff"),
    ParamSpec("gain_db", -24.0, 0.0, -6.0, description="master gain"),
])


def _harmonic_series(num_bins: int) -> Tensor:
    """Sine-series amplitudes of the four shapes, ``(4, num_bins)`` (bin k = harmonic k)."""
    k = torch.arange(num_bins, dtype=torch.float64)
    odd = (k % 2 == 1).double()
    safe = k.clamp_min(1.0)
    sine = (k == 1).double()
    # Signs follow each waveform's Fourier series in sine phase.
    triangle = odd * (8.0 / math.pi**2) * torch.where((k % 4) == 1, 1.0, -1.0) / safe**2
    saw = (k > 0).double() * (2.0 / math.pi) * torch.where(k % 2 == 1, 1.0, -1.0) / safe
    square = odd * (4.0 / math.pi) / safe
    return torch.stack([sine, triangle, saw, square]).float()


class SubtractiveSynth(Synth):
    """A "Serum-lite" subtractive synth with 24 parameters (see :data:`PARAMS`).

    Args:
        probe: The note to play (pitch, velocity, durations, sample rate).
        device: Where tensors live and rendering happens.

    Example:
        >>> synth = SubtractiveSynth()
        >>> audio = synth.render(synth.params.sample(8))  # (8, 16000) at 16 kHz
    """

    name = "subtractive"
    fixed_params = PARAMS
    differentiable = True
    batched = True
    # On CPU, items per call: bounds the control-rate tensors (about 100 KB per item).
    cpu_chunk = 256
    # On CPU, items per block of audio-rate work: fastest of 4, 8, 16 and 32 in the render
    # timings of benchmarks/bench_chunks.py.
    cpu_audio_chunk = 8

    def __init__(self, probe: ProbeNote | None = None, device: torch.device | str = "cpu"):
        super().__init__(PARAMS, probe, device)
        self._build_constants()

    def _build_constants(self) -> None:
        p, dev = self.probe, self.device
        num_bins = TABLE_SIZE // 2 + 1
        self._series = _harmonic_series(num_bins).to(dev)
        self._harmonic = torch.arange(num_bins, device=dev, dtype=torch.float32)
        self._control_t = control_times(p.num_samples, p.sample_rate, dev)
        j = torch.arange(CONTROL_HOP, device=dev, dtype=torch.float32)
        self._offsets = torch.stack([j, j * (j - 1) / (2 * CONTROL_HOP)]).unsqueeze(-1)
        gen = torch.Generator().manual_seed(0)
        noise = torch.rand(p.num_samples, generator=gen) * 2.0 - 1.0
        # Zero-padded to whole control segments and segment-major, like the oscillators.
        segments = len(self._control_t) - 1
        noise = torch.cat([noise, noise.new_zeros(segments * CONTROL_HOP - p.num_samples)])
        self._noise = noise.view(segments, CONTROL_HOP).t().contiguous().to(dev)
        self._window = sqrt_hann(2 * FILTER_HOP, device=dev)
        frames = -(-p.num_samples // FILTER_HOP) + 1
        self._frame_t = torch.arange(frames, device=dev, dtype=torch.float32) * (
            FILTER_HOP / p.sample_rate)
        self._bin_hz2 = torch.fft.rfftfreq(2 * FILTER_HOP, 1.0 / p.sample_rate).to(dev).square()

    def to(self, device: torch.device | str) -> SubtractiveSynth:
        self.device = resolve_device(device)
        self._build_constants()
        return self

    @property
    def _skips_unused_voices(self) -> bool:
        """Whether a render runs unison voice ``k`` only on the items that use it.

        That needs the voice counts on the host: free on CPU, where it saves a third of the
        oscillator work for random presets. On other devices reading them would make the host
        wait for the device, so every item runs every voice, unused ones at weight zero.
        """
        return self.device.type == "cpu"

    def _render(self, params: Tensor) -> Tensor:
        # Per-item and control-rate values stay in float64 until they meet audio-rate tensors:
        # transcendental CPU kernels round differently in their vector and scalar paths, and
        # which path an element takes depends on its position in the batch (float64 results
        # agree once rounded to float32). Audio-rate work is float32.
        x = self.params.to_real(params.double())
        b, order = x.shape[0], None
        first = [0] * MAX_UNISON
        if self._skips_unused_voices:
            # Sort items by unison voice count so voice k only runs on the tail of the batch
            # that uses it (contiguous views, no copies); every step is per item, so the order
            # does not change any item's audio.
            voices = x[:, self.params.index("unison_voices")].round().long()
            order = torch.argsort(voices, stable=True)
            x = x[order]
            counts = torch.bincount(voices, minlength=MAX_UNISON + 1)
            first = torch.cumsum(counts, 0).tolist()  # rows [first[k]:] have more than k voices
        ctl = self._controls(x)
        size = chunk_size(self.device, cpu=self.cpu_audio_chunk)
        if size is None or size >= b:
            audio = self._audio(ctl, first)
            return audio if order is None else audio.index_copy(0, order, audio)
        audio = torch.empty(b, self.num_samples, device=self.device, dtype=torch.float32)
        for rows in chunks(b, size):
            part = self._audio({k: v[rows] for k, v in ctl.items()},
                               [max(f - rows.start, 0) for f in first])
            # Each block goes to its items' rows, undoing the sort on the way.
            if order is None:
                audio[rows] = part
            else:
                audio.index_copy_(0, order[rows], part)
        return audio

    def _controls(self, x: Tensor) -> dict[str, Tensor]:
        """Everything per item or at control rate, for :meth:`_audio`: a dict of ``(B, ...)``.

        Args:
            x: ``(B, P)`` float64 parameters in real units.
        """
        p = self.probe
        col = dict(zip(self.params.names, x.unbind(1), strict=True))
        f0 = midi_to_hz(float(p.midi_pitch))
        # Levels are scaled down together when they sum above 1, so the mix stays in [-1, 1].
        norm = (col["osc1_level"] + col["osc2_level"] + col["noise_level"]).clamp_min(1.0)
        osc2_ratio = torch.exp2((col["osc2_semitones"] + col["osc2_detune_cents"] / 100.0) / 12.0)
        voices = col["unison_voices"].round().unsqueeze(1)
        # Voice v of n sits at detune * (2v / (n - 1) - 1) cents; a single voice at 0.
        v = torch.arange(MAX_UNISON, device=x.device, dtype=torch.float64)
        spread = torch.where(voices > 1, 2.0 * v / (voices - 1).clamp_min(1.0) - 1.0, 0.0)
        voice_ratio = torch.exp2(col["unison_detune_cents"].unsqueeze(1) * spread / 1200.0)
        levels = torch.stack([col["osc1_level"], col["osc2_level"]], 1) / norm.unsqueeze(1)
        # (B, 2, MAX_UNISON): each voice's gain in the mix; inactive voices get 0.
        voice_weight = (levels.unsqueeze(2) * ((v < voices).double() / voices).unsqueeze(1)).float()

        # Phase of each oscillator: the running sum of its per-sample rate.
        lfo = sine_lfo(self._control_t, col["lfo_rate_hz"])
        semis = col["lfo_to_pitch_semitones"].unsqueeze(1) * lfo
        rate = torch.exp2(semis / 12.0) * (f0 / p.sample_rate)  # (B, C) at control points
        ratios = torch.stack([torch.ones_like(osc2_ratio), osc2_ratio], 1).unsqueeze(2)
        whole, segments = self._integrate(rate.unsqueeze(1) * ratios)  # (B, 2, S), (B, 2, 3, S)

        # Highest frequency osc 1 reaches (widest voice, LFO at its peak): its tables stop below.
        highest = f0 * voice_ratio.max(1).values * torch.exp2(
            col["lfo_to_pitch_semitones"] / 12.0)
        values, slopes = self._wavetables(
            torch.stack([col["osc1_shape"], col["osc2_shape"]], 1).float(),
            torch.stack([highest, highest * osc2_ratio], 1).float())

        # The filter's cutoff per STFT frame, swept by its envelope and the LFO.
        t = self._frame_t
        env = adsr(t, col["filter_attack_s"], col["filter_decay_s"], col["filter_sustain"],
                   col["filter_release_s"], p.note_duration_s)
        octaves = (col["filter_env_octaves"].unsqueeze(1) * env
                   + col["lfo_to_cutoff_octaves"].unsqueeze(1) * sine_lfo(t, col["lfo_rate_hz"]))
        cutoff = (col["cutoff_hz"].unsqueeze(1) * torch.exp2(octaves)).clamp(
            20.0, 0.49 * p.sample_rate)
        q = 0.5**0.5 * (MAX_Q / 0.5**0.5) ** col["resonance"]

        amp = adsr(self._control_t, col["amp_attack_s"], col["amp_decay_s"], col["amp_sustain"],
                   col["amp_release_s"], p.note_duration_s)
        amp = amp * (p.gain * torch.pow(10.0, col["gain_db"] / 20.0)).unsqueeze(1)
        return {
            "noise_gain": (col["noise_level"] / norm).float(),
            "voice_ratio": voice_ratio,
            "voice_weight": voice_weight,
            "whole": whole,
            "segments": segments,
            "values": values,
            "slopes": slopes,
            # (f / fc)^2 is the bins' squared frequencies times this: a multiplication per
            # bin, where a division costs more.
            "inv_cutoff2": cutoff.square().reciprocal().float(),
            "inv_q2": q.reciprocal().square().float(),
            "amp": amp.float(),
        }

    def _audio(self, ctl: dict[str, Tensor], first: list[int]) -> Tensor:
        """The audio of the items of :meth:`_controls`: ``(B, T)``.

        Args:
            ctl: :meth:`_controls` of the items (or a block of them).
            first: Voice ``k`` runs on items ``first[k]:`` (sorted by voice count).
        """
        b, n = len(ctl["noise_gain"]), self.probe.num_samples
        local = self._local(ctl["segments"])  # (B, 2, hop, S)
        # Segment-major like the voices: (B, hop, S).
        mix = ctl["noise_gain"].view(b, 1, 1) * self._noise
        for k in range(MAX_UNISON):
            lo = first[k]
            if lo >= b:
                break
            ratio = ctl["voice_ratio"][lo:, k].view(-1, 1, 1)
            # Voice k runs at r_k = 1 + d_k times its oscillator: phase = frac(r_k * cycles),
            # cycles = whole + local with whole an integer per segment (float64) and local
            # small (float32), so phase = frac(frac(d_k * whole) + r_k * local). The inner
            # frac rounds down (d_k < 0 detunes down), as wavetable_read needs phases >= 0.
            offset = ctl["whole"][lo:] * (ratio - 1.0) + VOICE_PHASE[k]
            offset = (offset - offset.floor()) * TABLE_SIZE
            phase = torch.addcmul(offset.float().unsqueeze(-2), local[lo:],
                                  ratio.float().unsqueeze(-1))
            wave = wavetable_read(ctl["values"][lo:], ctl["slopes"][lo:], phase)
            weight = ctl["voice_weight"][lo:, :, k, None, None]
            mix[lo:].addcmul_(wave[:, 0], weight[:, 0]).addcmul_(wave[:, 1], weight[:, 1])
        mix = mix.transpose(1, 2).reshape(b, -1)[:, :n]
        audio = self._filter(mix, ctl["inv_cutoff2"], ctl["inv_q2"])
        return audio.mul_(to_audio_rate(ctl["amp"], n)).clamp_(-1.0, 1.0)

    def _integrate(self, rate: Tensor) -> tuple[Tensor, Tensor]:
        """Running sum of a per-sample rate given at control points, linear in between.

        Within a control segment the running sum of a linear ramp is a quadratic in the sample
        offset, so it is evaluated in closed form: whole cycles at segment starts are summed in
        float64 over the few control points, and only the small in-segment part is computed
        at audio rate (:meth:`_local`), in float32, so long notes lose no precision.

        Args:
            rate: ``(..., C)`` cycles per sample at the control points of :func:`control_times`.

        Returns:
            ``(whole, segments)``: ``(..., S)`` float64 whole cycles at the start of each of
            the ``S = C - 1`` segments, and ``(..., 3, S)`` float32 for :meth:`_local`: the
            fractional cycle at each segment's start, the rate there and its change per sample
            times ``hop``, all in table steps (cycles times ``TABLE_SIZE``; scaling by a power
            of two is exact).
        """
        rate = rate.double()
        start, step = rate[..., :-1], rate[..., 1:] - rate[..., :-1]
        # Sum of the rate over a whole segment: hop * start + step * (hop - 1) / 2.
        seg = CONTROL_HOP * start + step * ((CONTROL_HOP - 1) / 2.0)
        before = torch.cumsum(seg, -1) - seg
        whole = torch.floor(before)
        segments = torch.stack([before - whole, start, step], -2) * TABLE_SIZE
        return whole, segments.float()

    def _local(self, segments: Tensor) -> Tensor:
        """Phase since each segment's start, at audio rate: ``(..., CONTROL_HOP, S)``.

        Segment-major: the phase at sample ``s * hop + j``, in table steps, is at ``[j, s]``,
        plus ``whole[s] * TABLE_SIZE`` from :meth:`_integrate`.

        Args:
            segments: ``(..., 3, S)`` from :meth:`_integrate`.
        """
        frac, start, step = segments.unsqueeze(-2).unbind(-3)
        j, tri = self._offsets  # sample offsets 0..hop-1 and j (j - 1) / (2 hop)
        return torch.addcmul(frac, start, j).addcmul_(step, tri)

    def _wavetables(self, shape: Tensor, highest_hz: Tensor) -> tuple[Tensor, Tensor]:
        """Band-limited tables of the morphed shapes, for :func:`wavetable_read`.

        Args:
            shape: ``(B, O)`` shape morph (0 sine .. 3 square) per oscillator.
            highest_hz: ``(B, O)`` highest frequency each oscillator plays; harmonics that
                would exceed Nyquist there are removed, so nothing aliases.

        Returns:
            ``(values, slopes)``, both ``(B, O, TABLE_SIZE)``: one period, and the step from
            each sample to the next (wrapping around).
        """
        weights = [torch.relu(1.0 - (shape - j).abs()).unsqueeze(-1) for j in range(len(SHAPES))]
        series = weights[0] * self._series[0]
        for j in range(1, len(SHAPES)):
            series = series + weights[j] * self._series[j]
        nyquist = 0.5 * self.probe.sample_rate
        series = series * (self._harmonic * highest_hz.unsqueeze(-1) < nyquist)
        # irfft of -i * a_k * N / 2 gives sum_k a_k sin(2 pi k n / N).
        spectrum = torch.complex(torch.zeros_like(series), -series * (TABLE_SIZE / 2))
        table = torch.fft.irfft(spectrum, n=TABLE_SIZE)
        return table, table.roll(-1, -1) - table

    def _filter(self, audio: Tensor, inv_cutoff2: Tensor, inv_q2: Tensor) -> Tensor:
        """24 dB/oct low-pass (a resonant 2-pole times a Butterworth 2-pole), per STFT frame.

        Args:
            audio: ``(B, T)``.
            inv_cutoff2: ``(B, frames)`` one over the squared cutoff (Hz) in each frame.
            inv_q2: ``(B,)`` one over the squared Q.
        """
        r2 = self._bin_hz2 * inv_cutoff2.unsqueeze(2)  # (B, frames, bins): (f / fc)^2
        # |H|^2 of a resonant 2-pole, (1 - r^2)^2 + r^2 / Q^2, times a Butterworth's 1 + r^4.
        resonant = (1.0 - r2).square_().addcmul_(r2, inv_q2.view(-1, 1, 1))
        response = resonant.mul_(r2.square().add_(1.0)).rsqrt_()
        spectra = stft_frames(audio, FILTER_HOP, self._window)
        # On real and imaginary parts: a complex-by-real product would first copy the
        # response into a complex tensor.
        torch.view_as_real(spectra).mul_(response.unsqueeze(-1))
        return overlap_add(spectra, FILTER_HOP, self._window, self.probe.num_samples)
