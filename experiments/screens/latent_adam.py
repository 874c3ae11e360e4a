"""Screen: Adam in the prior's noise space, through the flow and the synth.

``prior+latent-es`` and ``prior+latent-cmaes`` search the flow's starting noise by proposals
alone. Here the noise of each target's best of 16 is moved by Adam on the distance's gradient,
carried back through the synth's render and the flow's ODE (16 midpoint steps, as the prior
samples). Discrete columns snap straight-through. Each step renders once, so the renders are
counted as ``prior+gradient``'s are. Two questions:

- part 1 (Voice): is a direction from the local gradient, more information than any
  proposal policy observes, worth anything to the noise-space search?
- part 2 (Vital): does a search that stays on the prior's learned presets keep more of the
  fine-tuned prior's lead than Adam in the parameter box does?

It runs ``experiments/leaderboard.py`` with the ``prior+latent-es`` row's search replaced by
this one (the rows keep that name; give them their own ``--out``).

Usage (from the repository root):
    python experiments/screens/latent_adam.py --help
    python experiments/screens/latent_adam.py --lr 0.03 -- --suites data/valvital/val \\
        --methods prior+latent-es --budgets 100 --prior runs/v16/rlft_as_base.pt \\
        --no-progress --out runs/v18/ladam_rlft
"""

from __future__ import annotations

import argparse

import torch


def latent_adam_run(lr: float):
    """A ``PriorLatentES.run`` that moves each target's kept noise by Adam."""
    from synthmatch.leaderboard.methods.base import best_so_far

    def run(self, task):
        search = self.start(task)
        prior = self.prior.eval().requires_grad_(False)
        z = search.z.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        while int(task.meter.remaining().min()) > 0:
            x = prior.sample_flow(search.embedding, z, enable_grad=True)
            soft = ((x + 1.0) * 0.5).clamp(0.0, 1.0)
            u = soft + (prior.to_unit(x.detach()) - soft).detach()
            d = task.meter.score(u[:, None, search.columns].to(task.synth.device), grad=True)
            opt.zero_grad()
            d.sum().backward()
            opt.step()
        return best_so_far(task.meter)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lr", type=float, default=0.03, help="Adam's step size in noise units")
    from _leaderboard import add_leaderboard_args, run_leaderboard

    add_leaderboard_args(parser)
    args = parser.parse_args()
    from synthmatch.leaderboard.methods.prior import PriorLatentES

    PriorLatentES.run = latent_adam_run(args.lr)
    run_leaderboard(args.leaderboard_args)


if __name__ == "__main__":
    main()
