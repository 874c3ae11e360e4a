"""The web app's API (synthmatch.app.server) through FastAPI's TestClient: a whole match from an
upload to the preset, the refusals of bad uploads and settings, one job per session, cancel."""

from __future__ import annotations

import importlib.util
import io
import struct
import time

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
soundfile = pytest.importorskip("soundfile")
if importlib.util.find_spec("httpx2") is None:  # what starlette's TestClient speaks through
    pytest.importorskip("httpx", reason="the TestClient needs httpx2 (or httpx)")

from fastapi.testclient import TestClient  # noqa: E402

from synthmatch.app.server import COOKIE, create_app  # noqa: E402
from synthmatch.synths import ProbeNote, make_synth  # noqa: E402
from synthmatch.synths.presets import preset_from_dict  # noqa: E402
from tests.conftest import peak_frequency  # noqa: E402

C4_HZ = 261.63  # MIDI 60, the probe note


def wav(seconds: float = 1.2, rate: int = 22050, hz: float = C4_HZ, amplitude: float = 0.5,
        channels: int = 2) -> bytes:
    """A decaying tone as a 16-bit WAV file."""
    t = np.arange(int(seconds * rate)) / rate
    tone = amplitude * np.sin(2 * np.pi * hz * t) * np.exp(-2.0 * t)
    buffer = io.BytesIO()
    soundfile.write(buffer, np.repeat(tone[:, None], channels, axis=1), rate, format="WAV",
                    subtype="PCM_16")
    return buffer.getvalue()


def upload(client: TestClient, data: bytes, name: str = "tone.wav", **form):
    fields = {"synth": "subtractive", "method": "auto", "budget": "16", **form}
    return client.post("/api/jobs", files={"file": (name, data, "audio/wav")}, data=fields)


def wait(client: TestClient, seconds: float = 30.0) -> dict:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        job = client.get("/api/job").json()["job"]
        if job["status"] != "running":
            return job
        time.sleep(0.05)
    raise AssertionError(f"the job is still running after {seconds} s: {job}")


@pytest.fixture
def app():
    return create_app(max_upload_bytes=200_000, max_sessions=2)


@pytest.fixture
def client(app):
    with TestClient(app) as client:
        yield client


def test_page_options_and_session_cookie(client):
    page = client.get("/")
    assert page.status_code == 200
    assert 'type="file"' in page.text and "/static/app.js" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    cookie = page.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    for asset in ("app.js", "style.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    options = client.get("/api/options").json()
    assert {"subtractive", "fm", "torchsynth"} <= set(options["synths"])
    assert "vst3" not in options["synths"] and "plugin" in options["unavailable"]["vst3"]
    # Priors ship for the subtractive, FM and torchsynth synths; restart policies for the
    # first two only. Vital has neither a prior nor gradients.
    assert "prior+gradient" in options["methods"]["subtractive"]
    assert "prior+gradient+rl" in options["methods"]["fm"]
    assert {"prior+cmaes", "gradient"} <= set(options["methods"]["torchsynth"])
    assert "prior+gradient+rl" not in options["methods"]["torchsynth"]
    if "vital" in options["synths"]:
        assert not any(m.startswith("prior") or "gradient" in m
                       for m in options["methods"]["vital"])
    assert options["max_upload_bytes"] == 200_000


def test_match_listen_adjust_download(client):
    started = upload(client, wav(), name="../../etc/my tone.wav")
    assert started.status_code == 200, started.text
    assert started.json()["total"] == 16
    job = wait(client)
    assert job["status"] == "done", job
    result, base = job["result"], f"/api/jobs/{job['id']}"
    synth = make_synth("subtractive")
    assert result["name"] == "my_tone"  # the client's path is shown sanitised, never used
    assert result["renders"] == 16 and result["synth"] == "subtractive" and result["note"] == 60
    assert [r["name"] for r in result["parameters"]] == list(synth.params.names)
    assert any("mixed 2 channels" in m for m in job["messages"])
    assert any("resampled from 22050 Hz to 16000 Hz" in m for m in job["messages"])

    target, rate = soundfile.read(io.BytesIO(client.get(f"{base}/target.wav").content))
    assert rate == synth.sample_rate and target.shape == (synth.num_samples,)
    assert peak_frequency(torch.from_numpy(target), rate) == pytest.approx(C4_HZ, abs=2.0)

    matched = torch.tensor(result["params"])
    with torch.no_grad():
        expected = synth.render(matched[None])[0].numpy()
    heard, _ = soundfile.read(io.BytesIO(client.get(f"{base}/match.wav").content))
    np.testing.assert_allclose(heard, expected, atol=2 / 32767)

    png = client.get(f"{base}/spectrogram.png").content
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (960, 256)
    report = client.get(f"{base}/report.html").text
    assert "Match of my_tone" in report and report.count("<audio") == 2

    # Unchanged parameters evaluate to the match's own distance.
    same = client.get(f"{base}/evaluate").json()
    assert same["distance"] == pytest.approx(result["distance"], rel=1e-5)

    # A slider moved: the cutoff closed down re-renders a darker, different sound.
    cutoff = synth.params.index("cutoff_hz")
    edited = matched.clone()
    edited[cutoff] = 0.0
    query = {"params": ",".join(f"{v:.9g}" for v in edited.tolist())}
    heard_edit, _ = soundfile.read(io.BytesIO(
        client.get(f"{base}/match.wav", params=query).content))
    with torch.no_grad():
        expected_edit = synth.render(edited[None])[0].numpy()
    np.testing.assert_allclose(heard_edit, expected_edit, atol=2 / 32767)
    assert np.abs(heard_edit - heard).max() > 0.01
    evaluated = client.get(f"{base}/evaluate", params=query).json()
    assert evaluated["parameters"][cutoff]["value"] == pytest.approx(synth.params[cutoff].min)
    assert evaluated["distance"] != pytest.approx(result["distance"], rel=1e-3)
    assert "adjusted in the web app" in client.get(f"{base}/report.html", params=query).text

    download = client.get(f"{base}/preset.json", params=query)
    assert download.headers["content-disposition"] == 'attachment; filename="my_tone.preset.json"'
    loaded = preset_from_dict(download.json(), synth.params, "subtractive")
    torch.testing.assert_close(loaded, synth.params.quantize(edited[None])[0], atol=1e-5,
                               rtol=0)

    for bad, why in (("0.5,0.5", "expected 24 values"), ("a,b", "comma-separated numbers"),
                     (",".join(["1.5"] * 24), "[0, 1]"), (",".join(["nan"] * 24), "[0, 1]")):
        answer = client.get(f"{base}/match.wav", params={"params": bad})
        assert answer.status_code == 400 and why in answer.json()["error"]


def test_note_estimated_from_the_sound(client):
    assert upload(client, wav(hz=440.0), note="auto").status_code == 200
    job = wait(client)
    assert job["status"] == "done", job
    assert job["result"]["note"] == 69  # A4
    assert "estimated pitch: MIDI 69" in job["messages"]
    # The shipped prior was trained at MIDI 60: auto falls back to a method without it.
    assert any("not using the prior" in m for m in job["messages"])
    assert not job["result"]["method"].startswith("prior")
    # The match plays at that note.
    heard, _ = soundfile.read(io.BytesIO(client.get(f"/api/jobs/{job['id']}/match.wav").content))
    synth = make_synth("subtractive", probe=ProbeNote(midi_pitch=69))
    with torch.no_grad():
        expected = synth.render(torch.tensor(job["result"]["params"])[None])[0].numpy()
    np.testing.assert_allclose(heard, expected, atol=2 / 32767)


@pytest.mark.parametrize("data, form, status, message", [
    (b"RIFF, but really a text file pretending to be a WAV", {}, 415, "not an audio file"),
    (b"", {}, 400, "empty"),
    (wav(seconds=2.5), {}, 413, "larger than"),  # read past the limit
    (wav(seconds=10.0), {}, 413, "larger than"),  # refused by its Content-Length
    (wav(amplitude=0.0), {}, 422, "silent"),
    (wav(), {"synth": "vst3"}, 400, "plugin path"),
    (wav(), {"synth": "organ"}, 400, "unknown synth"),
    (wav(), {"method": "magic"}, 422, "unknown method"),
    pytest.param(wav(), {"synth": "vital", "method": "prior"}, 422, "needs a prior",
                 marks=pytest.mark.skipif(importlib.util.find_spec("vita") is None,
                                          reason="needs the vital extra")),
    (wav(), {"budget": "0"}, 400, "budget must be"),
    (wav(), {"budget": "many"}, 422, "budget"),
], ids=["not-audio", "empty", "too-large", "too-large-header", "silent", "vst3",
        "unknown-synth", "unknown-method", "no-prior", "zero-budget", "budget-not-a-number"])
def test_bad_requests_are_refused_with_a_message(client, data, form, status, message):
    answer = upload(client, data, **form)
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]
    assert client.get("/api/job").json()["job"] is None


def test_cross_site_posts_are_refused(client):
    answer = client.post("/api/job/cancel", headers={"Origin": "http://elsewhere.example"})
    assert answer.status_code == 403 and "other sites" in answer.json()["error"]


def test_one_job_per_session_cancel_and_isolation(app, client):
    # CMA-ES records every generation, so a large budget runs long enough to be refused.
    assert upload(client, wav(), method="cmaes", budget="20000").status_code == 200
    second = upload(client, wav())
    assert second.status_code == 409 and "already running" in second.json()["error"]
    job_id = client.get("/api/job").json()["job"]["id"]
    other = TestClient(app)  # another browser: its own session, no access to ours
    assert other.get("/api/job").json()["job"] is None
    assert other.get(f"/api/jobs/{job_id}/target.wav").status_code == 404
    assert other.post("/api/job/cancel").status_code == 409
    assert client.post("/api/job/cancel").status_code == 200
    job = wait(client, 10.0)
    assert job["status"] == "cancelled" and 0 < job["done"] < 20000
    assert client.get(f"/api/jobs/{job_id}/match.wav").status_code == 409
    assert upload(client, wav(), method="default", budget="1").status_code == 200
    assert wait(client)["status"] == "done"


def test_sessions_are_bounded(app):
    clients = [TestClient(app) for _ in range(3)]
    for c in clients:
        assert upload(c, wav(), method="default", budget="1").status_code == 200
        assert wait(c)["status"] == "done"
    # max_sessions=2: the least recently used session is dropped.
    assert clients[0].get("/api/job").json()["job"] is None
    assert all(c.get("/api/job").json()["job"] is not None for c in clients[1:])
