"""Evaluate a trained policy (or the random-action baseline) on fixed, seeded held-out targets.

Each of ``--num-targets`` envs plays one episode against its own target (env i seeded with
``seed + i``), deterministically, for the env's 50 steps or until success. Writes a JSON summary
(median/mean final distance, success rate, param MAE, renders used) and, with ``--wav-dir``,
the target and matched sounds as WAV pairs.

    python experiments/evaluate.py runs/<run_name>/model.zip
    python experiments/evaluate.py --random-policy --env-id SynthMatch-Easy-v0
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import gymnasium as gym
import numpy as np
import torch
import tyro
from scipy.io import wavfile

import synthmatch  # noqa: F401  (registers the ids)
from synthmatch.agents.evaluation import HELD_OUT_SEED, evaluate, random_policy
from synthmatch.agents.training import load_model, read_config, run_dir_of, warm_start
from synthmatch.cli import run
from synthmatch.devices import resolve_device
from synthmatch.envs.registration import env_settings


@dataclass
class Args:
    checkpoint: Annotated[str | None, tyro.conf.Positional] = None
    """a run's model.zip or checkpoints/latest.zip (omit with --random-policy)"""
    random_policy: bool = False
    """evaluate uniform random actions instead of a checkpoint (the baseline)"""
    env_id: str | None = None
    """env to evaluate on (default: the checkpoint's, from its run's config.json)"""
    num_targets: int = 64
    """held-out targets, one episode each"""
    seed: int = HELD_OUT_SEED
    """seed of the first target (target i uses seed + i)"""
    device: str = "cpu"
    """device of env and policy"""
    out: str | None = None
    """JSON summary path (default: eval_<seed>.json beside the checkpoint's run, or stdout)"""
    wav_dir: str | None = None
    """write target_<i>.wav and match_<i>.wav for every target here"""
    warm_start: str | None = None
    """prior checkpoint whose samples start the episodes (default: the run's own --warm-start,
    from its config.json)"""


def main(args: Args) -> None:
    if args.random_policy == (args.checkpoint is not None):
        raise ValueError("give a checkpoint or --random-policy (exactly one)")
    if args.num_targets < 1:
        raise ValueError(f"--num-targets must be >= 1, got {args.num_targets}")
    if args.wav_dir is not None and Path(args.wav_dir).exists() and \
            not Path(args.wav_dir).is_dir():
        raise ValueError(f"--wav-dir {args.wav_dir} exists and is not a directory")
    config = {}
    if args.checkpoint is not None:
        checkpoint = Path(args.checkpoint)
        if not checkpoint.is_file():
            raise FileNotFoundError(f"no checkpoint at {checkpoint}")
        run_dir = run_dir_of(checkpoint)
        config = read_config(run_dir)
        if "env_id" not in config or "algo" not in config:
            raise FileNotFoundError(f"{run_dir / 'config.json'} not found: is {checkpoint} "
                                    "inside a training run?")
    env_id = args.env_id or config.get("env_id")
    if env_id is None:
        raise ValueError("--env-id is needed with --random-policy")
    env_settings(env_id)
    resolve_device(args.device)

    extra = {"max_step": config["max_step"]} if config.get("max_step") is not None else {}
    venv = gym.make_vec(env_id, num_envs=args.num_targets, device=args.device, **extra)
    core = venv.unwrapped.core
    prior = args.warm_start or config.get("warm_start")
    warm_start(core, prior, config.get("warm_start_k", 1))
    if args.random_policy:
        policy = random_policy(core.num_params, seed=args.seed)
    else:
        if env_id != config["env_id"]:
            raise ValueError(f"--env-id {env_id} differs from the model's env "
                             f"{config['env_id']}; a policy plays the env it was trained on")
        model = load_model(args.checkpoint, args.device, config=config)
        policy = lambda obs: model.predict(obs, deterministic=True)[0]  # noqa: E731
    results = evaluate(core, policy, max_steps=gym.spec(env_id).max_episode_steps or 50,
                       seed=args.seed)
    summary = {"env_id": env_id, "policy": "random" if args.random_policy else args.checkpoint,
               "seed": args.seed, "warm_start": prior, **results.summary()}
    text = json.dumps(summary, indent=2)
    out = args.out or (None if args.random_policy else str(run_dir / f"eval_{args.seed}.json"))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
        print(f"Summary written to {out}")
    print(text)
    if args.wav_dir:
        write_wavs(Path(args.wav_dir), core)


def write_wavs(folder: Path, core) -> None:
    """Target and final sound of every env as 32-bit float WAV files."""
    folder.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        matched = core.synth.render(core.params).cpu().numpy()
    targets = core.target_audio.cpu().numpy()
    rate = core.synth.sample_rate
    for i, (target, match) in enumerate(zip(targets, matched, strict=True)):
        wavfile.write(folder / f"target_{i:03d}.wav", rate, target.astype(np.float32))
        wavfile.write(folder / f"match_{i:03d}.wav", rate, match.astype(np.float32))
    print(f"{len(targets)} target/match WAV pairs in {folder}")


if __name__ == "__main__":
    run(main, Args, "evaluate.py")
