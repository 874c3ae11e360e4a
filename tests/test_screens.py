"""The screen scripts under experiments/screens: they answer --help, and the headroom screen's
fitted rule picks each tercile's scale on one half and scores it on the other."""

import numpy as np

from tests.agents.test_training import ROOT, run_script
from tests.data.helpers import load_script


def test_every_screen_answers_help():
    screens = sorted((ROOT / "experiments" / "screens").glob("*.py"))
    assert screens
    for path in screens:
        assert "usage" in run_script(f"screens/{path.name}", "--help").stdout, path.name


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
