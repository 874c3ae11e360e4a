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
import signal
import sys
import threading
import time
from collections.abc import Collection
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
from synthmatch.agents.extractor import EXTRACTORS
from synthmatch.agents.media import log_media
from synthmatch.envs import SB3VecEnv, make_sb3_vec_env
from synthmatch.envs.core import ACCEPT_MODES, SynthMatchCore
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
    extractor: str = "cnn"
    """how the policy reads the spectrograms: cnn (a small CNN over both) or mlp (an MLP over
    their frequency and time profiles: far cheaper to train)"""
    max_step: float | None = None
    """largest parameter change per step (delta actions); default: the env's (0.1)"""
    warm_start: str | None = None
    """prior checkpoint (prior.pt from train_prior.py): episodes start from a prior sample for
    their target instead of the default preset (training and the final evaluation)"""
    warm_start_k: int = 1
    """with --warm-start: start from the closest of this many prior samples (k renders per
    reset)"""
    accept: str = "always"
    """always: every step moves to its new preset; improve: a step is a proposal the env keeps
    only if it sounds closer (the search view: the policy learns where to propose, its
    actions are sampled at evaluation, and rewards are never negative)"""


def warm_start(core: SynthMatchCore, prior_path: str | None, k: int = 1, seed: int = 0) -> None:
    """Make ``core`` start episodes from the best of ``k`` samples of the prior saved at
    ``prior_path`` (nothing if ``None``), sampled in batches on the env's device."""
    if not prior_path:
        return
    from synthmatch.agents.matching import PriorInitializer
    from synthmatch.agents.prior import FlowPrior

    prior = FlowPrior.load(prior_path, core.device)
    core.initializer = PriorInitializer(prior, core.synth, k=k, seed=seed)


# Settings a resumed run may change; every other one comes from the run's config.json.
RESUMABLE = ("total_timesteps", "resume", "device", "checkpoint_every", "media_every",
             "eval_targets", "log_dir", "run_name")


def env_kwargs(run: RunSettings | dict[str, Any]) -> dict[str, Any]:
    """Env arguments the run sets (only those given, so the registry's defaults hold)."""
    settings = run if isinstance(run, dict) else asdict(run)
    out = {} if settings.get("max_step") is None else {"max_step": settings["max_step"]}
    if settings.get("accept", "always") != "always":  # runs older than the option lack it
        out["accept"] = settings["accept"]
    return out


def read_config(run_dir: Path) -> dict[str, Any]:
    """A run's config.json (empty if it has none)."""
    path = run_dir / "config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def run_dir_of(checkpoint: str | Path) -> Path:
    """The run directory of ``runs/X/model.zip`` or ``runs/X/checkpoints/latest.zip``."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" \
        else checkpoint.parent


def check_settings(run: RunSettings) -> None:
    """Refuse settings that cannot make a sensible run, before anything is written.

    Raises:
        ValueError: a non-positive budget, size or period, an unknown env, or a device this
            machine lacks (the message names the flag).
    """
    from synthmatch.devices import resolve_device
    from synthmatch.envs.registration import env_settings

    for flag in ("total_timesteps", "num_envs", "checkpoint_every", "media_every",
                 "eval_targets", "warm_start_k", "features_dim"):
        value = getattr(run, flag)
        if value < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
    if run.max_step is not None and not 0.0 < run.max_step <= 1.0:
        raise ValueError(f"--max-step must be in (0, 1], got {run.max_step}")
    if run.extractor not in EXTRACTORS:
        raise ValueError(f"--extractor must be one of {', '.join(EXTRACTORS)}, got "
                         f"{run.extractor!r}")
    if run.accept not in ACCEPT_MODES:
        raise ValueError(f"--accept must be one of {', '.join(ACCEPT_MODES)}, got "
                         f"{run.accept!r}")
    env_settings(run.env_id)  # an unknown or foreign id is a clear ValueError
    resolve_device(run.device)
    if run.warm_start is not None and not Path(run.warm_start).is_file():
        raise ValueError(f"--warm-start: no prior checkpoint at {run.warm_start}")


def resumed_settings(run: RunSettings, given: Collection[str] | None = None,
                     algo: str | None = None) -> tuple[RunSettings, Path]:
    """The settings of the run ``run.resume`` continues, and its directory: the one rule of
    every training script (train_ppo.py, train_sac.py, ppo_gpu.py).

    A setting not given on the command line comes from the run's config.json. A given one is
    kept if it is in :data:`RESUMABLE` and refused if it contradicts the recorded value
    (restating the recorded value is no conflict).

    Args:
        run: The script's settings, with ``resume`` set.
        given: Names of the settings given on the command line
            (:func:`synthmatch.cli.given_flags`); ``None``: those that differ from the
            defaults of ``type(run)``.
        algo: The ``algo`` the run's config.json must record, if any.

    Raises:
        FileNotFoundError: no checkpoint, or no config.json beside it.
        ValueError: a run of another algorithm, or a conflicting flag (the message names it
            and the recorded value).
    """
    checkpoint = Path(run.resume)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {checkpoint}")
    run_dir = run_dir_of(checkpoint)
    config = run_dir / "config.json"
    recorded = read_config(run_dir)
    if not recorded:
        raise FileNotFoundError(f"--resume: {config} not found; is {checkpoint} inside a "
                                "training run?")
    if algo is not None and recorded.get("algo") != algo:
        raise ValueError(f"--resume: {config} is from {recorded.get('algo')}, not {algo}; give "
                         f"a checkpoint under runs/<run_name>/checkpoints/ of a {algo} run")
    if given is None:
        defaults = type(run)()
        given = {n for n, v in asdict(run).items() if v != getattr(defaults, n)}
    updates = {}
    for name, value in asdict(run).items():
        if name == "resume" or name not in recorded:
            continue
        if name not in given:
            updates[name] = recorded[name]
        elif name not in RESUMABLE and value != recorded[name]:
            allowed = ", ".join("--" + n.replace("_", "-") for n in RESUMABLE if n != "resume")
            raise ValueError(f"--{name.replace('_', '-')} {value} conflicts with the resumed "
                             f"run's {recorded[name]} ({config}); a resumed run keeps its "
                             f"settings (it may change only {allowed})")
    return replace(run, **updates), run_dir


def policy_kwargs(algo: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The policy's constructor arguments, from a run's settings: used to build the policy and,
    when loading a checkpoint, instead of the pickled copy in the file."""
    kwargs: dict[str, Any] = {
        "features_extractor_class": EXTRACTORS[settings.get("extractor", "cnn")],
        "features_extractor_kwargs": {"features_dim": settings.get("features_dim", 256)}}
    if algo == "ppo" and "log_std_init" in settings:
        kwargs["log_std_init"] = settings["log_std_init"]
    return kwargs


class UnsafeCheckpointError(ValueError):
    """A checkpoint holds pickled entries this project does not write."""


def load_model(checkpoint: str | Path, device: str = "cpu", env: VecEnv | None = None,
               config: dict[str, Any] | None = None) -> BaseAlgorithm:
    """Load a train_ppo.py / train_sac.py checkpoint without running code from the file.

    SB3 stores some entries of a model as cloudpickle, which runs arbitrary code when loaded.
    Every such entry is rebuilt here from the run's config.json (plain JSON) and the env's
    spaces, and passed to SB3 as ``custom_objects``, so nothing is unpickled; a file with a
    pickled entry not in that list is refused. Weights load with ``torch.load(...,
    weights_only=True)`` (SB3's own choice).

    Args:
        checkpoint: ``runs/X/model.zip`` or ``runs/X/checkpoints/latest.zip``.
        device: Where the policy goes.
        env: The env to attach (its spaces are used); ``None``: spaces from the run's env id.
        config: The run's settings (default: its config.json).

    Raises:
        FileNotFoundError: no file, or no config.json for it.
        zipfile.BadZipFile: not a zip (truncated, corrupt).
        UnsafeCheckpointError: a pickled entry this project does not write.
        ValueError: the file's spaces differ from the env's.
    """
    import zipfile

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}")
    config = config if config is not None else read_config(run_dir_of(checkpoint))
    if "algo" not in config or "env_id" not in config:
        raise FileNotFoundError(f"{run_dir_of(checkpoint) / 'config.json'} with algo and env_id "
                                f"not found: is {checkpoint} inside a training run?")
    algo = config["algo"]
    if algo not in ALGORITHMS:
        raise ValueError(f"{checkpoint}: unknown algorithm {algo!r} in its config.json")
    try:
        with zipfile.ZipFile(checkpoint) as archive:
            data = json.loads(archive.read("data"))
    except KeyError:
        raise zipfile.BadZipFile(f"{checkpoint} is not an SB3 checkpoint (no 'data' entry)") \
            from None
    except (zipfile.BadZipFile, json.JSONDecodeError, EOFError, OSError) as err:
        raise zipfile.BadZipFile(f"{checkpoint} is not a readable checkpoint ({err})") from None
    if env is not None:
        spaces = (env.observation_space, env.action_space)
    else:
        import gymnasium as gym

        probe = gym.make(config["env_id"], **env_kwargs(config))
        spaces = (probe.observation_space, probe.action_space)
        probe.close()
    custom = {
        "policy_class": ALGORITHMS[algo].policy_aliases["MultiInputPolicy"],
        "policy_kwargs": policy_kwargs(algo, config),
        "observation_space": spaces[0], "action_space": spaces[1],
        "lr_schedule": None, "clip_range": config.get("clip_range", 0.2),
        "train_freq": config.get("train_freq", 1),
        "rollout_buffer_class": None, "replay_buffer_class": None,
        "_last_obs": None, "_last_original_obs": None, "_last_episode_starts": None,
        "ep_info_buffer": None, "ep_success_buffer": None,
    }
    pickled = {key for key, value in data.items()
               if isinstance(value, dict) and ":serialized:" in value}
    unknown = sorted(pickled - set(custom))
    if unknown:
        raise UnsafeCheckpointError(
            f"{checkpoint} holds pickled entries this project does not write ({unknown}); "
            "refusing to load it, since unpickling can run code from the file")
    return ALGORITHMS[algo].load(checkpoint, env=env, device=device, custom_objects=custom)


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
    and env throughput under ``episode/`` and ``time/``; in the search view
    (``accept="improve"``) also the share of proposals kept, ``search/accept_rate``."""

    def __init__(self):
        super().__init__()
        self._clock = (0, 0.0)

    def _on_training_start(self) -> None:
        self._clock = (self.num_timesteps, time.perf_counter())

    def _on_step(self) -> bool:
        obs = self.locals.get("new_obs")
        if isinstance(obs, dict) and "last_step" in obs:
            # Search view: the share of proposals kept (+1 kept, -1 rejected, 0 just reset).
            outcome = np.asarray(obs["last_step"])[:, -1]
            if (outcome != 0).any():
                self.logger.record_mean("search/accept_rate",
                                        float((outcome[outcome != 0] > 0).mean()))
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
        log_media(tensorboard_writer(self.model), core_of(self.training_env),
                  self.num_timesteps, self.clips)


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


class StopOnInterrupt(BaseCallback):
    """Ctrl-C ends training at the next env step, where the caller saves a checkpoint.

    Left to Python's default, Ctrl-C raises KeyboardInterrupt wherever the main thread is,
    and one raised inside a finalizer or a library's cleanup is printed and dropped: training
    would go on as if the key had not been pressed. Here the signal only sets a flag, and a
    second Ctrl-C raises at once. Installed in the main thread only (signal handlers cannot
    be set elsewhere); :meth:`restore` puts the previous handler back. A process started with
    Ctrl-C ignored (a background job of a shell without job control) keeps ignoring it, as
    Python itself does.
    """

    def __init__(self):
        super().__init__()
        self.interrupted = False
        self._previous: Any = None

    def _on_training_start(self) -> None:
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN):
            self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.interrupted = True
        self.restore()  # a second Ctrl-C interrupts whatever is running

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _on_step(self) -> bool:
        return not self.interrupted


def train(algo: str, run: RunSettings, algo_kwargs: dict[str, Any],
          given: Collection[str] | None = None) -> Path:
    """Train (or resume) a run and evaluate it; returns the run directory.

    Args:
        algo: ``"ppo"`` or ``"sac"``.
        run: The script's arguments (shared settings plus its own, all logged as text and to
            config.json).
        algo_kwargs: Keyword arguments of the SB3 algorithm (n_steps, learning_rate...).
        given: Settings given on the command line, for a resumed run (see
            :func:`resumed_settings`).
    """
    if run.resume:
        run, run_dir = resumed_settings(run, given, algo)
    else:
        name = run.run_name or f"{run.env_id}__{algo}__{run.seed}__{int(time.time())}"
        run_dir = Path(run.log_dir) / name
        if (run_dir / "config.json").exists():
            raise ValueError(f"{run_dir} already holds a run; pick another --run-name, or "
                             f"continue it with --resume {run_dir / 'checkpoints/latest.zip'}")
    check_settings(run)
    hyperparameters = asdict(run)
    latest = run_dir / "checkpoints" / "latest.zip"

    # Seeding: numpy and torch globals, env i with seed + i, SB3's own generators.
    np.random.seed(run.seed)
    torch.manual_seed(run.seed)

    env = VecMonitor(make_sb3_vec_env(run.env_id, num_envs=run.num_envs, seed=run.seed,
                                      device=run.device, **env_kwargs(run)))
    warm_start(core_of(env), run.warm_start, run.warm_start_k, run.seed)
    config = {"algo": algo, **hyperparameters}
    if run.resume:
        model = load_model(run.resume, run.device, env, {**read_config(run_dir), **config})
    else:
        model = ALGORITHMS[algo]("MultiInputPolicy", env, seed=run.seed, device=run.device,
                                 policy_kwargs=policy_kwargs(algo, hyperparameters), verbose=0,
                                 **algo_kwargs)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "config.json", config)
    model.set_logger(configure(str(run_dir), ["tensorboard"]))
    table = "|setting|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|"
                                                  for k, v in hyperparameters.items())
    tensorboard_writer(model).add_text("hyperparameters", table, model.num_timesteps)

    stop = StopOnInterrupt()
    callbacks = CallbackList([EpisodeMetrics(), MediaLogger(run.media_every),
                              Checkpointer(latest, run.checkpoint_every), stop])
    remaining = run.total_timesteps - model.num_timesteps
    try:
        if remaining > 0:
            model.learn(remaining, callback=callbacks, reset_num_timesteps=not run.resume,
                        progress_bar=True)
        if stop.interrupted:
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        save_atomic(model, latest)
        print(f"\nInterrupted at step {model.num_timesteps}; checkpoint saved, resume with "
              f"--resume {latest}", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        stop.restore()
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
    """Evaluation of ``model`` on ``num_targets`` held-out targets (episodes warm-started as in
    ``run``, if given): deterministic actions, or seeded samples for a ``--accept improve``
    refiner (a deterministic one would repeat a rejected proposal)."""
    import gymnasium as gym

    venv = gym.make_vec(env_id, num_envs=num_targets, device=device,
                        **(env_kwargs(run) if run is not None else {}))
    core = venv.unwrapped.core
    if run is not None:
        warm_start(core, run.warm_start, run.warm_start_k, run.seed)
    steps = gym.spec(env_id).max_episode_steps or 50
    deterministic = core.accept == "always"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        results = evaluate(core, lambda obs: model.predict(obs, deterministic=deterministic)[0],
                           max_steps=steps, seed=seed)
    return {"env_id": env_id, "seed": seed, "steps": model.num_timesteps,
            "warm_start": run.warm_start if run is not None else None,
            **env_kwargs(run or RunSettings()), **results.summary()}
