"""The web app's matching jobs and browser sessions, framework-free: a job runs one match in a
background thread; sessions keep the latest job of each browser, bounded in number."""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from collections import OrderedDict

import numpy as np
import torch

from synthmatch.app.match import Cancelled, Match, Matcher
from synthmatch.app.report import parameter_rows
from synthmatch.app.targets import Target, pitch_of

log = logging.getLogger(__name__)


class AppError(Exception):
    """A request the app refuses: sent back as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class Job:
    """One match of one uploaded sound, run in a background thread."""

    matcher: Matcher
    target: Target
    mono: np.ndarray  # the upload's start, mono at its own rate, for the note estimate
    rate: int
    estimate_note: bool
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
    status: str = "running"  # running, done, failed, cancelled
    done: int = 0
    total: int = 0
    messages: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None
    match: Match | None = None
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    # One render at a time: torchsynth's modules hold the parameters they render.
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"match-{self.id}", daemon=True)
        self.thread.start()

    def _progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total

    def _run(self) -> None:
        try:
            if self.estimate_note:
                self.target.midi_pitch, message = pitch_of(self.mono, self.rate,
                                                            self.target.midi_pitch)
                self.messages.append(message)
            (self.match,) = self.matcher.match([self.target], progress=self._progress,
                                               cancel=self.cancel)
            self.status = "done"
        except Cancelled:
            self.status = "cancelled"
        except (ValueError, RuntimeError, ImportError) as err:
            self.error, self.status = str(err), "failed"
        except Exception as err:  # a bug: say so on the page, keep the server up
            log.exception("match %s failed", self.id)
            self.error, self.status = f"internal error: {type(err).__name__}: {err}", "failed"

    @property
    def synth(self):
        note = self.target.midi_pitch
        return self.matcher.synth_at(None if note == self.matcher.default_note else note)

    def params(self, text: str | None) -> torch.Tensor:
        """The match's parameters, or those of a ``?params=`` query ``(P,)`` (normalised)."""
        if self.match is None:
            raise AppError(409, f"the match is {self.status}, there is no result yet")
        if text is None:
            return self.match.params.float().cpu()
        size = len(self.synth.params)
        try:
            values = torch.tensor([float(v) for v in text.split(",")], dtype=torch.float32)
        except ValueError:
            raise AppError(400, "params: expected comma-separated numbers") from None
        if values.numel() != size:
            raise AppError(400, f"params: expected {size} values (one per parameter of "
                                f"{self.synth.name}), got {values.numel()}")
        if not bool(torch.all((values >= 0) & (values <= 1))):  # NaN fails too
            raise AppError(400, "params: normalised values must lie in [0, 1]")
        return values

    def audio(self, text: str | None) -> np.ndarray:
        """The match's sound ``(T,)``, or that of the parameters of a ``?params=`` query."""
        params = self.params(text)
        if text is None:
            return self.match.audio
        with self.lock:
            return self.matcher.render(params, self.target.midi_pitch)

    def rendered(self, text: str | None) -> Match:
        """The match, or a copy with the parameters of ``text`` rendered and measured."""
        params = self.params(text)  # refuses while there is no result
        if text is None:
            return self.match
        from synthmatch.leaderboard.metrics import mss_distance
        from synthmatch.rewards import PerceptualDistance

        synth, audio = self.synth, self.audio(text)
        with torch.no_grad():
            pair = torch.from_numpy(np.stack([audio, self.target.audio])).to(synth.device)
            distance = PerceptualDistance(synth.sample_rate).to(synth.device)
            distance = float(distance(pair[:1], pair[1:])[0])
        mss = float(mss_distance(audio[None], self.target.audio[None], synth.sample_rate)[0])
        return dataclasses.replace(self.match, params=params, audio=audio, distance=distance,
                                   mss=mss, messages=[*self.match.messages,
                                                      "parameters adjusted in the web app"])

    def summary(self) -> dict:
        state = {"id": self.id, "status": self.status, "done": self.done, "total": self.total,
                 "messages": self.target.messages + self.messages, "error": self.error}
        if self.match is not None:
            state["result"] = {**evaluation(self.match, self.synth), "name": self.target.name,
                               "params": self.match.params.float().cpu().tolist(),
                               "method": self.match.method, "renders": self.match.renders,
                               "seconds": self.match.seconds, "synth": self.synth.name,
                               "note": self.target.midi_pitch}
        return state


def evaluation(match: Match, synth) -> dict:
    """Distances and the parameter table (real values, units) of a match."""
    rows = parameter_rows(synth, match.params)
    for row, spec in zip(rows, synth.params, strict=True):
        row["choices"] = len(spec.choices) if spec.choices else 0
    return {"distance": match.distance, "mss": match.mss, "parameters": rows}


class Sessions:
    """Session id -> its latest job; the ``limit`` most recently used are kept."""

    def __init__(self, limit: int, max_running: int):
        self.limit, self.max_running = limit, max_running
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(session)
            if job is not None:
                self._jobs.move_to_end(session)
            return job

    def job(self, session: str, job_id: str) -> Job:
        job = self.get(session)
        if job is None or job.id != job_id:
            raise AppError(404, "no such match in this browser session (the app keeps the "
                                "latest match of each session): start a new one")
        return job

    def start(self, session: str, job: Job) -> None:
        with self._lock:
            old = self._jobs.get(session)
            if old is not None and old.status == "running":
                raise AppError(409, "a match is already running in this session: cancel it "
                                    "or wait for it to finish")
            running = sum(j.status == "running" for j in self._jobs.values())
            if running >= self.max_running:
                raise AppError(503, f"the server is busy with {running} matches; try again "
                                    "when one has finished")
            self._jobs[session] = job
            self._jobs.move_to_end(session)
            while len(self._jobs) > self.limit:
                _, dropped = self._jobs.popitem(last=False)
                dropped.cancel.set()
            job.start()

    def close(self) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel.set()
        for job in jobs:
            if job.thread is not None:
                job.thread.join(timeout=10)


