"""Match a user's sounds with a synth: the job behind ``synthmatch match`` and the web app.

The search itself is the leaderboard's (:mod:`synthmatch.leaderboard.methods`): the same
methods, run under the same render meter, so what the command does is what the leaderboard
measured. ``--method auto`` picks, among the methods this install can run for the synth, the
one with the best median on the synth's in-domain leaderboard suite at the largest measured
budget not above the one asked for (:func:`shipped_rankings`).
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from synthmatch.app.targets import Target
from synthmatch.devices import resolve_device
from synthmatch.fileio import write_json_atomic
from synthmatch.leaderboard import report
from synthmatch.leaderboard.meter import RenderMeter
from synthmatch.leaderboard.methods import METHODS, MatchTask
from synthmatch.rewards import PerceptualDistance
from synthmatch.synths import ProbeNote, Synth, make_synth

SYNTHS = ("subtractive", "fm", "torchsynth", "vital", "vst3")
# Methods the gate shipped for a synth runs (between the shipped prior and its fine-tuning on
# real-instrument sounds, experiments/package_match.py), and the method its shipped restart
# policy runs.
GATE_METHODS = ("prior-rlft+gate", "prior-rlft+gate+gradient-patience")
POLICY_METHODS = ("prior+gradient+rl",)
# Methods the command runs (nearest, rl and prior+critic need a dataset, a policy or a
# critic: use the leaderboard script for those).
MATCH_METHODS = ("default", "random", "cmaes", "gradient", "prior", "prior+cmaes",
                 "prior+gradient", "prior+es", "prior+central", "prior+gradient-patience",
                 "prior+latent-es", "prior+latent-cmaes",
                 *POLICY_METHODS, *GATE_METHODS)
DEFAULT_BUDGET = 1000
# The trained priors that ship with the package (each for its synth at the default probe), and
# the gate and restart policies that ship with them (experiments/package_match.py).
DEFAULT_PRIORS = {"subtractive": "prior-subtractive.pt", "fm": "prior-fm.pt",
                  "torchsynth": "prior-torchsynth.pt"}
DEFAULT_GATES = {"subtractive": "gate-subtractive.pt"}
DEFAULT_RESTART_POLICIES = {"subtractive": "restarts-subtractive.pt", "fm": "restarts-fm.pt"}
# What ``--method auto`` ranks by: the leaderboard's methods best first, per measured budget,
# on a synth's in-domain suite, and for sounds of other instruments (as the shipped gate judges
# them) on its cross-synth suites pooled (the median over all their targets together).
# ``experiments/leaderboard.py --rankings`` writes them from the published results
# (docs/leaderboard/*.json) into the package, which does not ship docs/; tests/app/
# test_match.py checks the shipped file against those results.
LEADERBOARD_SUITES = {"subtractive": ("bench-v1/subtractive-id",), "fm": ("bench-v1/fm-id",),
                      "torchsynth": ("bench-v1/torchsynth-id",)}
LEADERBOARD_CROSS_SUITES = {"subtractive": ("bench-v1/cross-vst3", "bench-v1/cross-vital")}
RANKINGS = "rankings.json"
# Synths with no in-domain suite (real instruments): search without gradients.
NO_SUITE_ORDER = ["cmaes", "random", "default"]


class Cancelled(Exception):
    """The caller cancelled a match (the web app's cancel button)."""


@dataclass
class MatchSettings:
    """What to match with: see ``synthmatch match --help``."""

    synth: str = "subtractive"
    method: str = "auto"
    budget: int = DEFAULT_BUDGET
    note: int | str | None = None  # None: the synth's probe note; "auto": estimated
    device: str = "cpu"
    plugin: str | None = None
    prior: str | None = None  # another prior checkpoint than the shipped one
    seed: int = 0


@dataclass
class Match:
    """One target's result."""

    target: Target
    params: Tensor  # (P,) normalised
    audio: np.ndarray  # (T,) the match rendered
    distance: float  # the env's perceptual distance
    renders: int
    seconds: float
    method: str
    mss: float = float("nan")  # the leaderboard's MSS (dB)
    messages: list[str] = field(default_factory=list)


def _shipped(name: str | None) -> Path | None:
    if name is None:
        return None
    path = Path(str(resources.files("synthmatch.app") / "data" / name))
    return path if path.is_file() else None


def default_prior_path(synth: str) -> Path | None:
    """The prior shipped for ``synth``, or None."""
    return _shipped(DEFAULT_PRIORS.get(synth))


def default_gate_path(synth: str) -> Path | None:
    """The gate shipped for ``synth`` (it names the shipped prior and its fine-tuning), or
    None."""
    return _shipped(DEFAULT_GATES.get(synth))


def default_restart_policy_path(synth: str) -> Path | None:
    """The restart policy shipped for ``synth`` (it names the shipped prior), or None."""
    return _shipped(DEFAULT_RESTART_POLICIES.get(synth))


@dataclass(frozen=True)
class Rankings:
    """The leaderboard's order of methods: synth -> budget -> method names, best first."""

    own: dict[str, dict[int, list[str]]]  # on the synth's in-domain suite
    cross: dict[str, dict[int, list[str]]]  # on its cross-synth suites, for other instruments

    @classmethod
    def from_results(cls, results: Path) -> Rankings:
        """Rank from the leaderboard's results (``<suite>.json`` files) in ``results``."""
        return cls(*({synth: report.rank_methods(results, suites)
                      for synth, suites in table.items()}
                     for table in (LEADERBOARD_SUITES, LEADERBOARD_CROSS_SUITES)))

    def to_json(self) -> dict[str, Any]:
        return {"own": self.own, "cross": self.cross}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rankings:
        return cls(*({synth: {int(b): list(m) for b, m in by_budget.items()}
                      for synth, by_budget in data[key].items()} for key in ("own", "cross")))


def write_rankings(results: Path, path: Path) -> Rankings:
    """Write the rankings of the results in ``results`` to ``path`` (the package's
    ``data/rankings.json``), atomically."""
    rankings = Rankings.from_results(results)
    write_json_atomic(path, {"made_from": "experiments/leaderboard.py --rankings",
                             **rankings.to_json()})
    return rankings


@functools.cache
def shipped_rankings() -> Rankings:
    """The rankings that ship with the package (:func:`write_rankings`)."""
    path = _shipped(RANKINGS)
    if path is None:
        raise FileNotFoundError(f"synthmatch/app/data/{RANKINGS} is missing: reinstall "
                                "synthmatch")
    return Rankings.from_json(json.loads(path.read_text()))


def available_methods(synth: Synth | type[Synth], has_prior: bool, has_gate: bool = False,
                      has_policy: bool = False) -> list[str]:
    """The methods that can run on ``synth``: gradients need a differentiable synth, the
    prior's methods a prior that fits it, the gate's and the restart policy's methods a gate
    or policy that fits it."""
    return [m for m in MATCH_METHODS if (not METHODS[m].needs_gradients or synth.differentiable)
            and (not m.startswith("prior") or has_prior)
            and (m not in GATE_METHODS or has_gate)
            and (m not in POLICY_METHODS or has_policy)]


def choose_method(synth: Synth, budget: int, available: Sequence[str],
                  own_sound: bool = True) -> str:
    """The best method on the leaderboard for ``synth`` at ``budget`` among ``available``:
    on its in-domain suite, or for a sound of another instrument (``own_sound`` false) on
    its cross-synth suites where it has them."""
    rankings = shipped_rankings()
    table = rankings.own.get(synth.name)
    if not own_sound and synth.name in rankings.cross:
        table = rankings.cross[synth.name]
    if table is None:
        order = NO_SUITE_ORDER
    else:
        measured = [b for b in sorted(table) if b <= budget] or [min(table)]
        order = table[measured[-1]]
    for name in order:
        if name in available:
            return name
    return "cmaes" if "cmaes" in available else "default"


class ProgressMeter(RenderMeter):
    """The leaderboard's meter, reporting renders as they happen and honouring a cancel."""

    def __init__(self, *args, progress: Callable[[int, int], None] | None = None,
                 cancel: threading.Event | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.progress, self.cancel = progress, cancel

    def _record(self, flat: Tensor, owners: Tensor, d: Tensor, counts: Tensor) -> None:
        super()._record(flat, owners, d, counts)
        if self.progress is not None:
            self.progress(int(self.used.sum()), self.budget * self.num_targets)
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("cancelled")


class Matcher:
    """A synth, a method and a budget, ready to match targets.

    Raises:
        ValueError: unknown synth or method, a budget below the method's minimum, a device
            this machine lacks, a VST3 synth without ``plugin`` (or a plugin that is not an
            instrument), a prior method where no prior fits.
    """

    def __init__(self, settings: MatchSettings, log: Callable[[str], None] = print):
        self.settings, self.log = settings, log
        if settings.synth not in SYNTHS:
            raise ValueError(f"unknown synth {settings.synth!r}; choose from {', '.join(SYNTHS)}")
        if settings.method != "auto" and settings.method not in MATCH_METHODS:
            raise ValueError(f"unknown method {settings.method!r}; choose auto or one of "
                             f"{', '.join(MATCH_METHODS)}")
        if isinstance(settings.budget, bool) or settings.budget < 1:
            raise ValueError(f"budget must be >= 1 render, got {settings.budget}")
        if settings.synth == "vst3" and not settings.plugin:
            raise ValueError("--synth vst3 needs --plugin PATH (a VST3 instrument)")
        if settings.plugin and settings.synth != "vst3":
            raise ValueError("--plugin is only for --synth vst3")
        if settings.prior and not Path(settings.prior).is_file():
            raise FileNotFoundError(f"--prior: no prior checkpoint at {settings.prior}")
        self.device = resolve_device(settings.device)
        self._synths: dict[int, Synth] = {}
        self._methods: dict[tuple[int, bool], tuple[str, Any]] = {}
        self._fit: dict[tuple[str, int], bool] = {}
        self.base = self.synth_at(None)

    # ----------------------------------------------------------------------- synths
    def synth_at(self, midi_pitch: int | None) -> Synth:
        """The synth playing the probe at ``midi_pitch`` (None: its default note)."""
        key = -1 if midi_pitch is None else int(midi_pitch)
        if key not in self._synths:
            probe = None if midi_pitch is None else ProbeNote(midi_pitch=int(midi_pitch))
            kwargs: dict[str, Any] = {"device": self.device}
            if probe is not None:
                kwargs["probe"] = probe
            if self.settings.synth == "vst3":
                kwargs["plugin_path"] = self.settings.plugin
            self._synths[key] = make_synth(self.settings.synth, **kwargs)
        return self._synths[key]

    @property
    def default_note(self) -> int:
        return self.base.probe.midi_pitch

    def note_for(self, requested: int | str | None) -> int | None:
        """Validate a ``--note`` value: None, ``"auto"`` or a MIDI number."""
        if requested is None or requested == "auto":
            return None
        try:
            note = int(requested)
        except (TypeError, ValueError):
            raise ValueError(f"--note must be a MIDI note number (0-127) or auto, got "
                             f"{requested!r}") from None
        if not 0 <= note <= 127:
            raise ValueError(f"--note must be in 0..127, got {note}")
        return note

    # ----------------------------------------------------------------------- methods
    def prior_path(self, synth: Synth) -> Path | None:
        """The prior to use for ``synth`` (given, or shipped), if it fits its probe."""
        path = Path(self.settings.prior) if self.settings.prior else default_prior_path(
            synth.name)
        return path if path is not None and self._fits(path, synth, "prior") else None

    def gate_path(self, synth: Synth) -> Path | None:
        """The gate shipped for ``synth``, if its priors fit its probe; none with ``--prior``
        (the gate routes between the shipped priors, not the one given)."""
        path = None if self.settings.prior else default_gate_path(synth.name)
        return path if path is not None and self._fits(path, synth, "gate") else None

    def policy_path(self, synth: Synth) -> Path | None:
        """The restart policy shipped for ``synth``, if its prior fits its probe; none with
        ``--prior`` (it was trained on the shipped prior's samples)."""
        path = None if self.settings.prior else default_restart_policy_path(synth.name)
        return path if path is not None and self._fits(path, synth, "restart policy") else None

    def _fits(self, path: Path, synth: Synth, what: str) -> bool:
        """Whether the prior at ``path`` (or the one a gate or restart policy there names)
        fits ``synth`` and its probe note; judged, and any note logged, once per synth."""
        key = (str(path), id(synth))
        if key not in self._fit:
            self._fit[key] = self._judge_fit(path, synth, what)
        return self._fit[key]

    def _judge_fit(self, path: Path, synth: Synth, what: str) -> bool:
        from synthmatch.agents.matching import check_compatible
        from synthmatch.leaderboard.methods.prior import load_prior

        if what == "gate":  # judged by the synthetic-data prior it names
            path = METHODS[GATE_METHODS[0]](path, device=str(self.device)).base_path
        elif what == "restart policy":  # judged by the prior it was trained on
            path = METHODS[POLICY_METHODS[0]](path, device=str(self.device)).prior_path
        prior = load_prior(path, str(self.device))  # the method built from it reuses it
        probe = prior.config.data.get("probe", {})
        if probe and probe.get("midi_pitch") != synth.probe.midi_pitch:
            whose = {"prior": "prior was", "gate": "gate's priors were"}.get(
                what, f"{what}'s prior was")
            self.log(f"note: the {whose} trained at MIDI {probe.get('midi_pitch')}, the target "
                     f"plays at {synth.probe.midi_pitch}: not using the {what}")
            return False
        try:
            check_compatible(prior, synth)
        except ValueError as err:
            if self.settings.prior and what == "prior":
                raise ValueError(f"--prior {path}: {err}") from None
            return False
        return True

    def method_for(self, synth: Synth, own_sound: bool = True) -> tuple[str, Any]:
        """The method (name and instance) to run on ``synth`` (chosen once per synth), for
        sounds like its own or (``own_sound`` false) of other instruments."""
        key = (id(synth), own_sound)
        if key not in self._methods:
            self._methods[key] = self._method_for(synth, own_sound)
        return self._methods[key]

    def own_sounds(self, synth: Synth, audio: Tensor) -> Tensor | None:
        """``(N,)`` bool: which of ``audio`` ``(N, T)`` the shipped gate judges to be sounds
        of ``synth`` itself, when ``--method auto`` ranks methods for the two kinds apart
        (the synth has cross-synth suites and a gate that fits); else None."""
        if self.settings.method != "auto" or synth.name not in shipped_rankings().cross:
            return None
        path = self.gate_path(synth) if self.prior_path(synth) is not None else None
        if path is None:
            return None
        return METHODS[GATE_METHODS[0]](path, device=str(self.device)).judge(audio).cpu()

    def _method_for(self, synth: Synth, own_sound: bool = True) -> tuple[str, Any]:
        prior = self.prior_path(synth)
        gate = self.gate_path(synth) if prior is not None else None
        policy = self.policy_path(synth) if prior is not None else None
        available = available_methods(synth, prior is not None, gate is not None,
                                      policy is not None)
        name = self.settings.method
        if name == "auto":
            name = choose_method(synth, self.settings.budget, available, own_sound)
        elif name not in available:
            if METHODS[name].needs_gradients and not synth.differentiable:
                why = "needs a differentiable synth"
            elif name in GATE_METHODS and prior is not None:
                why = ("needs the gate shipped for this synth and note, which routes between "
                       "the shipped priors" + (" (drop --prior)" if self.settings.prior
                                               else ""))
            elif name in POLICY_METHODS and prior is not None:
                why = ("needs the restart policy shipped for this synth and note, trained on "
                       "the shipped prior" + (" (drop --prior)" if self.settings.prior else ""))
            else:
                why = "needs a prior for this synth and note (--prior PATH)"
            raise ValueError(f"--method {name} {why}")
        cls = METHODS[name]
        if name in GATE_METHODS:
            method = cls(gate, device=str(self.device))
        elif name in POLICY_METHODS:
            method = cls(policy, device=str(self.device))
        elif name.startswith("prior"):
            method = cls(prior, device=str(self.device))
        else:
            method = cls()
        if not method.supports(self.settings.budget):
            raise ValueError(f"--method {name} needs a budget of at least {method.min_budget} "
                             f"renders, got {self.settings.budget}")
        return name, method

    # ----------------------------------------------------------------------- matching
    def match(self, targets: Sequence[Target],
              progress: Callable[[int, int], None] | None = None,
              cancel: threading.Event | None = None) -> list[Match]:
        """Match every target, those at the same note as one batch.

        Raises:
            Cancelled: ``cancel`` was set.
        """
        from synthmatch.leaderboard.metrics import mss_distance

        results: dict[int, Match] = {}
        groups: dict[tuple[int, bool | None], list[int]] = {}  # None: not judged
        for note in dict.fromkeys(t.midi_pitch for t in targets):
            members = [i for i, t in enumerate(targets) if t.midi_pitch == note]
            synth = self.synth_at(None if note == self.default_note else note)
            own = self.own_sounds(synth, torch.from_numpy(np.stack(
                [targets[i].audio for i in members])))
            for j, i in enumerate(members):
                groups.setdefault((note, None if own is None else bool(own[j])), []).append(i)
        total = self.settings.budget * len(targets)
        done_before = 0
        for (note, own_sound), members in groups.items():
            synth = self.synth_at(None if note == self.default_note else note)
            name, method = self.method_for(synth, own_sound is not False)
            kind = {None: "", True: ", sounds like the synth's own as the gate judges",
                    False: ", sounds of another instrument as the gate judges"}[own_sound]
            self.log(f"matching {len(members)} target(s) at MIDI {note} with {name} "
                     f"({self.settings.budget} renders each{kind})")
            audio = torch.from_numpy(np.stack([targets[i].audio for i in members]))
            distance = PerceptualDistance(synth.sample_rate).to(synth.device)

            def report(used: int, _: int, base: int = done_before) -> None:
                if progress is not None:
                    progress(base + used, total)

            meter = ProgressMeter(synth, distance, audio, self.settings.budget,
                                  progress=report, cancel=cancel)
            start = time.perf_counter()
            presets = method.run(MatchTask(synth, meter, self.settings.seed))
            meter.check_rendered(presets)
            params, d, used, _ = meter.best(self.settings.budget)
            seconds = time.perf_counter() - start
            with torch.no_grad():
                rendered = synth.render(params).cpu().numpy()
            mss = mss_distance(rendered, audio.numpy(), synth.sample_rate)
            for j, i in enumerate(members):
                results[i] = Match(targets[i], params[j], rendered[j], float(d[j]),
                                   int(used[j]), seconds, name, float(mss[j]))
            done_before += self.settings.budget * len(members)
        if progress is not None:
            progress(total, total)
        return [results[i] for i in range(len(targets))]

    def render(self, params: Tensor, midi_pitch: int | None = None) -> np.ndarray:
        """One preset ``(P,)`` rendered at ``midi_pitch`` (default note when None)."""
        synth = self.synth_at(None if midi_pitch in (None, self.default_note) else midi_pitch)
        with torch.no_grad():
            return synth.render(params.reshape(1, -1).float())[0].cpu().numpy()
