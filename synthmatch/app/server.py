"""The local web app behind ``synthmatch serve``: upload a sound, match it, listen, adjust the
preset with sliders, download it.

Endpoints (an error is JSON ``{"error": "..."}`` with a 4xx status):

    GET  /                             the page (synthmatch/app/static/)
    GET  /api/options                  the synths usable here, their methods, the limits
    POST /api/jobs                     multipart file, synth, method, budget, note: start a match
    GET  /api/job                      this session's job: status, progress, messages, result
    POST /api/job/cancel               cancel this session's running job
    GET  /api/jobs/{id}/target.wav     the target as matched (mono, resampled, trimmed)
    GET  /api/jobs/{id}/match.wav      the match; with ``?params=u1,u2,...`` (normalised, one
                                       per parameter) those parameters rendered instead
    GET  /api/jobs/{id}/evaluate       with ``?params=``: real values, units and distances
    GET  /api/jobs/{id}/spectrogram.png, report.html, preset.json   (``?params=`` as above)

Safety: an upload is read into memory (at most ``max_upload_bytes``; python-multipart may
spool a large one to an anonymous temporary file) and parsed by soundfile, whatever its name
says; the client's file name is only shown, sanitised, and never becomes a
path. A browser session is a random cookie holding one job; the server keeps the
``max_sessions`` most recently used and runs at most ``max_running`` matches at once. VST3 is
not offered: it needs a plugin path on the server (``synthmatch match --synth vst3 --plugin``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import logging
import secrets
import threading
import uuid
import warnings
from collections import OrderedDict
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import numpy as np
import torch

try:
    from fastapi import FastAPI, File, Form, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException
except ImportError as err:
    raise ImportError("the web app needs fastapi, uvicorn and python-multipart: pip install "
                      "'synthmatch[app]'") from err

from synthmatch.app.cli import safe_name
from synthmatch.app.match import (
    DEFAULT_BUDGET,
    MATCH_METHODS,
    Cancelled,
    Match,
    Matcher,
    MatchSettings,
    default_prior_path,
)
from synthmatch.app.report import parameter_rows, report_html, spectrogram_png, wav_bytes
from synthmatch.app.targets import FORMATS, Target, estimate_midi_pitch, prepare
from synthmatch.synths import synth_class
from synthmatch.synths.presets import preset_to_dict

log = logging.getLogger(__name__)

COOKIE = "synthmatch_session"
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_BUDGET = 20_000
# The synths the page offers; vital only where its optional dependency is installed.
WEB_SYNTHS = ("subtractive", "fm", "torchsynth", "vital")
STATIC = Path(str(resources.files("synthmatch.app") / "static"))
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Process-wide state: warnings.catch_warnings, and matplotlib's pyplot.
_warnings_lock, _plot_lock = threading.Lock(), threading.Lock()


class AppError(Exception):
    """A request the app refuses: sent back as ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def unavailable_synths() -> dict[str, str]:
    """Synths the page does not offer here, and why."""
    why = {"vst3": "needs a plugin path on the server: use synthmatch match --synth vst3 "
                   "--plugin PATH"}
    if importlib.util.find_spec("vita") is None:
        why["vital"] = "needs the vital extra: pip install 'synthmatch[vital]'"
    return why


def methods_for(synth: str) -> list[str]:
    """The methods the page offers for ``synth`` at its probe note (``auto`` first)."""
    differentiable = synth_class(synth).differentiable
    prior = default_prior_path(synth) is not None
    return ["auto"] + [m for m in MATCH_METHODS
                       if ("gradient" not in m or differentiable)
                       and (not m.startswith("prior") or prior)]


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
                note = estimate_midi_pitch(self.mono, self.rate)
                if note is None:
                    self.messages.append(f"no pitch found; playing the synth's note "
                                         f"{self.target.midi_pitch}")
                else:
                    self.target.midi_pitch = note
                    self.messages.append(f"estimated pitch: MIDI {note}")
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


def read_upload(upload: UploadFile, limit: int) -> tuple[np.ndarray, int]:
    """``(frames, channels)`` float32 samples and the rate of an uploaded audio file."""
    import soundfile

    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise AppError(413, f"the file is larger than {limit / 2**20:.0f} MB")
    if not data:
        raise AppError(400, "the file is empty")
    try:
        audio, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, TypeError, ValueError):
        raise AppError(415, f"this is not an audio file the app can read ({FORMATS})") from None
    if audio.shape[0] == 0:
        raise AppError(422, "the file holds no samples")
    return audio, int(rate)


def create_app(max_upload_bytes: int = MAX_UPLOAD_BYTES, max_sessions: int = 32,
               max_running: int = 2, allowed_hosts: tuple[str, ...] | None = None) -> FastAPI:
    """The web app.

    Args:
        max_upload_bytes: Largest accepted sound file.
        max_sessions: Browser sessions kept (the least recently used is dropped, its job
            cancelled).
        max_running: Matches run at once over all sessions.
        allowed_hosts: ``Host`` headers answered (against DNS rebinding); None: any.
    """
    sessions = Sessions(max_sessions, max_running)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        sessions.close()

    app = FastAPI(title="synthmatch", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.sessions = sessions
    if allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    @app.middleware("http")
    async def guard(request: Request, call_next):
        origin = request.headers.get("origin")
        if request.method == "POST" and origin and urlsplit(origin).netloc != \
                request.headers.get("host"):
            return JSONResponse({"error": "requests from other sites are refused"}, 403)
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_upload_bytes + 65536:
            return JSONResponse({"error": f"the file is larger than "
                                          f"{max_upload_bytes / 2**20:.0f} MB"}, 413)
        session = request.cookies.get(COOKIE, "")
        fresh = not (20 <= len(session) <= 64 and session.replace("-", "").replace("_", "")
                     .isalnum())
        request.state.session = secrets.token_urlsafe(24) if fresh else session
        response = await call_next(request)
        if fresh:
            response.set_cookie(COOKIE, request.state.session, httponly=True,
                                samesite="strict")
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
            "media-src 'self' data:")
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.exception_handler(AppError)
    async def app_error(_: Request, err: AppError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        message = "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in err.errors())
        return JSONResponse({"error": message}, 422)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail)}, err.status_code)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/options")
    def options() -> dict:
        unavailable = unavailable_synths()
        synths = [s for s in WEB_SYNTHS if s not in unavailable]
        return {"synths": synths, "methods": {s: methods_for(s) for s in synths},
                "unavailable": unavailable, "default_budget": DEFAULT_BUDGET,
                "max_budget": MAX_BUDGET, "max_upload_bytes": max_upload_bytes,
                "formats": FORMATS}

    @app.post("/api/jobs")
    def start(request: Request, file: Annotated[UploadFile, File()],
              synth: Annotated[str, Form()] = "subtractive",
              method: Annotated[str, Form()] = "auto",
              budget: Annotated[int, Form()] = DEFAULT_BUDGET,
              note: Annotated[str, Form()] = "default") -> dict:
        unavailable = unavailable_synths()
        if synth in unavailable:
            raise AppError(400, f"synth {synth}: {unavailable[synth]}")
        if synth not in WEB_SYNTHS:
            raise AppError(400, f"unknown synth {synth!r}; choose from "
                                f"{', '.join(s for s in WEB_SYNTHS if s not in unavailable)}")
        if not 1 <= budget <= MAX_BUDGET:
            raise AppError(400, f"budget must be 1 to {MAX_BUDGET} renders, got {budget}")
        name = safe_name(file.filename or "sound")
        audio, rate = read_upload(file, max_upload_bytes)
        messages: list[str] = []
        try:
            matcher = Matcher(MatchSettings(synth=synth, method=method, budget=budget),
                              log=messages.append)
            fixed = matcher.note_for(None if note == "default" else note)
            midi_pitch = matcher.default_note if fixed is None else fixed
            if note != "auto":  # refuse a method this synth cannot run before matching
                matcher.method_for(matcher.synth_at(fixed))
            base = matcher.base
            with _warnings_lock, warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                target = prepare(audio, rate, name=name, source=f"uploaded {name}",
                                 sample_rate=base.sample_rate, num_samples=base.num_samples,
                                 midi_pitch=midi_pitch)
        except ValueError as err:
            raise AppError(422, str(err)) from None
        target.messages += [str(w.message) for w in caught]
        # estimate_midi_pitch reads the first 2 s: keep no more of a long upload.
        job = Job(matcher, target, audio[: 2 * rate].mean(axis=1), rate, note == "auto",
                  messages=messages, total=budget)
        sessions.start(request.state.session, job)
        return job.summary()

    @app.get("/api/job")
    def status(request: Request) -> dict:
        job = sessions.get(request.state.session)
        return {"job": None if job is None else job.summary()}

    @app.post("/api/job/cancel")
    def cancel(request: Request) -> dict:
        job = sessions.get(request.state.session)
        if job is None or job.status != "running":
            raise AppError(409, "no match is running in this session")
        job.cancel.set()
        return {"id": job.id, "status": "cancelling"}

    @app.get("/api/jobs/{job_id}/target.wav")
    def target_wav(request: Request, job_id: str) -> Response:
        job = sessions.job(request.state.session, job_id)
        return Response(wav_bytes(job.target.audio, job.synth.sample_rate), media_type="audio/wav")

    @app.get("/api/jobs/{job_id}/match.wav")
    def match_wav(request: Request, job_id: str, params: str | None = None) -> Response:
        job = sessions.job(request.state.session, job_id)
        return Response(wav_bytes(job.audio(params), job.synth.sample_rate),
                        media_type="audio/wav")

    @app.get("/api/jobs/{job_id}/evaluate")
    def evaluate(request: Request, job_id: str, params: str | None = None) -> dict:
        job = sessions.job(request.state.session, job_id)
        return evaluation(job.rendered(params), job.synth)

    @app.get("/api/jobs/{job_id}/spectrogram.png")
    def spectrogram(request: Request, job_id: str, params: str | None = None) -> Response:
        job = sessions.job(request.state.session, job_id)
        match = job.rendered(params)
        with _plot_lock:
            png = spectrogram_png(job.target.audio, match.audio, job.synth.sample_rate)
        return Response(png, media_type="image/png")

    @app.get("/api/jobs/{job_id}/report.html")
    def report(request: Request, job_id: str, params: str | None = None) -> Response:
        job = sessions.job(request.state.session, job_id)
        return Response(report_html(job.rendered(params), job.synth), media_type="text/html")

    @app.get("/api/jobs/{job_id}/preset.json")
    def preset(request: Request, job_id: str, params: str | None = None) -> JSONResponse:
        job = sessions.job(request.state.session, job_id)
        data = preset_to_dict(job.synth, job.params(params), job.target.name)
        return JSONResponse(data, headers={
            "Content-Disposition": f'attachment; filename="{job.target.name}.preset.json"'})

    return app


def serve(host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the web app with uvicorn until Ctrl-C (``synthmatch serve``)."""
    import uvicorn

    local = host in LOOPBACK
    # Only names this machine answers to: a page elsewhere cannot rebind its own name here.
    names = ("127.0.0.1", "localhost")
    app = create_app(allowed_hosts=names if host in names else None)
    where = f"[{host}]" if ":" in host else host
    print(f"synthmatch: the web app is at http://{where}:{port}/ (Ctrl-C to stop)"
          + ("" if local else f"; listening on {host}: reachable from other machines"),
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
