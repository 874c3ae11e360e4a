"""The batched episode logic, written once: every env id and wrapper steps through this core.

:class:`SynthMatchCore` holds the state of ``num_envs`` sound-matching episodes as torch tensors
on one device and advances all of them with one render and one reward computation. The
single env, the Gymnasium vector env and the Stable-Baselines3 adapter are thin views on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from synthmatch.devices import CPU_FEATURE_CHUNK, chunk_size, chunks, resolve_device
from synthmatch.envs.seeding import START_STREAM, TARGET_STREAM, EnvSeeds
from synthmatch.envs.targets import prepare_target_audio
from synthmatch.rewards import PerceptualDistance
from synthmatch.synths import FrozenSynth, ProbeNote, Synth, make_synth

START_MODES = ("default", "random")
ACTION_MODES = ("delta", "absolute")
ACCEPT_MODES = ("always", "improve")
# Observation log-mel range in dB, mapped linearly onto [-1, 1].
MEL_FLOOR_DB, MEL_CEIL_DB = -100.0, 20.0
# Episodes succeed below this distance (see the ``success_threshold`` argument).
SUCCESS_THRESHOLD = 0.2
# An initialiser maps target audio (n, T) on the env's device to starting parameters (n, P).
Initializer = Callable[[Tensor], Tensor]


def to_numpy(batch: dict[str, Tensor]) -> dict[str, np.ndarray]:
    """Copy a dict of tensors to new host arrays in one transfer (one device sync on a GPU).

    float32 and bool tensors only (what the env returns); bools come back as bools.
    """
    if not batch:
        return {}
    flat = torch.cat([v.reshape(-1).to(torch.float32) for v in batch.values()])
    host = flat.cpu().numpy()
    out, pos = {}, 0
    for key, v in batch.items():
        part = host[pos:pos + v.numel()].reshape(tuple(v.shape))
        out[key] = part.astype(bool) if v.dtype == torch.bool else part
        pos += v.numel()
    return out


@dataclass
class StepResult:
    """What :meth:`SynthMatchCore.step` returns, one entry per env (tensors on the device)."""

    reward: Tensor  # (N,) float32
    terminated: Tensor  # (N,) bool: distance below the success threshold
    truncated: Tensor  # (N,) bool: step limit reached (when the core enforces one)


@dataclass
class Transition(StepResult):
    """What :meth:`SynthMatchCore.step_autoreset` returns: a step, then new episodes in the envs
    whose episode ended, with what those episodes last observed."""

    reset_idx: Tensor  # (k,) long: envs whose episode ended in this step and restarted
    final_obs: dict[str, Tensor]  # (k, ...) each: their last observation
    final_info: dict[str, Tensor]  # (k,) each: their last info


class SynthMatchCore:
    """State and transition of ``num_envs`` synth-matching episodes, batched in torch.

    Args:
        num_envs: Number of parallel episodes.
        synth: A :class:`Synth` or a registry name (``"subtractive"``, ``"fm"``,
            ``"torchsynth"``, ``"vst3"``, ``"vital"``).
        synth_kwargs: Constructor arguments of a synth given by name (``plugin_path`` and
            ``parameters`` for ``"vst3"``...).
        free_params: Names of the parameters the agent controls; the rest stay at
            ``frozen`` values or their defaults. ``None``: all.
        frozen: Normalised values of non-free parameters, by name.
        probe: The note played (only with a synth given by name).
        device: ``"cpu"``, ``"cuda"``...: where synth, reward and state live.
        action_mode: ``"delta"`` (action in ``[-1, 1]`` scaled by ``max_step`` and added to the
            parameters) or ``"absolute"`` (action mapped from ``[-1, 1]`` to ``[0, 1]``).
        max_step: Largest parameter change per step in ``"delta"`` mode.
        start: Starting parameters: ``"default"`` (the synth's init preset) or ``"random"``.
        success_threshold: Episode ends successfully when the distance falls below this.
            The default, 0.2, is what nudging every parameter of the subtractive synth by
            about 0.02 (normalised) costs, and about a tenth of the typical distance from the
            default preset to a random target.
        success_bonus: Reward added on success.
        max_episode_steps: Truncate after this many steps; ``None`` leaves it to a wrapper
            (Gymnasium's ``TimeLimit`` for single envs).
        accept: ``"always"``: every step moves to the rendered parameters. ``"improve"``: a
            step is a proposal, kept only if it sounds closer to the target than the current
            parameters (the state is the best preset so far, and rewards are never negative):
            the search view, where the policy learns where to propose.
        reward_kwargs: Keyword arguments of :class:`PerceptualDistance` (``w_*`` weights...).
    """

    def __init__(
        self,
        num_envs: int,
        synth: Synth | str = "subtractive",
        *,
        synth_kwargs: Mapping | None = None,
        free_params: Sequence[str] | None = None,
        frozen: Mapping[str, float] | None = None,
        probe: ProbeNote | None = None,
        device: torch.device | str = "cpu",
        action_mode: str = "delta",
        max_step: float = 0.1,
        start: str = "default",
        success_threshold: float = SUCCESS_THRESHOLD,
        success_bonus: float = 1.0,
        max_episode_steps: int | None = None,
        reward_kwargs: Mapping | None = None,
        accept: str = "always",
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode must be one of {ACTION_MODES}, got {action_mode!r}")
        if start not in START_MODES:
            raise ValueError(f"start must be one of {START_MODES}, got {start!r}")
        if accept not in ACCEPT_MODES:
            raise ValueError(f"accept must be one of {ACCEPT_MODES}, got {accept!r}")
        if not 0.0 < max_step <= 1.0:
            raise ValueError(f"max_step must be in (0, 1], got {max_step}")
        if not (math.isfinite(success_threshold) and success_threshold > 0):
            raise ValueError(f"success_threshold must be a positive number, got "
                             f"{success_threshold}")
        if not math.isfinite(success_bonus):
            raise ValueError(f"success_bonus must be finite, got {success_bonus}")
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1 or None, got {max_episode_steps}")
        self.device = resolve_device(device)
        if isinstance(synth, str):
            synth = make_synth(synth, probe=probe, device=self.device, **dict(synth_kwargs or {}))
        elif probe is not None or synth_kwargs:
            raise ValueError("give `probe` and `synth_kwargs` only with a synth name; a Synth "
                             "instance is already configured")
        else:
            synth.to(self.device)
        if free_params is not None or frozen:
            names = synth.params.names if free_params is None else free_params
            synth = FrozenSynth(synth, names, frozen)
        self.synth = synth
        self.num_envs = num_envs
        self.num_params = synth.num_params
        self.action_mode = action_mode
        self.max_step = float(max_step)
        self.start = start
        self.accept = accept
        self.success_threshold = float(success_threshold)
        self.success_bonus = float(success_bonus)
        self.max_episode_steps = max_episode_steps
        self.distance = PerceptualDistance(synth.sample_rate, **dict(reward_kwargs or {})).to(
            self.device)
        self.mel_shape = tuple(self.distance.features(
            torch.zeros(1, synth.num_samples, device=self.device)).log_mel.shape[1:])

        n, p, dev = num_envs, self.num_params, self.device
        self.rng = EnvSeeds(n, dev)
        self.params = torch.zeros(n, p, device=dev)
        self.target_params = torch.full((n, p), float("nan"), device=dev)
        self.target_audio = torch.zeros(n, synth.num_samples, device=dev)
        self.target_features = None
        self.target_obs = torch.zeros(n, *self.mel_shape, device=dev)  # scaled at reset only
        self.current_mel = torch.zeros(n, *self.mel_shape, device=dev)
        self.dist = torch.zeros(n, device=dev)
        self.initial_dist = torch.ones(n, device=dev)
        self.best_dist = torch.zeros(n, device=dev)
        self.steps = torch.zeros(n, dtype=torch.long, device=dev)
        self.initializer: Initializer | None = None
        # accept="improve" only: each env's last proposal (its action, clipped) and outcome
        # (+1 kept, -1 rejected, 0 at the episode's start), observed as "last_step".
        self.last_step = torch.zeros(n, p + 1, device=dev)

    # ------------------------------------------------------------------ seeding and reset
    def seed(self, seed: int | Sequence[int | None] | None,
             idx: Sequence[int] | None = None) -> None:
        """Seed envs ``idx`` (default: all) for their next resets; the others keep their streams.

        ``seed``: an integer (env ``i`` gets ``seed + i``, so env ``i`` of a batch plays what a
        single env seeded ``seed + i`` plays), one seed per env (``None`` entries: unchanged),
        or ``None`` (fresh entropy for envs never seeded). See :mod:`synthmatch.envs.seeding`.
        """
        self.rng.seed(seed, idx)

    def reset_envs(self, idx: Tensor | Sequence[int], options: Mapping | None = None) -> None:
        """Start new episodes in envs ``idx`` (a subset of ``range(num_envs)``).

        Options (all optional; arrays may be per env with a leading ``len(idx)`` axis):
            ``target_params``: normalised target parameters ``(P,)`` or ``(n, P)``, or a dict
            from every parameter name to its normalised value (or to ``n`` values).
            ``target_audio`` with ``target_sample_rate``: audio to match (conversions:
            :func:`prepare_target_audio`). The leading axis of an array is the env axis: a
            1-D array is one mono clip for every env, ``(n, T)`` one mono clip per env,
            ``(n, C, T)`` or ``(n, T, C)`` one multi-channel clip per env; or a list of ``n``
            clips, each 1-D (mono) or 2-D (channels).
            ``start``: ``"default"``, ``"random"`` or normalised parameters ``(P,)``/``(n, P)``.
            ``initializer``: callable ``(target_audio (n, T)) -> (n, P)`` starting parameters
            (e.g. a learned prior); overrides ``start`` for this reset, and is kept for later
            resets if set with :attr:`initializer`.

        Raises:
            ValueError: for malformed options, naming them.
        """
        options = dict(options or {})
        unknown = set(options) - {"target_params", "target_audio", "target_sample_rate",
                                  "start", "initializer"}
        if unknown:
            raise ValueError(f"unknown reset option(s) {sorted(unknown)}; allowed: "
                             "target_params, target_audio, target_sample_rate, start, "
                             "initializer")
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.device).reshape(-1)
        k = idx.numel()
        if k == 0:
            return
        table = self.synth.params

        # One batched draw per stream; env i's numbers depend on its seed and episode only, so
        # a seed gives the same episode whether the env runs alone or in a batch.
        draws = table.quantize(self.rng.draw(idx, TARGET_STREAM, self.num_params))

        target_audio = None
        if "target_audio" in options:
            if "target_params" in options:
                raise ValueError("give either target_audio or target_params, not both")
            target_audio = self._option_audio(options, k)
            target_u = torch.full((k, self.num_params), float("nan"), device=self.device)
        elif "target_params" in options:
            target_u = self._option_params(options["target_params"], k, "target_params")
        else:
            target_u = draws

        start = options.get("start", self.start)
        initializer = options.get("initializer", self.initializer)
        if initializer is None:
            if isinstance(start, str):
                if start not in START_MODES:
                    raise ValueError(f"start must be one of {START_MODES} or parameters, "
                                     f"got {start!r}")
                start_u = (table.quantize(self.rng.draw(idx, START_STREAM, self.num_params))
                           if start == "random" else table.defaults(k, self.device))
            else:
                start_u = self._option_params(start, k, "start")

        to_render = [start_u] if initializer is None else []
        if target_audio is None:
            to_render.insert(0, target_u)
        audio = self.synth.render(torch.cat(to_render)) if to_render else None
        if target_audio is None:
            target_audio = audio[:k]
        if initializer is not None:
            start_u = self._option_params(initializer(target_audio), k, "initializer output")
            start_audio = self.synth.render(start_u)
        else:
            start_audio = audio[-k:]

        target_feats = self.distance.features(target_audio)
        if self.target_features is None:
            self.target_features = self.distance.features(
                target_audio[:1].expand(self.num_envs, -1).contiguous())
        self.target_features.assign_(idx, target_feats)
        # Out of place: an observation handed out earlier never changes under its holder.
        self.target_obs = self.target_obs.index_put((idx,), self.scale_mel(target_feats.log_mel))
        self.target_audio[idx] = target_audio
        self.target_params[idx] = target_u
        # params and current_mel are replaced, never written in place, so observations need no
        # copies (see observation()).
        self.params = self.params.index_put((idx,), start_u)
        start_feats = self.distance.features(start_audio)
        d = self.distance.distance(start_feats, target_feats)
        self.current_mel = self.current_mel.index_put((idx,), start_feats.log_mel)
        self.dist = self.dist.index_put((idx,), d)
        self.initial_dist[idx] = d
        self.best_dist = self.best_dist.index_put((idx,), d)
        self.steps[idx] = 0
        self.last_step = self.last_step.index_fill(0, idx, 0.0)
        self.rng.advance(idx)

    def _option_params(self, value, k: int, name: str) -> Tensor:
        if isinstance(value, Mapping):
            value = self._params_from_names(value, k, name)
        u = torch.as_tensor(np.asarray(value, dtype=np.float32) if not isinstance(value, Tensor)
                            else value, dtype=torch.float32, device=self.device)
        if u.ndim == 1:
            u = u.unsqueeze(0).expand(k, -1)
        if u.shape != (k, self.num_params):
            raise ValueError(f"{name} must have shape ({self.num_params},) or "
                             f"({k}, {self.num_params}), got {tuple(u.shape)}")
        try:
            return self.synth.params.validate(u)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None

    def _params_from_names(self, values: Mapping, k: int, name: str) -> np.ndarray:
        """``{parameter name: value or (k,) values}`` -> ``(k, P)``, every name required."""
        names = self.synth.params.names
        unknown = sorted(set(values) - set(names))
        missing = [n for n in names if n not in values]
        if unknown or missing:
            raise ValueError(f"{name} as a dict needs exactly the parameters {list(names)}"
                             + (f"; unknown: {unknown}" if unknown else "")
                             + (f"; missing: {missing}" if missing else ""))
        try:
            columns = [np.broadcast_to(np.asarray(values[n], dtype=np.float32), (k,))
                       for n in names]
        except (TypeError, ValueError):
            raise ValueError(f"{name}: each value must be a number or {k} numbers") from None
        return np.stack(columns, axis=1)

    def _option_audio(self, options: Mapping, k: int) -> Tensor:
        if "target_sample_rate" not in options:
            raise ValueError("target_audio needs target_sample_rate (Hz)")
        audio = options["target_audio"]
        rate = options["target_sample_rate"]
        if isinstance(audio, list | tuple) and audio and np.ndim(audio[0]) > 0:
            clips = list(audio)
            if len(clips) != k:
                raise ValueError(f"target_audio: got a list of {len(clips)} clips for {k} "
                                 "envs being reset (one clip per env)")
        else:
            ndim = audio.ndim if isinstance(audio, Tensor) else np.ndim(audio)
            shape = tuple(audio.shape) if isinstance(audio, Tensor) else np.shape(audio)
            if ndim <= 1:
                clips = [audio] * k
            elif ndim in (2, 3) and shape[0] == k:
                clips = list(audio)
            else:
                raise ValueError(
                    f"target_audio of shape {shape}: the leading axis of an array is the env "
                    f"axis and must be {k} (envs being reset); give a 1-D array for one mono "
                    "clip for every env, or a list of clips")
        out = [prepare_target_audio(c, rate, target_rate=self.synth.sample_rate,
                                    num_samples=self.synth.num_samples) for c in clips]
        return torch.stack(out).to(self.device)

    # ------------------------------------------------------------------ step
    def step(self, actions: Tensor) -> StepResult:
        """Apply ``actions`` ``(N, P)`` to every env, render, and score.

        Raises:
            ValueError: wrong shape or NaN/inf actions (nothing is rendered).
        """
        a = self._check_actions(actions).clamp(-1.0, 1.0)
        if self.action_mode == "delta":
            params = (self.params + self.max_step * a).clamp(0.0, 1.0)
        else:
            params = (a + 1.0) * 0.5
        d, mel = self._evaluate(params)
        if self.accept == "improve":
            keep = d < self.dist
            params = torch.where(keep[:, None], params, self.params)
            mel = torch.where(keep[:, None, None], mel, self.current_mel)
            d = torch.where(keep, d, self.dist)
            self.last_step = torch.cat([a, keep[:, None].float() * 2.0 - 1.0], dim=1)
        self.params, self.current_mel = params, mel
        reward = self.reward(self.dist, d)
        self.dist = d
        self.best_dist = torch.minimum(self.best_dist, d)
        self.steps += 1
        terminated = d < self.success_threshold
        reward = reward + self.success_bonus * terminated.float()
        if self.max_episode_steps is None:
            truncated = torch.zeros_like(terminated)
        else:
            truncated = (self.steps >= self.max_episode_steps) & ~terminated
        return StepResult(reward, terminated, truncated)

    def step_autoreset(self, actions: Tensor) -> Transition:
        """:meth:`step`, then reset the envs whose episode ended (same-step autoreset).

        The one place autoreset is written: the vector env and the SB3 adapter only convert
        what it returns. Costs one device sync (which envs ended) beyond :meth:`step`.
        """
        result = self.step(actions)
        idx = (result.terminated | result.truncated).nonzero().view(-1)
        final_obs, final_info = {}, {}
        if idx.numel():
            final_obs = {k: v[idx] for k, v in self.observation().items()}
            final_info = {k: v[idx] for k, v in self.info().items()}
            self.reset_envs(idx)
        return Transition(result.reward, result.terminated, result.truncated, idx, final_obs,
                          final_info)

    def _check_actions(self, actions) -> Tensor:
        """Actions as float32 on the device; host arrays are checked on the host, device
        tensors with one sync."""
        host = not isinstance(actions, Tensor)
        if host:
            actions = np.asarray(actions)
        if actions.dtype.is_complex if not host else np.iscomplexobj(actions):
            raise ValueError("actions must be real numbers, got complex values")
        if tuple(actions.shape) != (self.num_envs, self.num_params):
            raise ValueError(f"actions must have shape ({self.num_envs}, {self.num_params}), "
                             f"got {tuple(actions.shape)}")
        if host:
            try:
                actions = actions.astype(np.float32)
            except (TypeError, ValueError):
                raise ValueError(f"actions must be numbers, got dtype {actions.dtype}") from None
            if not np.isfinite(actions).all():
                raise ValueError("actions contain NaN or inf")
            return torch.from_numpy(actions).to(self.device)
        a = actions.to(self.device, torch.float32)
        if not torch.isfinite(a).all():
            raise ValueError("actions contain NaN or inf")
        return a

    def _evaluate(self, params: Tensor) -> tuple[Tensor, Tensor]:
        """Render ``params`` ``(N, P)`` and score against the targets: distance ``(N,)`` and
        the log-mel ``(N, n_mels, frames)`` of the rendered sounds."""
        audio = self.synth.render(params)  # the synth chunks its own work where it helps
        distances, mels = [], []
        for rows in chunks(self.num_envs, chunk_size(self.device, CPU_FEATURE_CHUNK)):
            feats = self.distance.features(audio[rows])
            distances.append(self.distance.distance(
                feats, self.target_features.rows(rows.start, rows.stop)))
            mels.append(feats.log_mel)
        return torch.cat(distances), torch.cat(mels)

    def reward(self, before: Tensor, after: Tensor) -> Tensor:
        """Improvement of the distance, as a share of the episode's starting distance.

        Summed over an episode it telescopes to ``1 - final / initial``: 1 for a perfect match,
        0 for no progress, negative for getting worse, whatever the target's scale.
        """
        scale = self.initial_dist.clamp_min(self.success_threshold)
        return (before - after) / scale

    # ------------------------------------------------------------------ views
    def observation(self) -> dict[str, Tensor]:
        """``target_mel`` and ``current_mel`` ``(N, n_mels, frames)``, ``params`` ``(N, P)``,
        and with ``accept="improve"`` ``last_step`` ``(N, P + 1)``: the last proposal's
        action and whether it was kept (+1), rejected (-1) or not made yet (0), the memory a
        search needs to adapt (a rejected proposal leaves everything else unchanged).

        No copies: the core replaces these tensors rather than writing into them, so what it
        returned stays valid; treat them as read-only.
        """
        obs = {
            "target_mel": self.target_obs,
            "current_mel": self.scale_mel(self.current_mel),
            "params": self.params,
        }
        if self.accept == "improve":
            obs["last_step"] = self.last_step
        return obs

    @staticmethod
    def scale_mel(db: Tensor) -> Tensor:
        """Log-mel in dB -> the observations' scale: ``[MEL_FLOOR_DB, MEL_CEIL_DB]`` mapped
        onto ``[-1, 1]``, clipped."""
        scaled = (db - MEL_FLOOR_DB) * (2.0 / (MEL_CEIL_DB - MEL_FLOOR_DB)) - 1.0
        return scaled.clamp(-1.0, 1.0)

    def info(self) -> dict[str, Tensor]:
        """Per-env ``distance``, ``best_distance``, ``param_mae`` (NaN when the target
        parameters are unknown) and ``is_success``; read-only, as :meth:`observation`."""
        return {
            "distance": self.dist,
            "best_distance": self.best_dist,
            "param_mae": (self.params - self.target_params).abs().mean(1),
            "is_success": self.dist < self.success_threshold,
        }
