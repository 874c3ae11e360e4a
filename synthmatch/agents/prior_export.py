"""ONNX export of a trained :class:`~synthmatch.agents.prior.FlowPrior`, and a sampler that
runs it with ONNX Runtime alone (no torch at inference).

Two graphs are written, because sampling calls the velocity network many times per target:

- ``encoder.onnx``: log-mel in dB ``(B, n_mels, frames)`` -> audio embedding ``(B, E)``
  (normalisation included);
- ``velocity.onnx``: ``x`` ``(B, P)``, ``t`` ``(B,)``, embedding ``(B, E)`` -> velocity ``(B, P)``;

plus ``prior.json`` with what the sampler needs (parameter names, discrete steps, mel settings,
sample rate). :class:`OnnxPrior` integrates the flow with the midpoint rule on a uniform grid,
the same fixed-step scheme as ``FlowPrior.sample(method="midpoint")``.

Needs ``pip install "synthmatch[onnx]"`` (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.export import Dim

from synthmatch.agents.prior import FlowPrior
from synthmatch.fileio import write_json_atomic

ENCODER_FILE, VELOCITY_FILE, CONFIG_FILE = "encoder.onnx", "velocity.onnx", "prior.json"
OPSET = 18


class _Encoder(nn.Module):
    def __init__(self, prior: FlowPrior):
        super().__init__()
        self.prior = prior

    def forward(self, mel_db: Tensor) -> Tensor:
        return self.prior.encoder(self.prior.normalize_mel(mel_db))


def export_onnx(prior: FlowPrior, out_dir: str | Path) -> Path:
    """Write ``encoder.onnx``, ``velocity.onnx`` and ``prior.json`` to ``out_dir``.

    Both graphs take any batch size. Returns ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prior = prior.to("cpu").eval()
    cfg = prior.config
    mel = torch.zeros(2, *cfg.mel_shape)
    x, t = torch.zeros(2, cfg.num_params), torch.zeros(2)
    emb = torch.zeros(2, cfg.embed_dim)
    batch = {0: Dim("batch")}
    common = dict(opset_version=OPSET, external_data=False, verbose=False)
    with torch.no_grad(), warnings.catch_warnings():
        # The exporter warns that the batch axes share one name, which is what is meant.
        warnings.filterwarnings("ignore", message=".*axis name", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)
        torch.onnx.export(_Encoder(prior).eval(), (mel,), str(out / ENCODER_FILE),
                          input_names=["mel_db"], output_names=["embedding"],
                          dynamic_shapes=(batch,), **common)
        torch.onnx.export(prior.velocity, (x, t, emb), str(out / VELOCITY_FILE),
                          input_names=["x", "t", "embedding"], output_names=["velocity"],
                          dynamic_shapes=(batch, batch, batch), **common)
    write_json_atomic(out / CONFIG_FILE, {
        "param_names": cfg.param_names, "choice_steps": cfg.choice_steps,
        "sample_rate": cfg.sample_rate, "num_samples": cfg.num_samples,
        "mel_settings": cfg.mel_settings, "mel_shape": cfg.mel_shape,
        "embed_dim": cfg.embed_dim})
    return out


class OnnxPrior:
    """Sample presets from an exported prior with ONNX Runtime.

    Args:
        folder: Directory written by :func:`export_onnx`.
        providers: ONNX Runtime execution providers (default: CPU).
    """

    def __init__(self, folder: str | Path, providers: list[str] | None = None):
        import onnxruntime as ort

        folder = Path(folder)
        for name in (ENCODER_FILE, VELOCITY_FILE, CONFIG_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name} is missing: export the prior with "
                                        "export_onnx() or experiments/export_prior.py first")
        providers = providers or ["CPUExecutionProvider"]
        self.config = json.loads((folder / CONFIG_FILE).read_text())
        self.encoder = ort.InferenceSession(str(folder / ENCODER_FILE), providers=providers)
        self.velocity = ort.InferenceSession(str(folder / VELOCITY_FILE), providers=providers)
        self.choice_steps = np.asarray(self.config["choice_steps"], dtype=np.float32)

    def embed(self, mel_db: np.ndarray) -> np.ndarray:
        return self.encoder.run(None, {"mel_db": mel_db.astype(np.float32)})[0]

    def velocity_at(self, x: np.ndarray, t: float, embedding: np.ndarray) -> np.ndarray:
        times = np.full(x.shape[0], t, dtype=np.float32)
        return self.velocity.run(None, {"x": x.astype(np.float32), "t": times,
                                        "embedding": embedding})[0]

    def integrate(self, embedding: np.ndarray, noise: np.ndarray, steps: int = 16
                  ) -> np.ndarray:
        """Midpoint rule from ``noise`` at t=0 to t=1: the flow-space end point."""
        x, h = noise.astype(np.float32), 1.0 / steps
        for i in range(steps):
            t = i * h
            mid = x + 0.5 * h * self.velocity_at(x, t, embedding)
            x = x + h * self.velocity_at(mid, t + 0.5 * h, embedding)
        return x

    def to_unit(self, x: np.ndarray) -> np.ndarray:
        """Clip to ``[0, 1]`` and snap discrete parameters (as ``FlowPrior.to_unit``)."""
        u = np.clip((x + 1.0) * 0.5, 0.0, 1.0)
        steps = np.maximum(self.choice_steps, 1.0)
        return np.where(self.choice_steps > 0, np.round(u * steps) / steps, u)

    def sample(self, mel_db: np.ndarray, k: int = 1, steps: int = 16,
               rng: np.random.Generator | None = None) -> np.ndarray:
        """``k`` presets per log-mel ``(B, n_mels, frames)``: ``(B, k, P)`` in ``[0, 1]``."""
        rng = rng or np.random.default_rng()
        embedding = np.repeat(self.embed(mel_db), k, axis=0)
        noise = rng.standard_normal((embedding.shape[0], len(self.choice_steps)))
        return self.to_unit(self.integrate(embedding, noise, steps)).reshape(
            mel_db.shape[0], k, -1)
