"""The ``synthmatch`` command: match your sounds, render presets, list the synths, serve the app.

    synthmatch match my_sound.wav                     # the default synth and its shipped prior
    synthmatch match a.wav b.flac --synth fm --budget 300 --out matches
    synthmatch match pad.wav --synth vst3 --plugin /path/Dexed.vst3
    synthmatch render matches/my_sound/preset.json --out sound.wav
    synthmatch synths                                 # backends and their parameters
    synthmatch serve --port 8000                      # the local web app

A user's mistake is one line on stderr and exit code 2; nothing is half-written.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from synthmatch.cli import USER_ERRORS, fail

PROG = "synthmatch"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``synthmatch: error: ...``, exit code 2)."""

    def error(self, message: str):
        fail(self.prog, f"{message} (see {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    from synthmatch.app.match import DEFAULT_BUDGET, MATCH_METHODS, SYNTHS

    parser = _Parser(prog=PROG, description=(
        "Find synthesizer presets that sound like your sounds."))
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    match = sub.add_parser("match", help="match sound files with a synth",
                           description="Match sound files (WAV, FLAC, OGG, AIFF; any rate, mono "
                           "or stereo) with a synth. Writes, per target, OUT/<name>/: "
                           "preset.json, match.wav, target.wav and report.html.")
    match.add_argument("targets", nargs="+", metavar="TARGET", help="sound files to match")
    match.add_argument("--synth", default="subtractive", choices=SYNTHS,
                       help="synth to match with (default: subtractive)")
    match.add_argument("--plugin", help="VST3 instrument (with --synth vst3)")
    match.add_argument("--method", default="auto", choices=("auto", *MATCH_METHODS),
                       help="search method; auto: the leaderboard's best for the synth and "
                       "budget on its own sounds (default); for sounds of other instruments "
                       "prior-rlft+gate+gradient-patience was best at 100 renders")
    match.add_argument("--budget", type=int, default=DEFAULT_BUDGET,
                       help=f"renders per target (default: {DEFAULT_BUDGET})")
    match.add_argument("--note", default=None, help="MIDI note the synth plays, or auto "
                       "(estimated from each target); default: the synth's probe note (60)")
    match.add_argument("--prior", help="a prior checkpoint to use instead of the shipped one")
    match.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    match.add_argument("--seed", type=int, default=0, help="seed of the search (default: 0)")
    match.add_argument("--threads", type=int, default=1,
                       help="CPU threads for torch (default: 1; a match's batches are small, "
                       "and on a busy machine extra threads that wait for a core slowed a match "
                       "from 23 s to 162 s)")
    match.add_argument("--out", default="matches", help="output folder (default: matches)")
    match.add_argument("--no-progress", action="store_true", help="no progress bar")
    render = sub.add_parser("render", help="render a preset file to a WAV file")
    render.add_argument("preset", help="a preset.json written by synthmatch")
    render.add_argument("--out", required=True, help="the WAV file to write")
    render.add_argument("--plugin", help="the VST3 instrument, for a vst3 preset")
    sub.add_parser("synths", help="list the synths and their parameters, with units")
    serve = sub.add_parser("serve", help="start the local web app")
    serve.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: 127.0.0.1, this machine only)")
    return parser


def safe_name(path: str) -> str:
    """A folder name from a file name: its stem with unusual characters replaced."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).stem).strip("._") or "target"


def cmd_match(args: argparse.Namespace) -> None:
    from synthmatch.app.match import Matcher, MatchSettings
    from synthmatch.app.report import index_html, write_match
    from synthmatch.app.targets import pitch_of, prepare, read_audio

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    import torch

    torch.set_num_threads(args.threads)
    names: list[str] = []
    for t in args.targets:  # same-named files from different folders get -2, -3...
        name, k = safe_name(t), 2
        while name in names:
            name, k = f"{safe_name(t)}-{k}", k + 1
        names.append(name)
    settings = MatchSettings(synth=args.synth, method=args.method, budget=args.budget,
                             note=args.note, device=args.device, plugin=args.plugin,
                             prior=args.prior, seed=args.seed)
    matcher = Matcher(settings, log=lambda m: print(m, file=sys.stderr))
    fixed = matcher.note_for(args.note)
    synth = matcher.base
    if args.note != "auto":  # refuse a method that cannot run before reading any file
        matcher.method_for(matcher.synth_at(None if fixed in (None, matcher.default_note)
                                            else fixed))
    targets = []
    for path, name in zip(args.targets, names, strict=True):
        audio, rate = read_audio(path)
        note = fixed if fixed is not None else matcher.default_note
        pitch_message = None
        if args.note == "auto":
            note, pitch_message = pitch_of(audio.mean(axis=1), rate, matcher.default_note)
        target = prepare(audio, rate, name=name, source=str(path),
                         sample_rate=synth.sample_rate, num_samples=synth.num_samples,
                         midi_pitch=note)
        if pitch_message:
            target.messages.append(pitch_message)
        for message in target.messages:
            print(f"{name}: {message}", file=sys.stderr)
        targets.append(target)

    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=settings.budget * len(targets), unit="render", desc="matching")

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.update(done - bar.n)

    try:
        matches = matcher.match(targets, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    entries = []
    for m in matches:
        folder = write_match(m, matcher.synth_at(m.target.midi_pitch
                                                 if m.target.midi_pitch != matcher.default_note
                                                 else None), out / m.target.name)
        entries.append((m.target.name, m))
        print(f"{m.target.name}: distance {m.distance:.3f} (MSS {m.mss:.2f} dB) with "
              f"{m.method}, {m.renders} renders, {m.seconds:.1f} s -> {folder}/report.html")
    if len(matches) > 1:
        index = out / "index.html"
        tmp = index.with_name(".index.html.tmp")
        tmp.write_text(index_html(entries), encoding="utf-8")
        os.replace(tmp, index)
        print(f"index of the {len(matches)} reports: {index}")


def cmd_render(args: argparse.Namespace) -> None:
    from synthmatch.app.report import wav_bytes
    from synthmatch.synths import ProbeNote, make_synth
    from synthmatch.synths.presets import PresetError, load_preset

    path = Path(args.preset)
    if not path.is_file():
        raise FileNotFoundError(f"no preset at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError(f"{path} is not a synthmatch preset (JSON)") from None
    if not isinstance(data, dict) or "synth" not in data:
        raise ValueError(f"{path} is not a synthmatch preset (no 'synth' field)")
    kwargs = {}
    if isinstance(data.get("probe"), dict):
        try:
            kwargs["probe"] = ProbeNote(**data["probe"])
        except (TypeError, ValueError) as err:
            raise PresetError(f"{path}: 'probe' is invalid: {err}") from None
    if data["synth"] == "vst3":
        if not args.plugin:
            raise ValueError("this is a VST3 preset: give --plugin PATH")
        kwargs["plugin_path"] = args.plugin
    try:
        synth = make_synth(str(data["synth"]), **kwargs)
    except KeyError:
        raise ValueError(f"{path}: unknown synth {data['synth']!r}") from None
    params = load_preset(path, synth)
    audio = synth.render(params[None])[0].detach().cpu().numpy()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(wav_bytes(audio, synth.sample_rate))
    os.replace(tmp, out)
    print(f"{out}: {audio.shape[0] / synth.sample_rate:.2f} s at {synth.sample_rate} Hz")


def cmd_synths(args: argparse.Namespace) -> None:
    from synthmatch.app.match import (
        SYNTHS,
        default_gate_path,
        default_prior_path,
        default_restart_policy_path,
    )
    from synthmatch.app.report import unit_of
    from synthmatch.synths import synth_class

    for name in SYNTHS:
        cls = synth_class(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        prior = "shipped prior" if default_prior_path(name) else "no shipped prior"
        extras = [what for what, path in (("gate", default_gate_path(name)),
                                          ("restart policy", default_restart_policy_path(name)))
                  if path]
        if extras:
            prior += ", " + " and ".join(extras)
        print(f"{name}: {doc} ({prior})")
        table = cls.fixed_params
        if table is None:
            print("  parameters: chosen when the synth is made (see --plugin and the docs)")
            continue
        for spec in table:
            unit = unit_of(spec.name)
            choices = f" choices {list(spec.choices)}" if spec.choices else ""
            print(f"  {spec.name}: {spec.min:g} to {spec.max:g}{' ' + unit if unit else ''} "
                  f"({spec.scale}{choices}) {spec.description}")


def cmd_serve(args: argparse.Namespace) -> None:
    from synthmatch.app.server import serve

    serve(host=args.host, port=args.port)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    command = {"match": cmd_match, "render": cmd_render, "synths": cmd_synths,
               "serve": cmd_serve}[args.command]
    try:
        command(args)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (synthmatch synths | head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (*USER_ERRORS, ImportError, RuntimeError) as err:
        if os.environ.get("SYNTHMATCH_DEBUG"):
            raise
        fail(PROG, err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
