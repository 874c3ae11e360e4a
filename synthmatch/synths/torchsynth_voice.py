"""torchsynth's ``Voice`` (synth1B1's synth) behind the synthmatch interface.

torchsynth is imported here and nowhere else: its import takes seconds and prints
``pkg_resources`` warnings.
"""

from __future__ import annotations

import re
import warnings
from collections import OrderedDict

import torch
from torch import Tensor

from synthmatch.devices import resolve_device
from synthmatch.synths.base import ProbeNote, Synth
from synthmatch.synths.params import ParamSpec, ParamTable

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torchsynth.config import SynthConfig
    from torchsynth.module import MonophonicKeyboard
    from torchsynth.parameter import ModuleParameter, ModuleParameterRange
    from torchsynth.synth import Voice

# The one column order of our table. torchsynth itself has three (get_parameters() sorts by
# module, forward() stacks in registration order, randomize() sorts named_parameters()); this is
# the registration order, i.e. torchsynth's forward() order without the keyboard.
_ADSR = ("attack", "decay", "sustain", "release", "alpha")
_LFO = ("frequency", "mod_depth", "initial_phase", "sin", "tri", "saw", "rsaw", "sqr")
_VCO = ("tuning", "mod_depth", "initial_phase")
_MOD_SOURCES = ("adsr_1", "adsr_2", "lfo_1", "lfo_2")
_MOD_TARGETS = ("vco_1_pitch", "vco_1_amp", "vco_2_pitch", "vco_2_amp", "noise_amp")
_ENVELOPES = ("adsr_1", "adsr_2")
_LFO_ENVELOPES = ("lfo_1_amp_adsr", "lfo_2_amp_adsr", "lfo_1_rate_adsr", "lfo_2_rate_adsr")

VOICE_KEYS: tuple[tuple[str, str], ...] = (
    *((m, n) for m in _ENVELOPES for n in _ADSR),
    *((m, n) for m in ("lfo_1", "lfo_2") for n in _LFO),
    *((m, n) for m in _LFO_ENVELOPES for n in _ADSR),
    *(("mod_matrix", f"{s}->{t}") for s in _MOD_SOURCES for t in _MOD_TARGETS),
    *(("vco_1", n) for n in _VCO),
    *(("vco_2", n) for n in (*_VCO, "shape")),
    *(("mixer", n) for n in ("vco_1", "vco_2", "noise")),
)
"""``(module, parameter)`` of every free parameter, in column order (76 of Voice's 78)."""

KEYBOARD_KEYS = (("keyboard", "midi_f0"), ("keyboard", "duration"))
"""Set from the :class:`ProbeNote` on every render, never free."""

# Unit suffixes read from torchsynth's descriptions ("attack time (sec)", "... in Hz").
# Phases carry no unit in their description; their range is [-pi, pi] and they are added to
# an oscillator's argument in radians.
_UNIT_RULES = (
    (re.compile(r"\(sec\)|in seconds"), "s"),
    (re.compile(r"\bin Hz\b"), "hz"),
    (re.compile(r"in semitones|in midi\b"), "semitones"),
    (re.compile(r"\bphase\b", re.IGNORECASE), "rad"),
)

# The init preset, in real units: a sine (vco_1) at the probe pitch under adsr_1, nothing else
# audible. Unlisted mod-matrix routes are 0; LFO-related values are inaudible until routed.
_ADSR_INIT = {"attack": 0.01, "decay": 0.2, "sustain": 0.7, "release": 0.2, "alpha": 1.0}
_INIT = {
    **{(m, n): v for m in (*_ENVELOPES, *_LFO_ENVELOPES) for n, v in _ADSR_INIT.items()},
    **{(m, n): v for m in ("lfo_1", "lfo_2") for n, v in
       {"frequency": 1.0, "mod_depth": 0.0, "initial_phase": 0.0, "sin": 1.0}.items()},
    **{(m, n): 0.0 for m in ("vco_1", "vco_2") for n in _VCO},
    ("vco_2", "shape"): 0.0,
    ("mod_matrix", "adsr_1->vco_1_amp"): 1.0,
    ("mod_matrix", "adsr_1->vco_2_amp"): 1.0,
    ("mixer", "vco_1"): 1.0,
}

MAX_CACHED_VOICES = 8
_NOTE_RANGE = next(r for r in MonophonicKeyboard.default_parameter_ranges if r.name == "duration")


def param_name(module: str, name: str, description: str | None) -> str:
    """Our unique, unit-suffixed name for torchsynth's ``(module, name)``.

    >>> param_name("adsr_1", "attack", "attack time (sec)")
    'adsr_1_attack_s'
    >>> param_name("mod_matrix", "lfo_1->vco_2_pitch", "Modulation lfo_1 to vco_2_pitch")
    'mod_matrix_lfo_1_to_vco_2_pitch'
    """
    base = f"{module}_{name.replace('->', '_to_')}"
    for pattern, unit in _UNIT_RULES:
        if pattern.search(description or ""):
            return f"{base}_{unit}"
    return base


def spec_from_range(module: str, rng: ModuleParameterRange) -> ParamSpec:
    """A :class:`ParamSpec` that converts exactly like torchsynth's ``from_0to1``."""
    lo, hi = float(rng.minimum), float(rng.maximum)
    curve = float(rng.curve)
    default = min(max(float(_INIT.get((module, rng.name), lo)), lo), hi)
    return ParamSpec(
        name=param_name(module, rng.name, rng.description),
        min=lo,
        max=hi,
        default=default,
        scale="linear" if curve == 1.0 and not rng.symmetric else "curve",
        curve=curve,
        symmetric=bool(rng.symmetric),
        description=f"torchsynth {module}.{rng.name}: {rng.description}",
    )


def voice_param_table(voice: Voice) -> ParamTable:
    """The :class:`ParamTable` of a torchsynth ``Voice`` (its nebula's curves), in VOICE_KEYS order.

    Raises:
        RuntimeError: the installed torchsynth has different parameters than VOICE_KEYS.
    """
    params = voice.get_parameters(include_frozen=True)
    expected = set(VOICE_KEYS) | set(KEYBOARD_KEYS)
    if set(params) != expected:
        raise RuntimeError(
            "torchsynth Voice parameters differ from synthmatch's VOICE_KEYS: "
            f"missing {sorted(expected - set(params))}, unexpected {sorted(set(params) - expected)}"
        )
    return ParamTable(spec_from_range(m, params[(m, n)].parameter_range) for m, n in VOICE_KEYS)


class TorchSynthVoice(Synth):
    """torchsynth 1.0.2's ``Voice``: 2 VCOs + noise, 6 ADSRs, 2 LFOs and a modulation matrix.

    The 76 free parameters are torchsynth's own, with torchsynth's ranges and curves (from the
    chosen nebula), renamed to unique names with units (``adsr_1_attack_s``,
    ``vco_1_tuning_semitones``, ``mod_matrix_adsr_1_to_vco_1_amp``...). Column ``j`` is
    ``VOICE_KEYS[j]``. The keyboard's ``midi_f0`` and ``duration`` come from the probe note on
    every render; the velocity is applied as an output gain (``probe.gain``), since the Voice has
    no velocity input. The Voice rescales any item that would clip to peak 1, so the output
    peak is at most ``probe.gain``.

    Differentiable: a batch that requires grad is rendered with autograd recording through the
    Voice (:class:`_VoiceRender`); any other runs under ``torch.inference_mode()``. torchsynth
    1.0.2 refuses ``SynthConfig(no_grad=False)`` ("gradients have not been explicitly tested"),
    but that flag only guards ``Voice.forward``, which this class never calls; the gradients of
    ``output()`` are checked against finite differences in ``tests/synths``. On random presets
    one of the 76 parameters, ``lfo_1_rate_adsr_decay``, got a zero gradient.

    Batching: a Voice has a fixed batch size, so one Voice per batch size is built on demand
    (10-45 ms) and cached (the last ``MAX_CACHED_VOICES``). Measured on 2 CPU threads, 16 kHz,
    1 s: exact-size Voices render B = 1 / 16 / 64 / 256 in 10 / 16 / 35 / 120 ms, padding to a
    fixed chunk of 64 in 32 / 32 / 35 / 126 ms, chunks of 16 in 15 / 16 / 57 / 244 ms.

    Batch independence: every slot shares one noise buffer (torchsynth draws one per slot), so
    identical parameters give identical noise wherever they sit. The audio is still not
    bit-identical across batch sizes: the modulation matrix is a batched matmul, and torch's CPU
    kernels (matmul, exp2) round differently for different batch shapes; the oscillator phase
    is a float32 cumulative sum that amplifies those ulps. Measured over 256 random presets,
    B=256 against B=1: median max-abs difference 8e-7, worst 2e-3 (relative L2 below 5e-4).
    Renders of the same batch are bit-identical.

    Args:
        probe: The note to play; ``note_duration_s`` must lie in torchsynth's 0.01-4 s.
        device: Torch device to render on.
        nebula: torchsynth hyper-parameter set giving the curves (``"default"`` or ``"drum"``).
        control_rate: Envelope/LFO rate in Hz; defaults to ``sample_rate / 100`` (torchsynth's
            441 Hz at 44.1 kHz).

    Example:
        >>> synth = TorchSynthVoice()
        >>> synth.render(synth.params.defaults(3)).shape
        torch.Size([3, 16000])
    """

    name = "torchsynth"
    differentiable = True
    batched = True

    def __init__(self, probe: ProbeNote | None = None, device: torch.device | str = "cpu",
                 *, nebula: str = "default", control_rate: int | None = None):
        probe = probe if probe is not None else ProbeNote()
        self.nebula = nebula
        self._control_rate = control_rate
        self._voices: OrderedDict[int, tuple[Voice, list[ModuleParameter]]] = OrderedDict()
        # Batches written so far, and the count at the last write into each batch size's Voice:
        # a backward pass checks that its Voice still holds the batch it recorded.
        self._writes = 0
        self._last_write: dict[int, int] = {}
        first = self._build_voice(1, probe)
        super().__init__(voice_param_table(first), probe, device)
        self._set_probe_state(first)

    def _set_probe_state(self, voice: Voice) -> None:
        """Cache what depends on the probe: the shared noise row and the keyboard values."""
        self._voices.clear()
        self._voices_probe = self.probe
        self._noise_row = voice.noise.noise[:1].to(self.device)
        params = voice.get_parameters(include_frozen=True)
        real = (float(self.probe.midi_pitch), float(self.probe.note_duration_s))
        normalized = [params[k].parameter_range.to_0to1(torch.tensor(x))
                      for k, x in zip(KEYBOARD_KEYS, real, strict=True)]
        self._keyboard = torch.stack(normalized).unsqueeze(-1).to(self.device)

    def _build_voice(self, batch_size: int, probe: ProbeNote,
                     device: torch.device | str = "cpu") -> Voice:
        if not _NOTE_RANGE.minimum <= probe.note_duration_s <= _NOTE_RANGE.maximum:
            raise ValueError(
                f"torchsynth's Voice needs note_duration_s in [{_NOTE_RANGE.minimum}, "
                f"{_NOTE_RANGE.maximum}] s, got {probe.note_duration_s}")
        control_rate = self._control_rate or max(1, round(probe.sample_rate / 100))
        config = SynthConfig(batch_size=batch_size, sample_rate=probe.sample_rate,
                             buffer_size_seconds=probe.render_duration_s,
                             control_rate=control_rate, reproducible=False)
        # Voice draws its initial parameters from the global RNG: building one lazily must not
        # shift the random stream of the caller (seeded training runs).
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            warnings.simplefilter("ignore")
            voice = Voice(config, nebula=self.nebula)
        if torch.device(device).type != "cpu":
            voice = voice.to(device)
            voice.on_post_move_to_device()
        return voice

    def _voice(self, batch_size: int) -> tuple[Voice, list[ModuleParameter]]:
        """The cached Voice for ``batch_size`` and its parameters (VOICE_KEYS, keyboard)."""
        if self._voices_probe != self.probe:
            self._set_probe_state(self._build_voice(1, self.probe))
        if batch_size in self._voices:
            self._voices.move_to_end(batch_size)
            return self._voices[batch_size]
        voice = self._build_voice(batch_size, self.probe, self.device)
        # One shared noise buffer: an item's noise does not depend on its batch slot.
        voice.noise.noise = self._noise_row.expand(batch_size, -1)
        params = voice.get_parameters(include_frozen=True)
        entry = (voice, [params[k] for k in (*VOICE_KEYS, *KEYBOARD_KEYS)])
        self._voices[batch_size] = entry
        while len(self._voices) > MAX_CACHED_VOICES:
            self._voices.popitem(last=False)
        return entry

    def _write(self, params: Tensor) -> tuple[Voice, list[ModuleParameter]]:
        """The Voice for this batch, its parameters set to ``params`` (and the keyboard)."""
        voice, slots = self._voice(params.shape[0])
        keyboard = self._keyboard.expand(-1, params.shape[0])
        columns = torch.cat([params.detach().t(), keyboard]).contiguous()
        for slot, column in zip(slots, columns, strict=True):
            slot.data = column
        self._writes += 1
        self._last_write[params.shape[0]] = self._writes
        return voice, slots

    def _render(self, params: Tensor) -> Tensor:
        if torch.is_grad_enabled() and params.requires_grad:
            audio = _VoiceRender.apply(params, self)
        else:
            voice, _ = self._write(params)
            with torch.inference_mode():
                audio = voice.output()
            # Outside inference mode: an ordinary tensor that autograd code can use.
            audio = audio.as_subclass(Tensor)
        return audio * self.probe.gain

    def to(self, device: torch.device | str) -> TorchSynthVoice:
        """Move to ``device``; Voices are rebuilt there on the next render."""
        self.device = resolve_device(device)
        self._voices.clear()
        self._noise_row = self._noise_row.to(self.device)
        self._keyboard = self._keyboard.to(self.device)
        return self


class _VoiceRender(torch.autograd.Function):
    """``Voice.output()`` as one autograd op of the ``(B, P)`` parameters.

    torchsynth reads its parameters from ``ModuleParameter`` leaves, so the forward pass writes
    the batch into them and records the Voice's graph from those leaves; the backward pass
    takes the gradient of the audio with respect to them. The graph refers to the cached
    Voice's leaves, which the next render of the same batch size overwrites: a backward pass
    after another render raises rather than return the other batch's gradient.
    """

    @staticmethod
    def forward(ctx, params: Tensor, synth: TorchSynthVoice) -> Tensor:
        voice, slots = synth._write(params)
        free = slots[:params.shape[1]]
        with torch.enable_grad():
            for slot in free:
                slot.requires_grad_(True)
            audio = voice.output()
        ctx.audio, ctx.free, ctx.synth, ctx.write = audio, free, synth, synth._writes
        ctx.batch_size = params.shape[0]
        return audio.detach()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        if ctx.synth._last_write.get(ctx.batch_size) != ctx.write:
            raise RuntimeError("torchsynth's Voice rendered another batch between this "
                               "render and its backward pass; call backward first")
        grads = torch.autograd.grad(ctx.audio, ctx.free, grad, allow_unused=True)
        columns = [torch.zeros_like(slot) if g is None else g
                   for slot, g in zip(ctx.free, grads, strict=True)]
        # The envelopes' curves raise a ramp that starts at 0 to the power ``alpha``, whose
        # derivative there is infinite or NaN: such components are set to zero.
        return torch.stack(columns, dim=1).nan_to_num(0.0, 0.0, 0.0), None
