"""Training runs shared by experiments/train_ppo.py and train_sac.py: logging, checkpoints, resume.

A run lives in ``runs/<run_name>/``: TensorBoard events, ``config.json`` (how it was made),
``checkpoints/latest.zip`` (policy and optimiser, written atomically every
``checkpoint_every`` steps and at the end), ``model.zip`` (the final policy) and ``eval.json``
(the held-out evaluation). No VecNormalize is used (observations are bounded, rewards are
relative improvements), so policy and optimiser are all a checkpoint needs.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import TensorBoardOutputFormat, configure
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecMonitor

from synthmatch.agents.evaluation import HELD_OUT_SEED, evaluate
from synthmatch.agents.extractor import SpectrogramExtractor
from synthmatch.envs import SB3VecEnv, make_sb3_vec_env
from synthmatch.envs.core import SynthMatchCore
from synthmatch.envs.drawing import side_by_side
from synthmatch.fileio import write_json_atomic

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "sac": SAC}


@dataclass
class RunSettings:
    """Settings every training script shares; each script's ``Args`` extends this with its
    algorithm's settings (tyro turns the field docstrings into ``--help``)."""

    env_id: str = "SynthMatch-Easy-v0"
    """registered environment id (see README for the list)"""
    total_timesteps: int = 60_000
    """environment steps to train for, summed over envs (a resumed run continues to this);
    the PPO default takes about 4 minutes on a 2-core CPU"""
    num_envs: int = 16
    """parallel episodes, rendered as one batch (16 suits a 2-core CPU)"""
    seed: int = 0
    """seed of the envs (env i gets seed + i), the policy and torch"""
    device: str = "cpu"
    """device of envs and policy: cpu or cuda"""
    run_name: str | None = None
    """run directory name under log-dir (default: env id, algorithm, seed and time)"""
    log_dir: str = "runs"
    """parent directory of the runs"""
    checkpoint_every: int = 4096
    """steps between checkpoints (one is also written at the end and on Ctrl-C)"""
    media_every: int = 4096
    """steps between audio clips and spectrogram pictures in TensorBoard"""
    eval_targets: int = 64
    """held-out targets for the evaluation at the end"""
    resume: str | None = None
    """checkpoint to continue from (its run directory and step counter are kept)"""
    features_dim: int = 256
    """size of the spectrogram extractor's output"""
    max_step: float | None = None
    """largest parameter change per step (delta actions); default: the env's (0.1)"""
    warm_start: str | None = None
    """prior checkpoint (prior.pt from train_prior.py): episodes start from a prior sample for
    their target instead of the default preset (training and the final evaluation)"""
    warm_start_k: int = 1
    """with --warm-start: start from the closest of this many prior samples (k renders per
    reset)"""


def warm_start(core: SynthMatchCore, prior_path: str | None, k: int = 1, seed: int = 0) -> None:
    """Make ``core`` start episodes from the best of ``k`` samples of the prior saved at
    ``prior_path`` (nothing if ``None``), sampled in batches on the env's device."""
    if not prior_path:
        return
    from synthmatch.agents.matching import PriorInitializer
    from synthmatch.agents.prior import FlowPrior

    prior = FlowPrior.load(prior_path, core.device)
    core.initializer = PriorInitializer(prior, core.synth, k=k, seed=seed)


def env_kwargs(run: RunSettings) -> dict[str, Any]:
    """Env arguments the run sets (only those given, so the registry's defaults hold)."""
    return {} if run.max_step is None else {"max_step": run.max_step}


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run's config.json (empty if it has none)."""
    path = run_dir / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def core_of(env: VecEnv) -> SynthMatchCore:
    """The batched core under SB3 wrappers (VecMonitor...)."""
    while isinstance(env, VecEnvWrapper):
        env = env.venv
    if not isinstance(env, SB3VecEnv):
        raise TypeError(f"expected a synthmatch SB3VecEnv under the wrappers, got {type(env)}")
    return env.core


def tensorboard_writer(model: BaseAlgorithm):
    """The SummaryWriter behind the model's SB3 logger (SB3 has no audio type of its own)."""
    for fmt in model.logger.output_formats:
        if isinstance(fmt, TensorBoardOutputFormat):
            return fmt.writer
    raise RuntimeError("the model's logger has no TensorBoard output")


def save_atomic(model: BaseAlgorithm, path: Path) -> Path:
    """Save ``model`` to ``path`` (a .zip) through a temporary file and a rename, so a crash
    or Ctrl-C mid-write leaves the previous file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.zip")
    model.save(tmp)
    os.replace(tmp, path)
    return path


class EpisodeMetrics(BaseCallback):
    """Logs finished episodes (return, final and best distance, success, param MAE, length)
    and env throughput under ``episode/`` and ``time/``."""

    def __init__(self):
        super().__init__()
        self._clock = (0, 0.0)

    def _on_training_start(self) -> None:
        self._clock = (self.num_timesteps, time.perf_counter())

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
            if not done:
                continue
            if "episode" in info:
                self.logger.record_mean("episode/return", info["episode"]["r"])
                self.logger.record_mean("episode/length", info["episode"]["l"])
            self.logger.record_mean("episode/final_distance", info["distance"])
            self.logger.record_mean("episode/best_distance", info["best_distance"])
            self.logger.record_mean("episode/success_rate", float(info["is_success"]))
            if "param_mae" in info:
                self.logger.record_mean("episode/param_mae", info["param_mae"])
        return True

    def _on_rollout_end(self) -> None:
        steps, start = self._clock
        now = time.perf_counter()
        if self.num_timesteps > steps and now > start:
            self.logger.record("time/env_steps_per_second",
                               (self.num_timesteps - steps) / (now - start))
        self._clock = (self.num_timesteps, now)


class MediaLogger(BaseCallback):
    """Every ``every`` steps: target and current audio of a few envs (``add_audio``) and their
    spectrograms side by side (``add_image``)."""

    def __init__(self, every: int, clips: int = 2):
        super().__init__()
        self.every, self.clips, self._next = every, clips, every

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next += self.every
            self.log_media()
        return True

    def log_media(self) -> None:
        core = core_of(self.training_env)
        writer = tensorboard_writer(self.model)
        k = min(self.clips, core.num_envs)
        with torch.no_grad():
            current = core.synth.render(core.params[:k]).cpu()
        obs = core.observation()
        for i in range(k):
            step, rate = self.num_timesteps, core.synth.sample_rate
            writer.add_audio(f"media/env{i}_target", core.target_audio[i:i + 1].cpu(), step,
                             sample_rate=rate)
            writer.add_audio(f"media/env{i}_current", current[i:i + 1], step, sample_rate=rate)
            picture = side_by_side(obs["target_mel"][i].cpu().numpy(),
                                   obs["current_mel"][i].cpu().numpy())
            writer.add_image(f"media/env{i}_target_vs_current", picture, step,
                             dataformats="HWC")


class Checkpointer(BaseCallback):
    """Writes ``checkpoints/latest.zip`` atomically every ``every`` steps."""

    def __init__(self, path: Path, every: int):
        super().__init__()
        self.path, self.every, self._next = path, every, every

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next += self.every
            save_atomic(self.model, self.path)
        return True


def train(algo: str, run: RunSettings, algo_kwargs: dict[str, Any]) -> Path:
    """Train (or resume) a run and evaluate it; returns the run directory.

    Args:
        algo: ``"ppo"`` or ``"sac"``.
        run: The script's arguments (shared settings plus its own, all logged as text and to
            config.json).
        algo_kwargs: Keyword arguments of the SB3 algorithm (n_steps, learning_rate...).
    """
    hyperparameters = asdict(run)
    if run.resume:
        checkpoint = Path(run.resume)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint at {checkpoint}")
        run_dir = checkpoint.parent.parent
        recorded = read_config(run_dir)
        if run.warm_start is None and recorded.get("warm_start"):
            run = replace(run, warm_start=recorded["warm_start"],
                          warm_start_k=recorded.get("warm_start_k", 1))
            print(f"Resuming with the run's warm start: {run.warm_start}")
        if run.max_step is None and recorded.get("max_step") is not None:
            run = replace(run, max_step=recorded["max_step"])
    else:
        name = run.run_name or f"{run.env_id}__{algo}__{run.seed}__{int(time.time())}"
        run_dir = Path(run.log_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    latest = run_dir / "checkpoints" / "latest.zip"

    # Seeding: numpy and torch globals, env i with seed + i, SB3's own generators.
    np.random.seed(run.seed)
    torch.manual_seed(run.seed)

    env = VecMonitor(make_sb3_vec_env(run.env_id, num_envs=run.num_envs, seed=run.seed,
                                      device=run.device, **env_kwargs(run)))
    warm_start(core_of(env), run.warm_start, run.warm_start_k, run.seed)
    algorithm = ALGORITHMS[algo]
    if run.resume:
        model = algorithm.load(run.resume, env=env, device=run.device)
    else:
        algo_kwargs = dict(algo_kwargs)
        policy_kwargs = dict(**algo_kwargs.pop("policy_kwargs", {}),
                             features_extractor_class=SpectrogramExtractor,
                             features_extractor_kwargs=dict(features_dim=run.features_dim))
        model = algorithm("MultiInputPolicy", env, seed=run.seed, device=run.device,
                          policy_kwargs=policy_kwargs, verbose=0, **algo_kwargs)
        write_json_atomic(run_dir / "config.json", {"algo": algo, **hyperparameters})
    model.set_logger(configure(str(run_dir), ["tensorboard"]))
    table = "|setting|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|"
                                                  for k, v in hyperparameters.items())
    tensorboard_writer(model).add_text("hyperparameters", table, model.num_timesteps)

    callbacks = CallbackList([EpisodeMetrics(), MediaLogger(run.media_every),
                              Checkpointer(latest, run.checkpoint_every)])
    remaining = run.total_timesteps - model.num_timesteps
    try:
        if remaining > 0:
            model.learn(remaining, callback=callbacks, reset_num_timesteps=not run.resume,
                        progress_bar=True)
    except KeyboardInterrupt:
        save_atomic(model, latest)
        print(f"\nInterrupted at step {model.num_timesteps}; checkpoint saved, resume with "
              f"--resume {latest}", file=sys.stderr)
        raise SystemExit(130) from None
    save_atomic(model, latest)
    save_atomic(model, run_dir / "model.zip")

    summary = evaluate_model(model, run.env_id, run.eval_targets, run.device, run=run)
    write_json_atomic(run_dir / "eval.json", summary)
    print(f"TensorBoard logs: {run_dir}   (tensorboard --logdir {run.log_dir})")
    print(f"Checkpoint: {latest}   Final policy: {run_dir / 'model.zip'}")
    print(f"Evaluation on {summary['num_targets']} held-out targets: {run_dir / 'eval.json'} "
          f"(median distance {summary['median_initial_distance']:.3f} at the start, "
          f"{summary['median_final_distance']:.3f} at the end)")
    return run_dir


def evaluate_model(model: BaseAlgorithm, env_id: str, num_targets: int, device: str,
                   seed: int = HELD_OUT_SEED, run: RunSettings | None = None) -> dict[str, Any]:
    """Deterministic evaluation of ``model`` on ``num_targets`` held-out targets (episodes
    warm-started as in ``run``, if given)."""
    import gymnasium as gym

    venv = gym.make_vec(env_id, num_envs=num_targets, device=device,
                        **(env_kwargs(run) if run is not None else {}))
    core = venv.unwrapped.core
    if run is not None:
        warm_start(core, run.warm_start, run.warm_start_k, run.seed)
    steps = gym.spec(env_id).max_episode_steps or 50
    results = evaluate(core, lambda obs: model.predict(obs, deterministic=True)[0],
                       max_steps=steps, seed=seed)
    return {"env_id": env_id, "seed": seed, "steps": model.num_timesteps,
            "warm_start": run.warm_start if run is not None else None,
            **env_kwargs(run or RunSettings()), **results.summary()}
