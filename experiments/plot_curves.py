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
    python experiments/plot_curves.py runs/untrained_s0 runs/lat_s0 --base runs/untrained_s0 \\
        --tag rollout/ep_rew_mean train/approx_kl --out docs/img/ppo.png   # SB3's scalars

After the picture it prints a table of each curve's first, last, lowest and highest point
(and with ``--base`` its differences from the base run's curve).
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
    base: Path | None = None
    """a run to print every run's difference from (point by point, unsmoothed): the mean over
    the second half of the points and the last point; e.g. an untrained run on the same
    targets"""

# The x of a history.json row (its first key found here) and its axis label.
HISTORY_X = {"round": "round", "epoch": "epoch", "timesteps": "env steps"}


def series(run_dir: Path, tag: str) -> tuple[list[float], list[float]]:
    """(x, y) of ``tag``: rounds from history.json where it has the tag, else steps from the
    TensorBoard events anywhere under the run (SB3 writes them in a subdirectory)."""
    history = run_dir / "history.json"
    rows = [r for r in json.loads(history.read_text()) if tag in r] if history.is_file() else []
    if rows:
        return [next(r[k] for k in HISTORY_X if k in r) for r in rows], [r[tag] for r in rows]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps, values = [], []
    for events in sorted(run_dir.rglob("events.out.tfevents.*")):
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
    if args.base is not None and not args.base.is_dir():
        raise FileNotFoundError(f"--base: no run directory at {args.base}")
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
    print_summary(args)


def print_summary(args: Args) -> None:
    """A Markdown table of each run's curves: first, last, lowest and highest point, and with
    ``--base`` the differences from the base run's curve."""
    against = args.base is not None
    print("\n| run | tag | first | last | min | max |"
          + (f" - {args.base.name}, mean over the second half | - {args.base.name}, last |"
             if against else ""))
    print("|---|---|---:|---:|---:|---:|" + ("---:|---:|" if against else ""))
    for tag in args.tag:
        base = series(args.base, tag)[1] if against else []
        for r in args.runs:
            y = series(r, tag)[1]
            if not y:
                continue
            row = f"| {r.name} | {tag} | {y[0]:.3g} | {y[-1]:.3g} | {min(y):.3g} | {max(y):.3g} |"
            n = min(len(y), len(base))
            if against and n:
                d = [a - b for a, b in zip(y[:n], base[:n], strict=True)]
                half = d[n // 2:]
                row += f" {sum(half) / len(half):+.3g} | {d[-1]:+.3g} |"
            elif against:
                row += " | |"
            print(row)


if __name__ == "__main__":
    run(main, Args, "plot_curves.py")
