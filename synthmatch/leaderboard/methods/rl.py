"""A trained PPO or SAC policy (``experiments/train_ppo.py`` / ``train_sac.py``): one episode
per target, through the env's own batched core, so the policy sees exactly what it was trained
on. The core's synth is a view of the render meter: the episode's first render and every step
count, and a warm-started run's prior samples count too.

Two methods: ``rl`` runs a policy trained with ``--accept always`` for one deterministic
episode; ``prior+rl`` runs a refiner trained with ``--warm-start ... --accept improve`` (every
step a proposal the env keeps only if it sounds closer) from the prior's best of K, sampling
its actions, until the budget is spent. :func:`load_rl` picks the one a checkpoint was
trained for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from synthmatch.fileio import named_prior
from synthmatch.leaderboard.meter import RenderMeter
from synthmatch.leaderboard.methods.base import MatchTask, Method, best_so_far
from synthmatch.leaderboard.methods.prior import HYBRID_K, Prior, PriorLatentES, PriorRestarts
from synthmatch.synths import Synth


class MeteredSynth(Synth):
    """A synth whose every render goes through a :class:`RenderMeter` (row ``i`` is target
    ``i``'s render)."""

    def __init__(self, meter: RenderMeter):
        super().__init__(meter.synth.params, meter.synth.probe, meter.device)
        self.meter = meter
        self.name = meter.synth.name

    def _render(self, params: Tensor) -> Tensor:
        return self.meter.render(params)


class RLPolicy(Method):
    """One episode of a trained policy per target, deterministic actions.

    Args:
        checkpoint: ``model.zip`` or ``checkpoints/latest.zip`` of a training run; the run's
            ``config.json`` gives the env id, step size and warm start.
        device: Where the policy runs.
    """

    name = "rl"
    # Steps of the one episode per target; None: until the budget is spent.
    episode_steps: int | None = 50

    def __init__(self, checkpoint: str | Path, device: str = "cpu"):
        from synthmatch.agents.training import load_model, read_config, run_dir_of

        self.checkpoint = Path(checkpoint)
        if not self.checkpoint.is_file():
            raise FileNotFoundError(f"RL checkpoint {self.checkpoint} does not exist")
        self.config = read_config(run_dir_of(self.checkpoint))
        if "env_id" not in self.config or "algo" not in self.config:
            raise ValueError(f"{self.checkpoint}: its run has no config.json with env_id and "
                             "algo (is it a train_ppo.py / train_sac.py run?)")
        self.accept = self.config.get("accept", "always")
        warm = self.config.get("warm_start")
        self.check_mode(warm)  # before the loads: a wrong kind of run costs nothing
        self.env_id = self.config["env_id"]
        self.model = load_model(self.checkpoint, device, config=self.config)
        self.prior = Prior(warm, device) if warm else None
        self.k = int(self.config.get("warm_start_k", 1)) if warm else 0
        self.min_budget = self.k + 2
        self.max_budget = (None if self.episode_steps is None
                           else self.k + 1 + self.episode_steps)

    def check_mode(self, warm_start: str | None) -> None:
        if self.accept != "always":
            raise ValueError(f"{self.checkpoint} was trained with --accept {self.accept}: it is "
                             "the prior+rl method's refiner, not an rl policy")

    def settings(self) -> dict[str, Any]:
        return {"checkpoint": str(self.checkpoint), "algo": self.config["algo"],
                "env_id": self.env_id, "warm_start": self.config.get("warm_start"),
                "warm_start_k": self.k, "max_step": self.config.get("max_step"),
                "timesteps": int(self.model.num_timesteps),
                **({} if self.accept == "always" else {"accept": self.accept,
                                                       "extractor": self.config.get("extractor")})}

    def files(self) -> list[Path]:
        return [self.checkpoint, *(self.prior.files() if self.prior is not None else [])]

    def run(self, task: MatchTask) -> Tensor:
        from synthmatch.agents.training import env_kwargs
        from synthmatch.envs.core import SynthMatchCore

        meter, b = task.meter, task.num_targets
        core = SynthMatchCore(b, MeteredSynth(meter), device=meter.device,
                              **env_kwargs(self.config))
        start: Any = "default"
        if self.prior is not None:
            start = self.prior.best_of(task, self.k)[0][:, 0]
        audio = task.target_audio.cpu().numpy()
        core.reset_envs(torch.arange(b), options={
            "target_audio": list(audio), "target_sample_rate": task.synth.sample_rate,
            "start": start})
        self.episode(core, task)
        return best_so_far(meter)

    def episode(self, core, task: MatchTask) -> None:
        """One deterministic episode; an env that succeeds keeps still from then on."""
        done = np.zeros(task.num_targets, dtype=bool)
        for _ in range(self.episode_steps):
            if int(task.meter.remaining().min()) == 0 or done.all():
                break
            actions = self.act(core, deterministic=True)
            actions[done] = 0.0  # a finished episode keeps still (its renders still count)
            done |= core.step(torch.as_tensor(actions)).terminated.cpu().numpy()

    def act(self, core, deterministic: bool) -> np.ndarray:
        obs = {k: v.cpu().numpy() for k, v in core.observation().items()}
        return np.asarray(self.model.predict(obs, deterministic=deterministic)[0],
                          dtype=np.float32)


class PriorRL(RLPolicy):
    """The prior's best of K, then a refiner trained with ``--accept improve``: its sampled
    proposals, each kept only if closer, until the budget is spent (anytime, like CMA-ES).

    Actions are sampled (a deterministic policy would repeat a rejected proposal forever), from
    torch's generator seeded by the task, restored afterwards.
    """

    name = "prior+rl"
    episode_steps = None

    def check_mode(self, warm_start: str | None) -> None:
        if self.accept != "improve" or not warm_start:
            raise ValueError(f"{self.checkpoint}: prior+rl needs a refiner trained with "
                             "--warm-start and --accept improve; use it as an rl policy")

    def episode(self, core, task: MatchTask) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(task.seed * 1_000_003 + 2)
            while int(task.meter.remaining().min()) > 0:
                core.step(torch.as_tensor(self.act(core, deterministic=False)))


def load_rl(checkpoint: str | Path, device: str = "cpu") -> RLPolicy:
    """The method a checkpoint was trained for: :class:`PriorRL` (``--accept improve``) or
    :class:`RLPolicy`."""
    from synthmatch.agents.training import read_config, run_dir_of

    accept = read_config(run_dir_of(checkpoint)).get("accept", "always")
    return (PriorRL if accept == "improve" else RLPolicy)(checkpoint, device)


class PriorGradientRL(PriorRestarts):
    """:class:`~synthmatch.leaderboard.methods.prior.PriorRestarts` with a learned rule: a
    policy trained with ``experiments/train_restarts.py`` decides after every render whether
    the gradient run goes on or restarts from the next-best sample (its most likely action).
    The policy's settings name the prior and Adam's step size; a shipped policy
    (``names_relative``) names a prior beside it, pinned by sha256."""

    name = "prior+gradient+rl"

    def __init__(self, policy_path: str | Path, device: str = "cpu"):
        from synthmatch.agents.restarts import load_policy

        self.policy_path = Path(policy_path)
        self.policy, meta = load_policy(policy_path)
        trained = meta["settings"]
        if trained["k"] != HYBRID_K:
            raise ValueError(f"{policy_path} was trained on the best of {trained['k']} samples; "
                             f"this method starts from the best of {HYBRID_K}")
        self.timesteps = int(meta["timesteps"])
        prior = trained["prior"]
        if meta.get("names_relative"):
            prior = named_prior({**meta, "prior": prior}, "prior", policy_path,
                                "the restart policy")
        super().__init__(prior, device, lr=trained["lr"])

    def settings(self) -> dict[str, Any]:
        settings = {**super().settings(), "policy": str(self.policy_path),
                    "timesteps": self.timesteps}
        del settings["patience"]
        return settings

    def files(self) -> list[Path]:
        return [self.policy_path, *super().files()]

    def rule(self):
        from synthmatch.agents.restarts import LearnedRule

        return LearnedRule(self.policy)


class PriorLatentRL(PriorLatentES):
    """:class:`~synthmatch.leaderboard.methods.prior.PriorLatentES` with learned steps: a
    policy trained with ``experiments/train_latent.py`` proposes each step in the prior's noise
    space, sampled from its Gaussian with the task's normals. The policy's settings name the
    prior."""

    name = "prior+latent-rl"

    def __init__(self, policy_path: str | Path, device: str = "cpu"):
        from synthmatch.agents.latent import load_policy
        from synthmatch.fileio import load_weights

        self.policy_path = Path(policy_path)
        ckpt = load_weights(policy_path, "latent policy")
        if not isinstance(ckpt, dict) or ckpt.get("kind") != "latent_policy":
            raise ValueError(f"{policy_path} is not a latent-search policy (policy.pt of "
                             "train_latent.py)")
        trained = ckpt["settings"]
        if trained["k"] != HYBRID_K:
            raise ValueError(f"{policy_path} was trained on the best of {trained['k']} samples; "
                             f"this method starts from the best of {HYBRID_K}")
        super().__init__(trained["prior"], device)
        self.policy, meta = load_policy(policy_path, self.prior)
        self.timesteps = int(meta["timesteps"])

    def settings(self) -> dict[str, Any]:
        settings = {**super().settings(), "policy": str(self.policy_path),
                    "timesteps": self.timesteps}
        del settings["sigma"]
        return settings

    def files(self) -> list[Path]:
        return [self.policy_path, *super().files()]

    def step(self, search, generator: torch.Generator) -> Tensor:
        from synthmatch.agents.latent import policy_step

        return policy_step(self.policy, search, generator)
