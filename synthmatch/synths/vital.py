"""Vital (the wavetable synth) through ``vita``: a curated, declared subset of its 772 controls.

The optional dependency is imported lazily; install it with ``pip install "synthmatch[vital]"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from synthmatch.synths.base import ProbeNote, Synth
from synthmatch.synths.params import ParamTable
from synthmatch.synths.vital_controls import (
    CURATED_CONTROLS,
    NUM_ENVELOPES,
    base_patch_json,
    control_raw_range,
    control_spec,
    import_vita,
    normalized_value,
    resolve_controls,
)

# Flush before each item (see VitalSynth): one note that kills the previous voice (Vital fades a
# killed voice over ~60 ms) and lets parameter smoothing settle, then short notes that cycle the
# voices Vital rotates through. Counts found by measurement on vita 0.1.0: after 16 notes items
# still differ by ~1e-5, after 32 by up to 0.2 (a voice pool of 33), after 33 by one ulp.
FLUSH_S = 0.05
FLUSH_NOTES = 34
FLUSH_NOTE_S = 0.02
class _Engine:
    """One ``vita.Synth`` holding the base patch; used by one thread at a time."""

    def __init__(self, vita: Any, base_json: str, controls: Sequence[str], probe: ProbeNote):
        self.synth = vita.Synth()
        if not self.synth.load_json(base_json):
            raise RuntimeError("vita could not load the synthmatch base patch")
        self.synth.set_sample_rate(float(probe.sample_rate))
        handles = self.synth.get_controls()
        self.controls = [handles[n] for n in controls]
        # (min, span) for controls set raw, None for those set through set_normalized.
        self.raw_ranges = [control_raw_range(n, self.synth.get_control_details(n))
                           for n in controls]
        self.releases = [handles[f"env_{i}_release"] for i in range(1, NUM_ENVELOPES + 1)]
        self.probe = probe
        self.velocity = probe.velocity / 127.0
        # render() truncates render_dur * sample_rate; half a sample extra guards the rounding.
        self.render_s = (probe.num_samples + 0.5) / probe.sample_rate

    def set(self, row: np.ndarray) -> None:
        for control, raw_range, u in zip(self.controls, self.raw_ranges, row, strict=True):
            if raw_range is None:
                control.set_normalized(float(u))
            else:
                control.set(raw_range[0] + raw_range[1] * float(u))

    def render(self, row: np.ndarray) -> np.ndarray:
        """Mono ``(T,)`` float32 for one normalised row, independent of earlier renders."""
        p = self.probe
        self.set(row)
        # The flush note releases instantly: its voice is silent and every envelope is at 0 when
        # the real note starts (Vital retriggers an envelope from its current value).
        releases = [r.get_normalized() for r in self.releases]
        for r in self.releases:
            r.set_normalized(0.0)
        self.synth.render(p.midi_pitch, self.velocity, 0.01, FLUSH_S)
        for _ in range(FLUSH_NOTES):
            self.synth.render(p.midi_pitch, self.velocity, 0.005, FLUSH_NOTE_S)
        for r, u in zip(self.releases, releases, strict=True):
            r.set_normalized(u)
        audio = self.synth.render(p.midi_pitch, self.velocity, p.note_duration_s, self.render_s)
        return audio[:, : p.num_samples].mean(0, dtype=np.float32)


class VitalSynth(Synth):
    """Vital, the spectral warping wavetable synth, through the ``vita`` bindings.

    The base patch is Vital's init preset with two changes that make the curated controls
    meaningful: oscillators 1 and 2 get a two-frame wavetable that morphs from Vital's init saw
    (frame 0) to a sine (frame 256), and two modulations are connected (env 2 -> filter 1
    cutoff, LFO 1 -> osc 1 wave frame) with zero depth. Osc 2 is on at zero level, filter 1 is
    on and fully open, random oscillator phase is off. Parameters are set through Vital's own
    ``set_normalized`` (exponential controls raw, see :func:`sets_raw`); :attr:`params` converts
    them to the units Vital displays (:func:`control_spec`).

    Every item renders as: set its controls, flush, then the probe note. ``vita`` has no reset:
    each render kills the previous voice, which fades on into the next render; a voice that was
    killed keeps its envelope values and starts its next note from them; Vital rotates through
    a pool of voices. The flush plays, with every envelope release at 0, one 50 ms note (the
    previous voice dies, parameter smoothing settles) and 34 short notes that end naturally, so
    every voice in the pool holds zeroed envelopes. An item's audio is then a function of its
    parameters alone: bit-exact across renders, batch positions and threads (in a stress test
    95 of 96 items; the other differed by 4e-12). The flush costs about 1.3 times a 1 s probe
    render at 16 kHz. Effects are off in the base patch; their tails would not be flushed.

    Args:
        probe: The note to play; Vital renders at ``probe.sample_rate`` directly.
        device: Torch device of the returned audio (rendering is on CPU).
        controls: Vital control names (or table names such as ``filter_1_cutoff_hz``) to
            expose, in order; ``None`` for :data:`CURATED_CONTROLS`.
        threads: Number of ``vita.Synth`` instances rendering in parallel (``render`` releases
            the GIL); a batch is split into contiguous chunks, one per thread.

    Example:
        >>> synth = VitalSynth(threads=2)
        >>> synth.render(synth.params.defaults(4)).shape
        torch.Size([4, 16000])
    """

    name = "vital"
    differentiable = False
    batched = False

    def __init__(self, probe: ProbeNote | None = None, device: torch.device | str = "cpu",
                 controls: Sequence[str] | None = None, threads: int = 1):
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int, got {threads!r}")
        self._vita = import_vita()
        template = self._vita.Synth()
        self.base_json = base_patch_json(template)
        template.load_json(self.base_json)
        self.controls = resolve_controls(template, controls)
        handles = template.get_controls()
        table = ParamTable(
            control_spec(n, template.get_control_details(n), handles[n].value())
            for n in self.controls)
        super().__init__(table, probe, device)
        self.threads = threads
        self._engines = [_Engine(self._vita, self.base_json, self.controls, self.probe)
                         for _ in range(threads)]
        self._pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def _render(self, params: Tensor) -> Tensor:
        rows = params.detach().cpu().double().numpy()
        quantized = self.params.quantize(torch.from_numpy(rows)).numpy()
        out = np.empty((rows.shape[0], self.num_samples), dtype=np.float32)

        def work(k: int, idx: np.ndarray) -> None:
            for i in idx:
                out[i] = self._engines[k].render(quantized[i])

        chunks = np.array_split(np.arange(rows.shape[0]), len(self._engines))
        if self._pool is None:
            work(0, chunks[0])
        else:
            for future in [self._pool.submit(work, k, c) for k, c in enumerate(chunks)]:
                future.result()
        return torch.from_numpy(out).to(self.device)

    def _set_row(self, params: Tensor) -> Any:
        """Set one normalised row ``(P,)`` on the first engine; return its ``vita.Synth``."""
        row = self.params.quantize(self.params.validate(params.reshape(1, -1).cpu()))
        self._engines[0].set(row[0].double().numpy())
        return self._engines[0].synth

    def vital_text(self, params: Tensor) -> dict[str, str]:
        """What Vital displays for each selected control at one normalised row ``(P,)``."""
        vita_synth = self._set_row(params)
        return {n: vita_synth.get_control_text(n) for n in self.controls}

    def to_vital_json(self, params: Tensor) -> str:
        """One normalised row ``(P,)`` as a complete Vital preset (the ``.vital`` JSON)."""
        return self._set_row(params).to_json()

    def save_vital_preset(self, path: str | Path, params: Tensor) -> Path:
        """Write one normalised row ``(P,)`` as a ``.vital`` preset that Vital itself opens."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_vital_json(params))
        return path

    def params_from_vital_json(self, text: str) -> Tensor:
        """The selected controls of a Vital preset, normalised: ``(P,)`` on :attr:`device`.

        Only the selected controls are read: rendering the result uses the base patch for
        everything else (wavetables, modulations, effects), so a foreign preset sounds as close
        as those controls allow.

        Raises:
            ValueError: the text is not a preset that Vital can load.
        """
        scratch = self._vita.Synth()
        if not scratch.load_json(text):
            raise ValueError("not a Vital preset (or one from a newer Vital version)")
        u = torch.tensor([normalized_value(scratch, n) for n in self.controls],
                         dtype=torch.float64).clamp(0.0, 1.0)
        return self.params.quantize(u.unsqueeze(0))[0].float().to(self.device)

    def load_vital_preset(self, path: str | Path) -> Tensor:
        """Read a ``.vital`` file; see :meth:`params_from_vital_json`."""
        return self.params_from_vital_json(Path(path).read_text())

    def close(self) -> None:
        """Stop the worker threads (also done when the synth is garbage collected)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)


__all__ = ["CURATED_CONTROLS", "VitalSynth", "control_spec", "import_vita"]
