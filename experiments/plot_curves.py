"""Plot learning curves of several runs side by side, one line per run (seeds show as the
spread): a TensorBoard scalar of training runs (train_ppo.py, train_sac.py) or a key of the
per-round history of fine-tuning runs, the per-epoch one of critics or the per-episode one of
restart policies (the history.json of finetune_prior.py, train_critic.py and
train_restarts.py).

    python experiments/plot_curves.py --help
    python experiments/plot_curves.py runs/search_s0 runs/search_s1 runs/search_s2 \\
        --tag episode/best_distance --out docs/img/refiner_curves.png
    python experiments/plot_curves.py runs/finetune/ft_s0 runs/finetune/ft_s1 \\
        --tag val/val_pool_best_of_16 val/in_domain_best_of_16 --out docs/img/finetune.png
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import tyro

from synthmatch.cli import run


@dataclass
class Args:
    runs: Annotated[list[Path], tyro.conf.Positional] = field(default_factory=list)
    """run directories (TensorBoard events, or history.json)"""
    tag: tuple[str, ...] = ("episode/best_distance",)
    """scalars to plot, one panel each"""
    out: Path = Path("curves.png")
    """where to write the picture"""
    smooth: int = 1
    """moving-average window over points (TensorBoard curves are noisy)"""

# The x of a history.json row (its first key found here) and its axis label.
HISTORY_X = {"round": "round", "epoch": "epoch", "timesteps": "env steps"}


def series(run_dir: Path, tag: str) -> tuple[list[float], list[float]]:
    """(x, y) of ``tag``: rounds from history.json, else steps from TensorBoard events."""
    history = run_dir / "history.json"
    if history.is_file():
        rows = [r for r in json.loads(history.read_text()) if tag in r]
        return [next(r[k] for k in HISTORY_X if k in r) for r in rows], [r[tag] for r in rows]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps, values = [], []
    for events in sorted(run_dir.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags()["scalars"]:
            steps += [e.step for e in acc.Scalars(tag)]
            values += [e.value for e in acc.Scalars(tag)]
    return steps, values


def main(args: Args) -> None:
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not args.runs:
        raise ValueError("give at least one run directory")
    for r in args.runs:
        if not r.is_dir():
            raise FileNotFoundError(f"no run directory at {r}")
    fig = Figure(figsize=(5 * len(args.tag), 3.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(1, len(args.tag)))
    for ax, tag in zip(axes, args.tag, strict=True):
        found = [(r, *series(r, tag)) for r in args.runs]
        if not any(x for _, x, _ in found):
            raise ValueError(f"no run has {tag!r}")
        for r, x, y in found:
            if not x:  # a run that did not log it (an older version): a note, no line
                print(f"note: {r} has no {tag!r}")
                continue
            if args.smooth > 1 and len(y) >= args.smooth:
                y = np.convolve(y, np.ones(args.smooth) / args.smooth, mode="valid").tolist()
                x = x[args.smooth - 1:]
            ax.plot(x, y, marker="o" if len(x) < 20 else None, markersize=3, label=r.name)
        ax.set_title(tag)
        history = args.runs[0] / "history.json"
        first = json.loads(history.read_text())[0] if history.is_file() else {"timesteps": 0}
        ax.set_xlabel(next(HISTORY_X[k] for k in HISTORY_X if k in first))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run(main, Args, "plot_curves.py")
