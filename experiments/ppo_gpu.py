"""PPO that lives on the device: one readable file over the torch-native vector env (CleanRL's
ppo_continuous_action.py is the model).

The envs return torch tensors on ``--device`` (``array_type="torch"``); rollout storage, GAE and
the minibatch updates stay there, and actions go back as device tensors. Nothing reaches the
host but one small transfer of statistics per update. The network and PPO's settings are SB3's
(``train_ppo.py``), so the two learn alike at equal env steps; the run directory, TensorBoard
tags and ``eval.json`` are also the same, so ``learning_results.py`` plots both side by side.

    python experiments/ppo_gpu.py --help
    python experiments/ppo_gpu.py --env-id SynthMatch-v0 --total-timesteps 1000000
    python experiments/ppo_gpu.py --device cpu --num-envs 16 --batch-size 256   # small, on CPU
    python experiments/ppo_gpu.py --resume runs/<run_name>/checkpoints/latest.pt
    python experiments/learning_results.py runs/<train_ppo run> runs/<ppo_gpu run> --out cmp.png
    tensorboard --logdir runs
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
import tyro
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

import synthmatch  # noqa: F401  (registers the ids)
from synthmatch.agents.media import log_media
from synthmatch.agents.torch_ppo import Agent, DeterministicPredictor, gae
from synthmatch.agents.training import (
    RunSettings,
    env_kwargs,
    evaluate_model,
    resumed_settings,
    run_dir_of,
    warm_start,
)
from synthmatch.cli import fail as cli_fail
from synthmatch.cli import given_flags
from synthmatch.devices import resolve_device
from synthmatch.envs.registration import env_settings
from synthmatch.fileio import load_weights, temporary_name, write_json_atomic

ALGO = "ppo_gpu"
# TensorBoard tags as train_ppo.py writes them (SB3's train/ names), so runs compare directly.
EPISODE_TAGS = ("episode/return", "episode/length", "episode/final_distance",
                "episode/best_distance", "episode/success_rate", "episode/param_mae")
TRAIN_TAGS = ("train/policy_gradient_loss", "train/value_loss", "train/entropy_loss",
              "train/approx_kl", "train/clip_fraction")


@dataclass
class Args(RunSettings):
    """The shared run settings, with defaults for one GPU, and PPO's (SB3's defaults)."""

    env_id: str = "SynthMatch-v0"
    """registered environment id (see README for the list)"""
    total_timesteps: int = 1_000_000
    """environment steps to train for, summed over envs (a resumed run continues to this)"""
    num_envs: int = 1024
    """parallel episodes, stepped as one batch on the device (16 suits a 2-core CPU)"""
    device: str = "cuda"
    """device of envs, storage and policy: cuda, cuda:N or cpu"""
    checkpoint_every: int = 250_000
    """steps between checkpoints (one is also written at the end and on Ctrl-C)"""
    media_every: int = 250_000
    """steps between audio clips and spectrogram pictures in TensorBoard"""
    n_steps: int = 64
    """steps per env between PPO updates"""
    batch_size: int = 4096
    """PPO minibatch size (large: on a GPU the CNN's updates, not the envs, bound the speed)"""
    n_epochs: int = 5
    """PPO epochs per update"""
    learning_rate: float = 3e-4
    """Adam learning rate (constant, as in train_ppo.py)"""
    gamma: float = 0.99
    """discount factor"""
    gae_lambda: float = 0.95
    """GAE's lambda"""
    clip_range: float = 0.2
    """PPO's clipping of the probability ratio"""
    ent_coef: float = 0.0
    """entropy bonus"""
    vf_coef: float = 0.5
    """weight of the value loss"""
    max_grad_norm: float = 0.5
    """gradients are clipped to this global norm"""
    log_std_init: float = 0.0
    """initial log standard deviation of the Gaussian policy"""


def fail(message: object) -> NoReturn:
    """A user mistake: one line on stderr and exit status 2 (synthmatch.cli's contract)."""
    cli_fail("ppo_gpu.py", message)


def resumed(args: Args, argv: Sequence[str]) -> Args:
    """``args`` with the settings of the run that ``args.resume`` belongs to, by the rule every
    training script shares (:func:`synthmatch.agents.training.resumed_settings`)."""
    try:
        return resumed_settings(args, given_flags(argv), ALGO)[0]
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))


def check(args: Args) -> None:
    """Refuse settings that cannot work, saying what is allowed."""
    for name in ("num_envs", "total_timesteps", "n_steps", "batch_size", "n_epochs",
                 "checkpoint_every", "media_every", "eval_targets", "warm_start_k"):
        if getattr(args, name) < 1:
            fail(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name, low, high in (("gamma", 0, 1), ("gae_lambda", 0, 1), ("clip_range", 0, None),
                            ("learning_rate", 0, None), ("max_grad_norm", 0, None)):
        value = getattr(args, name)
        if not (value > low and (high is None or value <= high)):
            fail(f"--{name.replace('_', '-')} must be in ({low}, {high or 'inf'}], got {value}")
    try:
        env_settings(args.env_id)
        resolve_device(args.device)
    except ValueError as err:
        fail(f"{err}" + ("; on CPU, use fewer envs (e.g. --num-envs 16 --batch-size 256)"
                         if "CUDA is not available" in str(err) else ""))


def save_checkpoint(path: Path, agent: Agent, optimizer: torch.optim.Optimizer,
                    global_step: int, args: Args) -> None:
    """Model, optimiser, step and settings as plain tensors and values (``torch.load`` reads it
    with ``weights_only=True``), written through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    torch.save({"model": agent.state_dict(), "optimizer": optimizer.state_dict(),
                "global_step": global_step, "args": asdict(args)}, tmp)
    os.replace(tmp, path)


def main(args: Args, argv: Sequence[str] = ()) -> Path:
    if args.resume:
        args = resumed(args, argv)
    check(args)
    if args.run_name is None:
        args = replace(args, run_name=f"{args.env_id}__{ALGO}__{args.seed}__{int(time.time())}")
    run_dir = run_dir_of(args.resume) if args.resume else Path(args.log_dir) / args.run_name
    latest = run_dir / "checkpoints" / "latest.pt"
    device = torch.device(args.device)

    state: dict[str, Any] | None = None
    if args.resume:
        try:
            state = load_weights(args.resume, "ppo_gpu.py checkpoint")
        except ValueError as err:
            fail(err)
    global_step = int(state["global_step"]) if state else 0

    # ---- Seeding: python, numpy and torch; env i gets seed + i. A resumed run shifts every
    # seed by its step count, so it meets new targets rather than replaying the first ones.
    seed = args.seed + global_step
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

    envs = gym.make_vec(args.env_id, num_envs=args.num_envs,
                        vectorization_mode="vector_entry_point", array_type="torch",
                        device=device, **env_kwargs(args))
    core = envs.unwrapped.core
    warm_start(core, args.warm_start, args.warm_start_k, args.seed)
    agent = Agent(envs.single_observation_space, core.num_params, args.features_dim,
                  args.log_std_init).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    if state:
        agent.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        print(f"Resuming {run_dir} at step {global_step:,} with its config.json settings")
    else:
        write_json_atomic(run_dir / "config.json", {"algo": ALGO, **asdict(args)})
    next_obs, _ = envs.reset(seed=seed)

    writer = SummaryWriter(str(run_dir))
    writer.add_text("hyperparameters", "|setting|value|\n|-|-|\n" + "\n".join(
        f"|{k}|{v}|" for k, v in asdict(args).items()), global_step)

    # Rollout storage, on the device.
    T, N, P = args.n_steps, args.num_envs, core.num_params
    obs = {k: torch.zeros((T, *v.shape), device=device) for k, v in next_obs.items()}
    actions = torch.zeros((T, N, P), device=device)
    logprobs, rewards, values, final_values = (torch.zeros((T, N), device=device)
                                               for _ in range(4))
    terminateds, truncateds = (torch.zeros((T, N), dtype=torch.bool, device=device)
                               for _ in range(2))
    episode_return = torch.zeros(N, device=device)
    episode_length = torch.zeros(N, device=device)

    next_media = (global_step // args.media_every + 1) * args.media_every
    next_checkpoint = (global_step // args.checkpoint_every + 1) * args.checkpoint_every
    n_updates = 0
    progress = tqdm(total=args.total_timesteps, initial=global_step, unit="step",
                    unit_scale=True, dynamic_ncols=True)
    try:
        while global_step < args.total_timesteps:
            start_time, start_step = time.perf_counter(), global_step
            # Sums over the episodes that end in this rollout, in EPISODE_TAGS order, then the
            # number of those episodes and of those with a known param_mae (the last tag).
            sums = torch.zeros(len(EPISODE_TAGS) + 2, device=device)
            for step in range(T):
                global_step += N
                for k, v in next_obs.items():
                    obs[k][step] = v
                with torch.no_grad():
                    action, logprobs[step], _, values[step] = agent.get_action_and_value(next_obs)
                actions[step] = action
                next_obs, reward, terminated, truncated, infos = envs.step(action.clamp(-1.0, 1.0))
                with torch.no_grad():  # every env's, masked in gae(): no branch on the host
                    final_values[step] = agent.get_value(infos["final_obs"])
                rewards[step], terminateds[step], truncateds[step] = reward, terminated, truncated

                episode_return += reward
                episode_length += 1
                ended, last = infos["_final_info"], infos["final_info"]
                known = ended & ~torch.isnan(last["param_mae"])
                weight = ended.float()
                sums += torch.stack([
                    (episode_return * weight).sum(), (episode_length * weight).sum(),
                    (last["distance"] * weight).sum(), (last["best_distance"] * weight).sum(),
                    (last["is_success"].float() * weight).sum(),
                    torch.where(known, last["param_mae"], 0.0).sum(), weight.sum(),
                    known.float().sum()])
                episode_return *= 1.0 - weight
                episode_length *= 1.0 - weight
                if global_step >= next_media:
                    next_media = (global_step // args.media_every + 1) * args.media_every
                    log_media(writer, core, global_step)
            rollout_time = time.perf_counter() - start_time

            with torch.no_grad():
                next_value = agent.get_value(next_obs)
            advantages, returns = gae(rewards, values, terminateds, truncateds, final_values,
                                      next_value, args.gamma, args.gae_lambda)

            # Optimising the policy and value network, over shuffled minibatches.
            b_obs = {k: v.reshape(T * N, *v.shape[2:]) for k, v in obs.items()}
            b_actions, b_logprobs = actions.reshape(T * N, P), logprobs.reshape(-1)
            b_advantages, b_returns = advantages.reshape(-1), returns.reshape(-1)
            losses = []
            for _ in range(args.n_epochs):
                order = torch.randperm(T * N, device=device)
                for first in range(0, T * N, args.batch_size):
                    mb = order[first:first + args.batch_size]
                    _, newlogprob, entropy, newvalue = agent.get_action_and_value(
                        {k: v[mb] for k, v in b_obs.items()}, b_actions[mb])
                    logratio = newlogprob - b_logprobs[mb]
                    ratio = logratio.exp()
                    mb_advantages = b_advantages[mb]
                    if len(mb) > 1:
                        mb_advantages = ((mb_advantages - mb_advantages.mean())
                                         / (mb_advantages.std() + 1e-8))
                    pg_loss = torch.max(-mb_advantages * ratio, -mb_advantages * ratio.clamp(
                        1 - args.clip_range, 1 + args.clip_range)).mean()
                    v_loss = F.mse_loss(newvalue, b_returns[mb])  # SB3's: no 0.5, no clipping
                    entropy_loss = -entropy.mean()
                    loss = pg_loss + args.ent_coef * entropy_loss + args.vf_coef * v_loss
                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                    optimizer.step()
                    with torch.no_grad():
                        losses.append(torch.stack([
                            pg_loss, v_loss, entropy_loss, ((ratio - 1) - logratio).mean(),
                            ((ratio - 1).abs() > args.clip_range).float().mean()]))

            # One transfer to the host per update: the means of the losses and of the episodes
            # that ended in the rollout (NaN, so not logged, where none did).
            counts = torch.cat([sums[-2].expand(len(EPISODE_TAGS) - 1), sums[-1:]])
            b_values = values.reshape(-1)
            scalars = dict(zip(EPISODE_TAGS, sums[:-2] / counts, strict=True))
            scalars |= dict(zip(TRAIN_TAGS, torch.stack(losses).mean(0), strict=True))
            scalars["train/loss"] = loss.detach()
            scalars["train/std"] = agent.actor_logstd.exp().mean()
            scalars["train/explained_variance"] = (1 - (b_returns - b_values).var()
                                                   / b_returns.var())
            host = dict(zip(scalars, torch.stack(list(scalars.values())).tolist(), strict=True))
            n_updates += args.n_epochs
            steps, elapsed = global_step - start_step, time.perf_counter() - start_time
            host |= {"train/learning_rate": args.learning_rate,
                     "train/clip_range": args.clip_range, "train/n_updates": n_updates,
                     "time/env_steps_per_second": steps / elapsed,
                     "time/rollout_steps_per_second": steps / rollout_time}
            for tag, value in host.items():
                if not math.isnan(value):
                    writer.add_scalar(tag, value, global_step)
            progress.update(steps)
            if global_step >= next_checkpoint:
                next_checkpoint = (global_step // args.checkpoint_every + 1) * args.checkpoint_every
                save_checkpoint(latest, agent, optimizer, global_step, args)
    except KeyboardInterrupt:
        save_checkpoint(latest, agent, optimizer, global_step, args)
        print(f"\nInterrupted at step {global_step}; checkpoint saved, resume with "
              f"--resume {latest}", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        progress.close()
        writer.close()
    save_checkpoint(latest, agent, optimizer, global_step, args)
    save_checkpoint(run_dir / "model.pt", agent, optimizer, global_step, args)

    agent.eval()
    summary = evaluate_model(DeterministicPredictor(agent, device, global_step), args.env_id,
                             args.eval_targets, args.device, run=args)
    write_json_atomic(run_dir / "eval.json", summary)
    print(f"TensorBoard logs: {run_dir}   (tensorboard --logdir {run_dir.parent})")
    print(f"Checkpoint: {latest}   Final policy: {run_dir / 'model.pt'}")
    print(f"Evaluation on {summary['num_targets']} held-out targets: {run_dir / 'eval.json'} "
          f"(median distance {summary['median_initial_distance']:.3f} at the start, "
          f"{summary['median_final_distance']:.3f} at the end)")
    return run_dir


if __name__ == "__main__":
    main(tyro.cli(Args), sys.argv[1:])
