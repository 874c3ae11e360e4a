"""A user's sound file as a target: read, mixed to mono, resampled, trimmed or padded to the
probe, and optionally its pitch, each conversion reported in a message."""

from __future__ import annotations

import math
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from synthmatch.envs.targets import prepare_target_audio

# Formats read through soundfile (libsndfile); others are refused with this list.
FORMATS = "WAV, FLAC, OGG/Vorbis, AIFF"
# warnings.catch_warnings changes process-wide state: one preparation at a time records them.
_WARNINGS = threading.Lock()
# librosa's pitch tracker compiles numba gufuncs into a cache on disk at its first call in a
# process. Two processes compiling them at once can leave a mismatched pair of cache files,
# after which every pitch estimate segfaults (numba/numba#10128, open upstream). So each
# process's first call holds a lock that every process on the machine shares.
PYIN_LOCK = Path(tempfile.gettempdir()) / "synthmatch-librosa-pyin.lock"
_PYIN_FIRST = threading.Lock()
_pyin_compiled = False


@dataclass
class Target:
    """One sound to match, as the synth will hear it.

    Attributes:
        name: A file-system-safe name (the file's stem).
        audio: ``(T,)`` float32 mono at the synth's rate and length.
        source: Where it came from (a path, or a name given by the caller).
        messages: The conversions applied, for the user.
        midi_pitch: The note it is matched at.
    """

    name: str
    audio: np.ndarray
    source: str
    midi_pitch: int
    messages: list[str] = field(default_factory=list)


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """``(frames, channels)`` float32 samples and the rate of an audio file.

    Raises:
        FileNotFoundError: no file. ValueError: not audio soundfile can read.
    """
    try:
        import soundfile
    except ImportError as err:
        raise ImportError("reading audio files needs soundfile: pip install "
                          "'synthmatch[leaderboard]'") from err
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no audio file at {path}")
    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, TypeError, ValueError) as err:
        raise ValueError(f"{path} is not an audio file soundfile can read ({FORMATS}): "
                         f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") \
            from None
    if audio.shape[0] == 0:
        raise ValueError(f"{path} holds no samples")
    return audio, int(rate)


def _pyin(clip: np.ndarray, rate: int):
    """librosa's pyin from C1 to C7, its first call in this process under :data:`PYIN_LOCK`."""
    import librosa

    global _pyin_compiled

    def track():
        return librosa.pyin(clip, fmin=librosa.note_to_hz("C1"), fmax=librosa.note_to_hz("C7"),
                            sr=rate)

    if not _pyin_compiled:
        from filelock import FileLock

        with _PYIN_FIRST, FileLock(PYIN_LOCK, mode=0o666):  # any user's process
            result = track()
            _pyin_compiled = True
            return result
    return track()


def estimate_midi_pitch(mono: np.ndarray, rate: int) -> int | None:
    """The nearest MIDI note of the median pitch of a sound's voiced frames (librosa's pyin),
    or ``None`` when no frame is voiced."""
    clip = mono[: int(2.0 * rate)].astype(np.float32)  # the probe's length is about a second
    f0, voiced, _ = _pyin(clip, rate)
    f0 = f0[voiced & np.isfinite(f0)]
    if f0.size == 0:
        return None
    return int(np.clip(round(69 + 12 * math.log2(float(np.median(f0)) / 440.0)), 0, 127))


def pitch_of(mono: np.ndarray, rate: int, default: int) -> tuple[int, str]:
    """The note to play for a target (``--note auto``) and a message saying how it was found."""
    note = estimate_midi_pitch(mono, rate)
    if note is None:
        return default, f"no pitch found; playing the synth's note {default}"
    return note, f"estimated pitch: MIDI {note}"


def prepare(audio: np.ndarray, rate: int, *, name: str, source: str, sample_rate: int,
            num_samples: int, midi_pitch: int) -> Target:
    """A target from ``(frames, channels)`` samples, with a message for each conversion (and
    for each warning, e.g. clipping).

    Raises:
        ValueError: silent, NaN or otherwise unusable audio (see ``prepare_target_audio``).
    """
    messages = []
    frames, channels = audio.shape
    if channels > 1:
        messages.append(f"mixed {channels} channels to mono")
    if rate != sample_rate:
        messages.append(f"resampled from {rate} Hz to {sample_rate} Hz")
    length = frames / rate
    probe = num_samples / sample_rate
    if abs(length - probe) > 0.5 / sample_rate:
        verb = "trimmed" if length > probe else "padded with silence"
        messages.append(f"{verb} from {length:.2f} s to the probe's {probe:.2f} s")
    with _WARNINGS, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            mono = prepare_target_audio(audio.mean(axis=1), rate, target_rate=sample_rate,
                                        num_samples=num_samples)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
    messages += [str(w.message) for w in caught]
    return Target(name, mono.numpy(), source, midi_pitch, messages)
