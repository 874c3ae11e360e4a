"""Screen: Adam in the box pulled by the prior's score as well as the distance's gradient.

``prior+gradient-patience`` and ``prior-rlft+gate+gradient-patience`` use the prior only for
their starts; Adam then follows the distance alone. On the straight path of flow matching
(``x_t = t x_1 + (1 - t) x_0``) the score of the prior's noised posterior is
``(t v(x, t) - x) / (1 - t)``, one call of the velocity net, so a search can also be pulled
toward presets the prior believes in for the target, as a MAP search is. Each step's
gradient becomes ``g - w |g| / |s| s`` per target (``g`` the distance's gradient in the box,
``s`` the score at ``--t`` in the box), so ``--weight`` is the pull's size relative to the
distance's; 0 is the shipped search. The gated method takes the score of the prior its gate
picks for each target.

It runs ``experiments/leaderboard.py`` with that gradient in every restart search (the rows
keep their names; give them their own ``--out``).

Usage (from the repository root):
    python experiments/screens/score_adam.py --help
    python experiments/screens/score_adam.py --weight 0.3 -- --suites data/vtune/val \\
        --methods prior-rlft+gate+gradient-patience prior+gradient-patience --budgets 100 \\
        --prior synthmatch/app/data/prior-subtractive.pt \\
        --gate synthmatch/app/data/gate-subtractive.pt --no-progress --out runs/v22/w0.3
"""

from __future__ import annotations

import argparse


def box_score(prior, embedding, u, t: float):
    """``(B, P)`` score of the prior's posterior noised to time ``t``, at presets ``u``
    ``(B, P)`` in the box (the flow's space is ``2 u - 1``; the factor 2 of the chain rule
    is left out, as the guidance is normalised)."""
    import torch

    from synthmatch.agents.prior import flow_score

    with torch.no_grad():
        x = 2.0 * u.to(prior.device) - 1.0
        time = torch.full((x.shape[0],), t, device=x.device)
        return flow_score(prior, x, time, embedding).cpu()


def guide(grad, score, weight: float):
    """``grad - weight |grad| / |score| score``, row by row (rows with no score unchanged)."""
    scale = grad.norm(dim=1, keepdim=True) / score.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return grad - weight * scale * score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weight", type=float, required=True,
                        help="the score's pull relative to the distance's gradient (0: the "
                             "shipped search)")
    parser.add_argument("--t", type=float, default=0.9,
                        help="the flow time whose noised posterior's score pulls (0 < t < 1)")
    from _leaderboard import add_leaderboard_args, run_leaderboard

    add_leaderboard_args(parser)
    args = parser.parse_args()
    if not args.weight >= 0:
        parser.error(f"--weight must be >= 0, got {args.weight}")
    if not 0 < args.t < 1:
        parser.error(f"--t must be in (0, 1), got {args.t}")
    import torch

    from synthmatch.agents import restarts
    from synthmatch.leaderboard.methods.prior import GatedPrior, PriorRestarts

    plain, shipped_run = restarts.render_with_grad, PriorRestarts.run

    def embed(prior, task):
        with torch.no_grad():
            return prior.embed(prior.mel(task.target_audio.to(prior.device)))

    def guided_run(self, task):
        priors = [(self.prior, embed(self.prior, task))]
        like = None
        if isinstance(self, GatedPrior):
            priors.append((self.base, embed(self.base, task)))
            like = self.synth_like(task).cpu()[:, None]

        def render_with_grad(render, u):
            d, grad = plain(render, u)
            scores = [box_score(p, e, u, args.t) for p, e in priors]
            score = scores[0] if like is None else torch.where(like, scores[1], scores[0])
            return d, guide(grad, score, args.weight)

        restarts.render_with_grad = render_with_grad
        try:
            return shipped_run(self, task)
        finally:
            restarts.render_with_grad = plain

    PriorRestarts.run = guided_run
    run_leaderboard(args.leaderboard_args)


if __name__ == "__main__":
    main()
