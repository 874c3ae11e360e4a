"""The screen scripts under experiments/screens: they answer --help, and the headroom screen's
fitted rule picks each tercile's scale on one half and scores it on the other."""

import numpy as np
import torch

from synthmatch.leaderboard.meter import RenderMeter
from synthmatch.leaderboard.methods.base import MatchTask
from synthmatch.leaderboard.methods.prior import PriorLatentES
from synthmatch.rewards.perceptual import PerceptualDistance
from tests.agents.test_critic import subtractive_prior
from tests.agents.test_training import ROOT
from tests.data.helpers import load_script
from tests.inprocess import run_in_process


def test_every_screen_answers_help():
    screens = sorted(p for p in (ROOT / "experiments" / "screens").glob("*.py")
                     if not p.name.startswith("_"))  # _leaderboard.py: their shared helper
    assert screens
    for path in screens:
        assert "usage" in run_in_process(f"screens/{path.name}", "--help").stdout, path.name


def test_fitted_rule_applies_the_other_halfs_best_scale_per_tercile():
    headroom = load_script("screens/scale_headroom.py")
    n = 60
    start = np.linspace(0.1, 1.0, n)
    # Three scales; scale 0 is best for near starts, 2 for far ones, 1 in between.
    tercile = np.digitize(start, np.quantile(start, [1 / 3, 2 / 3]))
    by_scale = np.full((3, n), 1.0)
    by_scale[tercile, np.arange(n)] = 0.5
    chosen = headroom.fitted_rule(start, by_scale)
    # Away from the tercile edges (which move a little between halves) every target gets its
    # own best scale, though no target's own result was used to choose it.
    inner = np.abs(start[:, None] - np.quantile(start, [1 / 3, 2 / 3])).min(1) > 0.1
    assert inner.sum() > n / 3 and np.all(chosen[inner] == 0.5)
    assert (chosen == 0.5).mean() > 0.8
    # And a rule cannot beat each target's best scale.
    assert np.all(chosen >= by_scale.min(0))


def test_fitted_rule_never_chooses_on_the_targets_it_scores():
    headroom = load_script("screens/scale_headroom.py")
    n = 40
    start = np.linspace(0.1, 1.0, n)
    a, b = np.array_split(np.random.default_rng(0).permutation(n), 2)  # the rule's halves
    by_scale = np.empty((2, n))
    by_scale[:, a] = [[0.5], [0.9]]  # half a prefers scale 0
    by_scale[:, b] = [[0.8], [0.4]]  # half b prefers scale 1
    chosen = headroom.fitted_rule(start, by_scale)
    assert np.all(chosen[a] == 0.9) and np.all(chosen[b] == 0.8)


def test_latent_adam_starts_at_the_kept_sample_and_moves_its_noise_downhill(tmp_path):
    synth, _, prior_path = subtractive_prior(tmp_path)  # skips without flow_matching
    with torch.no_grad():
        audio = synth.render(synth.params.sample(2, torch.Generator().manual_seed(3)))
    screen = load_script("screens/latent_adam.py")
    method = PriorLatentES(prior_path)

    def match(run, budget):
        meter = RenderMeter(synth, PerceptualDistance(synth.sample_rate), audio, budget)
        meter.check_rendered(run(method, MatchTask(synth, meter, 0)))
        return meter

    adam = match(screen.latent_adam_run(0.1), 24)
    es = match(PriorLatentES.run, 24)
    assert adam.used.tolist() == [24, 24]
    # The same best of 16, then the kept sample itself is the first step's render.
    torch.testing.assert_close(adam.history_params[:, :16], es.history_params[:, :16])
    best = adam.history_distance[:, :16].argmin(1)
    torch.testing.assert_close(adam.history_params[:, 16], adam.history_params[[0, 1], best])
    # Later renders differ from it: the gradient reached the noise and moved it.
    assert not torch.allclose(adam.history_params[:, 17], adam.history_params[:, 16])


def test_score_adams_score_is_the_noised_posteriors_and_its_pull_is_relative():
    """The score the score-guided screen adds is that of the flow's marginal at time t (an
    exact Gaussian flow is the oracle: N(t m, t^2 s^2 + (1 - t)^2)), and its pull has
    ``weight`` times the distance gradient's size, row by row (0: the shipped step)."""
    from tests.agents.test_prior_finetune import GaussianFlow

    score_adam = load_script("screens/score_adam.py")
    flow = GaussianFlow(m=0.4, s=0.3)
    flow.device = torch.device("cpu")
    u = torch.rand(5, 3, generator=torch.Generator().manual_seed(0))
    t = 0.9
    x = 2 * u - 1
    expected = -(x - t * 0.4) / (t ** 2 * 0.3 ** 2 + (1 - t) ** 2)
    torch.testing.assert_close(score_adam.box_score(flow, None, u, t), expected)
    grad = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(score_adam.guide(grad, expected, 0.0), grad)
    pull = grad - score_adam.guide(grad, expected, 0.3)
    torch.testing.assert_close(pull.norm(dim=1), 0.3 * grad.norm(dim=1))
    cos = torch.nn.functional.cosine_similarity(pull, expected, dim=1)
    torch.testing.assert_close(cos, torch.ones(5))


def test_diverse_restart_order_matches_a_plain_greedy_loop():
    """The restart screen's vectorised order equals a per-target greedy loop (the oracle); at
    radius 0 it is the shipped order, and a near copy of the first start is pushed back."""
    screen = load_script("screens/diverse_restarts.py")
    gen = torch.Generator().manual_seed(0)
    starts = torch.rand(6, 9, 4, generator=gen)
    for radius in (0.0, 0.2, 0.35, 10.0):
        order = screen.diverse_order(starts, radius)
        for b in range(starts.shape[0]):
            chosen = [0]
            while len(chosen) < starts.shape[1]:
                rest = [j for j in range(starts.shape[1]) if j not in chosen]
                far = [j for j in rest if min(
                    float((starts[b, j] - starts[b, c]).square().mean().sqrt())
                    for c in chosen) >= radius]
                chosen.append((far or rest)[0])
            assert order[b].tolist() == chosen, (radius, b)
    assert torch.equal(screen.diverse_order(starts, 0.0), torch.arange(9).expand(6, 9))
    near = torch.tensor([[[0.5, 0.5], [0.51, 0.5], [0.9, 0.1], [0.1, 0.9]]])
    assert screen.diverse_order(near, 0.1)[0].tolist() == [0, 2, 3, 1]
