"""Compare trained runs with the starting point and a random-action policy; plot learning curves.

For every run directory given, reads its held-out evaluation (``eval.json``, written at the end
of training) and its TensorBoard curve of ``episode/final_distance``. Evaluates the
random-action policy on the same held-out targets with the same number of steps. Prints a
markdown table and writes a PNG of the learning curves.

    python experiments/learning_results.py runs/easy_ppo_s0 runs/easy_ppo_s1 --out docs/easy.png
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import gymnasium as gym
import tyro
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import synthmatch  # noqa: F401  (registers the ids)
from synthmatch.agents.evaluation import evaluate, random_policy


@dataclass
class Args:
    runs: Annotated[list[str], tyro.conf.Positional] = field(default_factory=list)
    """training run directories (each with eval.json and TensorBoard events)"""
    out: str = "learning_curves.png"
    """where to write the learning-curve picture"""
    title: str = ""
    """title of the picture (default: the env id)"""


def curve(run: Path, tag: str = "episode/final_distance") -> tuple[list[int], list[float]]:
    steps, values = [], []
    for events in sorted(run.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            for e in acc.Scalars(tag):
                steps.append(e.step)
                values.append(e.value)
    return steps, values


def main(args: Args) -> None:
    if not args.runs:
        raise SystemExit("give at least one run directory")
    runs = [Path(r) for r in args.runs]
    evals = [json.loads((r / "eval.json").read_text()) for r in runs]
    env_ids = {e["env_id"] for e in evals}
    if len(env_ids) != 1:
        raise SystemExit(f"runs are on different envs: {sorted(env_ids)}")
    env_id = env_ids.pop()
    first = evals[0]
    # The random-action baseline takes the first run's step size (max_step) if it set one.
    extra = {"max_step": first["max_step"]} if first.get("max_step") is not None else {}
    venv = gym.make_vec(env_id, num_envs=first["num_targets"], **extra)
    steps = gym.spec(env_id).max_episode_steps or 50
    baseline = evaluate(venv.unwrapped.core, random_policy(venv.unwrapped.core.num_params),
                        max_steps=steps, seed=first["seed"]).summary()

    print(f"Held-out targets: {first['num_targets']} (seeds {first['seed']}...), "
          f"{steps} steps per episode, env {env_id}\n")
    print("| policy | training steps | median final distance | mean final distance "
          "| success rate | median param MAE | mean renders |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| start (no step) | - | {baseline['median_initial_distance']:.3f} | - | - | - | 1 |")
    warm = {e["warm_start"]: e for e in evals if e.get("warm_start")}
    for prior, e in warm.items():
        print(f"| start: prior sample ({Path(prior).parent.name}) | - | "
              f"{e['median_initial_distance']:.3f} | - | - | - | 1 |")
    rows = [("random actions", "-", baseline)] + [
        (f"PPO {r.name}" + (" (warm start)" if e.get("warm_start") else ""), f"{e['steps']:,}", e)
        for r, e in zip(runs, evals, strict=True)]
    for name, trained, s in rows:
        print(f"| {name} | {trained} | {s['median_final_distance']:.3f} | "
              f"{s['mean_final_distance']:.3f} | {s['success_rate']:.2f} | "
              f"{s['median_param_mae']:.3f} | {s['mean_renders']:.1f} |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for run in runs:
        x, y = curve(run)
        ax.plot(x, y, label=run.name, linewidth=1.2)
    ax.axhline(baseline["mean_final_distance"], color="gray", linestyle="--",
               label="random actions (held-out mean)")
    ax.axhline(baseline["median_initial_distance"], color="black", linestyle=":",
               label="start (held-out median)")
    for e in warm.values():
        ax.axhline(e["median_initial_distance"], color="tab:green", linestyle=":",
                   label="prior sample (held-out median)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("final distance of training episodes (mean)")
    ax.set_title(args.title or env_id)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"\nLearning curves: {args.out}")


if __name__ == "__main__":
    main(tyro.cli(Args))
