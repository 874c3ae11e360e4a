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

import importlib.util
import io
import logging
import secrets
import threading
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import numpy as np

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
from synthmatch.app.jobs import AppError, Job, Sessions, evaluation
from synthmatch.app.match import (
    DEFAULT_BUDGET,
    Matcher,
    MatchSettings,
    available_methods,
    default_gate_path,
    default_prior_path,
    default_restart_policy_path,
)
from synthmatch.app.report import report_html, spectrogram_png, wav_bytes
from synthmatch.app.targets import FORMATS, prepare
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
# matplotlib's pyplot is process-wide state: one spectrogram picture at a time.
_plot_lock = threading.Lock()


def unavailable_synths() -> dict[str, str]:
    """Synths the page does not offer here, and why."""
    why = {"vst3": "needs a plugin path on the server: use synthmatch match --synth vst3 "
                   "--plugin PATH"}
    if importlib.util.find_spec("vita") is None:
        why["vital"] = "needs the vital extra: pip install 'synthmatch[vital]'"
    return why


def methods_for(synth: str) -> list[str]:
    """The methods the page offers for ``synth`` at its probe note (``auto`` first)."""
    return ["auto", *available_methods(synth_class(synth), default_prior_path(synth) is not None,
                                       default_gate_path(synth) is not None,
                                       default_restart_policy_path(synth) is not None)]


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
            target = prepare(audio, rate, name=name, source=f"uploaded {name}",
                             sample_rate=base.sample_rate, num_samples=base.num_samples,
                             midi_pitch=midi_pitch)
        except ValueError as err:
            raise AppError(422, str(err)) from None
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
    import torch
    import uvicorn

    # Each match runs in its own thread with small batches: one torch thread apiece, so two
    # matches never fight over the cores (see synthmatch match --threads).
    torch.set_num_threads(1)
    local = host in LOOPBACK
    # Only names this machine answers to: a page elsewhere cannot rebind its own name here.
    names = ("127.0.0.1", "localhost")
    app = create_app(allowed_hosts=names if host in names else None)
    where = f"[{host}]" if ":" in host else host
    print(f"synthmatch: the web app is at http://{where}:{port}/ (Ctrl-C to stop)"
          + ("" if local else f"; listening on {host}: reachable from other machines"),
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
