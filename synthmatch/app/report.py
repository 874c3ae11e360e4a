"""What a match writes: the preset, both sounds and a self-contained listening report.

``report.html`` needs no server and no network: the two sounds are embedded as WAV data, the
spectrograms (target, match and their difference) as PNG images.
"""

from __future__ import annotations

import base64
import html
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthmatch.synths import Synth
from synthmatch.synths.presets import save_preset

# Unit of a parameter, from the suffix of its name (the ParamSpec naming rule).
UNITS = {"hz": "Hz", "s": "s", "db": "dB", "cents": "cents", "semitones": "semitones",
         "octaves": "octaves", "pct": "%", "ms": "ms"}


def unit_of(name: str) -> str:
    return UNITS.get(name.rsplit("_", 1)[-1].lower(), "") if "_" in name else ""


def wav_bytes(audio: np.ndarray, rate: int) -> bytes:
    """16-bit PCM WAV of ``(T,)`` float audio in [-1, 1]."""
    from scipy.io import wavfile

    buffer = io.BytesIO()
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    wavfile.write(buffer, rate, pcm)
    return buffer.getvalue()


def log_mel_db(audio: np.ndarray, rate: int) -> np.ndarray:
    from synthmatch.rewards.features import LogMelSpectrogram

    with torch.no_grad():
        return LogMelSpectrogram(rate)(torch.from_numpy(audio[None].astype(np.float32)))[0] \
            .numpy()


def spectrogram_png(target: np.ndarray, match: np.ndarray, rate: int) -> bytes:
    """Target, match and their difference (match minus target, dB), side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, b = log_mel_db(target, rate), log_mel_db(match, rate)
    duration = target.shape[0] / rate
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), constrained_layout=True)
    extent = (0.0, duration, 0, a.shape[0])
    for ax, data, title in ((axes[0], a, "target"), (axes[1], b, "match")):
        image = ax.imshow(data, origin="lower", aspect="auto", extent=extent, vmin=-100,
                          vmax=20, cmap="magma")
        ax.set(title=title, xlabel="time (s)", ylabel="mel band")
    fig.colorbar(image, ax=axes[:2], label="dB", shrink=0.9)
    diff = axes[2].imshow(b - a, origin="lower", aspect="auto", extent=extent, vmin=-40,
                          vmax=40, cmap="coolwarm")
    axes[2].set(title="match - target", xlabel="time (s)")
    fig.colorbar(diff, ax=axes[2], label="dB")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def parameter_rows(synth: Synth, params: torch.Tensor) -> list[dict[str, Any]]:
    """Name, real value, unit and normalised value of every parameter."""
    row = synth.params.quantize(params.reshape(1, -1).float().cpu())
    real = synth.params.to_real(row.double())[0]
    return [{"name": spec.name, "value": float(real[j]), "unit": unit_of(spec.name),
             "normalized": float(row[0, j]), "description": spec.description}
            for j, spec in enumerate(synth.params)]


def _data_uri(kind: str, content: bytes) -> str:
    return f"data:{kind};base64,{base64.b64encode(content).decode()}"


def report_html(match, synth: Synth) -> str:
    """The listening report of one :class:`~synthmatch.app.match.Match`."""
    rate = synth.sample_rate
    target, rendered = match.target.audio, match.audio
    esc = html.escape
    rows = "\n".join(
        f"<tr><td>{esc(r['name'])}</td><td class=n>{r['value']:.4g}</td>"
        f"<td>{esc(r['unit'])}</td><td class=n>{r['normalized']:.4f}</td>"
        f"<td>{esc(r['description'])}</td></tr>" for r in parameter_rows(synth, match.params))
    notes = "".join(f"<li>{esc(m)}</li>" for m in match.target.messages + match.messages)
    metrics = [("perceptual distance (the env's reward distance; success below 0.2)",
                f"{match.distance:.3f}"),
               ("multi-scale spectral distance (MSS, dB; the leaderboard's metric)",
                f"{match.mss:.2f}"),
               ("method", esc(match.method)), ("renders", str(match.renders)),
               ("time", f"{match.seconds:.1f} s"), ("synth", esc(synth.name)),
               ("probe note", f"MIDI {synth.probe.midi_pitch}, {synth.probe.render_duration_s}"
                              f" s at {rate} Hz")]
    metric_rows = "\n".join(f"<tr><td>{k}</td><td class=n>{v}</td></tr>" for k, v in metrics)
    target_uri = _data_uri("audio/wav", wav_bytes(target, rate))
    match_uri = _data_uri("audio/wav", wav_bytes(rendered, rate))
    picture_uri = _data_uri("image/png", spectrogram_png(target, rendered, rate))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>synthmatch: {esc(match.target.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 0.25em 0.8em; text-align: left; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
.players {{ display: flex; gap: 3em; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>Match of {esc(match.target.name)}</h1>
<p>Source: <code>{esc(match.target.source)}</code></p>
<div class="players">
<div><h2>Target</h2><audio id="target" controls src="{target_uri}"></audio></div>
<div><h2>Match</h2><audio id="match" controls src="{match_uri}"></audio></div>
</div>
<h2>Spectrograms</h2>
<img id="spectrograms" src="{picture_uri}"
 alt="log-mel spectrograms of the target, the match and their difference">
<h2>Metrics</h2><table>{metric_rows}</table>
{f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""}
<h2>Parameters</h2>
<table><tr><th>parameter</th><th>value</th><th>unit</th><th>normalised</th><th></th></tr>
{rows}</table>
</body></html>
"""


def index_html(entries: list[tuple[str, Any]]) -> str:
    """A page linking the reports of several targets: ``(folder name, match)`` pairs."""
    esc = html.escape
    rows = "\n".join(
        f'<tr><td><a href="{esc(folder)}/report.html">{esc(m.target.name)}</a></td>'
        f"<td>{m.distance:.3f}</td><td>{m.mss:.2f}</td><td>{esc(m.method)}</td>"
        f"<td>{m.renders}</td></tr>" for folder, m in entries)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>synthmatch matches</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 2em; }}
td, th {{ padding: 0.2em 0.8em; text-align: left; }}</style></head><body>
<h1>Matches</h1>
<table><tr><th>target</th><th>distance</th><th>MSS (dB)</th><th>method</th><th>renders</th></tr>
{rows}</table></body></html>
"""


def write_match(match, synth: Synth, folder: Path) -> Path:
    """Write ``preset.json`` (and the plugin's own preset file where there is one),
    ``match.wav``, ``target.wav`` and ``report.html`` into ``folder``, all or nothing: the
    files are written in a temporary sibling that replaces ``folder`` when complete."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; a result folder is not
    try:
        save_preset(staging / "preset.json", synth, match.params, match.target.name)
        if hasattr(synth, "save_plugin_state"):  # VST3: the .vstpreset a DAW opens
            synth.save_plugin_state(staging / "preset.vstpreset", match.params)
        if hasattr(synth, "save_vital_preset"):  # Vital's own .vital file
            synth.save_vital_preset(staging / "preset.vital", match.params)
        (staging / "match.wav").write_bytes(wav_bytes(match.audio, synth.sample_rate))
        (staging / "target.wav").write_bytes(wav_bytes(match.target.audio, synth.sample_rate))
        (staging / "report.html").write_text(report_html(match, synth), encoding="utf-8")
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
            os.replace(staging, folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder
