"""Methods built on the flow-matching prior: best of K samples, and refining the best of K
with CMA-ES, gradient descent or a (1+1) evolution strategy (the prior's samples count as
renders)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from synthmatch.fileio import file_stamp, named_prior
from synthmatch.leaderboard.methods.base import MatchTask, Method, best_so_far
from synthmatch.leaderboard.methods.gradient import (
    STEPS_PER_START,
    adam_search,
    require_gradients,
)
from synthmatch.leaderboard.methods.search import cmaes_search

# Samples drawn before a hybrid starts refining (16: the prior's best of 16 is where its
# returns flatten, docs/results.md).
HYBRID_K = 16
# CMA-ES around the prior's best: a small step, as the start is close. Tuned with
# experiments/tune_methods.py --grid prior-cmaes-sigma0 on 16 validation targets of
# SynthMatch-v0: median distance 0.214 at 100 renders and 0.201 at 300 for 0.01; 0.005-0.02
# end within 0.003 of each other at 300; 0.05 gives 0.248, 0.1-0.2 about 0.29.
PRIOR_CMAES_SIGMA0 = 0.01
# Tuned with --grid prior-gradient-lr on the same 16 validation targets: median 0.138 at 100
# renders and 0.101 at 300 for 0.01, against 0.151/0.112 for 0.003 and 0.201/0.118 for 0.03.
PRIOR_GRADIENT_LR = 0.01
# (1+1)-ES around the prior's best: tuned with --grid prior-es-sigma on 32 validation targets
# of SynthMatch-v0: median 0.213 at 100 renders and 0.192 at 300 for 0.005, against
# 0.233/0.221 for 0.002, 0.221/0.189 for 0.01 and 0.241/0.206 for 0.02 (prior+cmaes on the
# same targets: 0.219 at 100).
PRIOR_ES_SIGMA = 0.005
# Prior samples ranked per target per draw (drawing them renders nothing). Tuned with
# --grid prior-critic-proposals on 128 validation targets of SynthMatch-v0 (critic seed 0):
# median 0.465/0.291/0.242 at 1/16/100 renders for 256, against 0.445/0.294/0.256 for 64 and
# 0.454/0.309/0.246 for 1,024 (the central order with 256: 0.459/0.291/0.253).
CRITIC_PROPOSALS = 256
# Renders a gradient run may go without improving by 0.5% before prior+gradient-patience
# restarts it. Tuned with --grid prior-gradient-restarts on 64 validation targets of
# SynthMatch-v0: median 0.126/0.104/0.098 at 100/200/300 renders for 10, against
# 0.129/0.118/0.114 for 5 and 0.136/0.104/0.096 for 20 (prior+gradient, restarting every 100
# renders: 0.138/0.103/0.099).
RESTART_PATIENCE = 10
# Where restarts go once the best HYBRID_K samples have each been searched from: fresh
# samples. Restarting from one again repeated its run exactly (Adam is deterministic): on 16
# validation Vital sounds the patience rule's best stopped changing by 400 renders from the
# gate's samples and by 800 from the prior's (docs/results.md, tenth session).
PAST_K = "fresh samples"


def _read_once(load: Callable[[Path, str], Any]) -> Callable[..., Any]:
    """``load(path, device)`` for a checkpoint, read once per process while the file is
    unchanged (the match command checks a prior and then runs it; a leaderboard run builds
    several methods on one prior, and a critic's method reads the critic to learn its prior).
    The methods only sample from what it returns, so sharing it is safe. A missing file goes
    straight to ``load``, for its own error."""

    @functools.lru_cache(maxsize=4)
    def cached(path: str, stamp: tuple[int, int], device: str) -> Any:
        return load(Path(path), device)

    def read(path: str | Path, device: str = "cpu") -> Any:
        path = Path(path)
        if not path.is_file():
            return load(path, str(device))
        return cached(str(path.resolve()), file_stamp(path), str(device))

    return read


def _flow_prior(path: Path, device: str):
    from synthmatch.agents.prior import FlowPrior

    return FlowPrior.load(path, device)


def _critic(path: Path, device: str):
    from synthmatch.agents.critic import load_critic

    return load_critic(path, device)


def _gate(path: Path, device: str):
    from synthmatch.agents.gate import load_gate

    return load_gate(path, device)


load_prior = _read_once(_flow_prior)
load_critic = _read_once(_critic)
load_gate = _read_once(_gate)


def draw_samples(prior, task: MatchTask, k: int, offset: int) -> Tensor:
    """``(B, k, P)`` samples of ``prior`` for every target of ``task``, in the synth's
    columns (draw ``offset`` of the task's seed)."""
    from synthmatch.agents.matching import check_compatible

    columns = check_compatible(prior, task.synth)
    with torch.no_grad():
        u = prior.sample_audio(task.target_audio.to(prior.device), k,
                               generator=draw_generator(prior, task, offset))
    return u[..., columns].to(task.synth.device)


def draw_generator(prior, task: MatchTask, offset: int) -> torch.Generator:
    """The generator of draw ``offset`` of the task's seed, on the prior's device."""
    return torch.Generator(prior.device).manual_seed(task.seed * 1_000_003 + offset)


class PriorMethod(Method):
    """Shared loading and sampling of a prior checkpoint.

    A prior fine-tuned by ``experiments/finetune_prior.py`` is only taken by the methods that
    say so (:attr:`finetuned`), so the table never mixes the two up.
    """

    finetuned: ClassVar[bool] = False

    def __init__(self, prior_path: str | Path, device: str = "cpu"):
        self.prior_path = Path(prior_path)
        self.prior = load_prior(prior_path, device)
        tuned = self.prior.finetuned is not None
        if tuned and not self.finetuned:
            raise ValueError(f"{self.prior_path} was made by finetune_prior.py: give it with "
                             "--finetuned-prior")
        if self.finetuned and not tuned:
            raise ValueError(f"{self.prior_path} was not made by finetune_prior.py: give it "
                             "with --prior")

    def settings(self) -> dict[str, Any]:
        return {"prior": str(self.prior_path), "ode_steps": 16}

    def files(self) -> list[Path]:
        return [self.prior_path]

    def matches_synth(self, synth) -> bool:
        from synthmatch.agents.matching import check_compatible

        try:
            check_compatible(self.prior, synth)
        except ValueError:
            return False
        return self.prior.config.data.get("synth") == synth.name

    def sample(self, task: MatchTask, k: int, offset: int) -> Tensor:
        """``(B, k, P)`` prior samples for every target, in the synth's columns."""
        return draw_samples(self.prior, task, k, offset)

    def fresh_starts(self, task: MatchTask) -> Callable[[int], Tensor]:
        """``cycle -> (B, K, P)`` unranked samples (draw ``cycle`` of the task's seed): where a
        search's restarts go once the best K are used up, instead of repeating a run it has
        made."""
        return lambda cycle: self.sample(task, HYBRID_K, cycle).cpu()

    def best_of(self, task: MatchTask, k: int) -> tuple[Tensor, Tensor]:
        """Render ``k`` samples per target; return them ``(B, k, P)`` ranked by distance."""
        samples = self.sample(task, k, 0)
        d = task.meter.score(samples)
        order = d.argsort(1).cpu()
        return samples.cpu().gather(1, order[..., None].expand_as(samples.cpu())), d


class Prior(PriorMethod):
    """The best of K prior samples (K = the budget)."""

    name = "prior"

    def run(self, task: MatchTask) -> Tensor:
        meter, draw = task.meter, 0
        while int(meter.remaining().min()) > 0:
            k = meter.next_stop() - int(meter.used.min())
            meter.score(self.sample(task, k, draw))
            draw += 1
        return best_so_far(meter)


class PriorCMAES(PriorMethod):
    """The prior's best of 16, refined by CMA-ES (step size :data:`PRIOR_CMAES_SIGMA0`)."""

    name = "prior+cmaes"
    min_budget = HYBRID_K + 2

    def __init__(self, prior_path: str | Path, device: str = "cpu", *,
                 sigma0: float = PRIOR_CMAES_SIGMA0):
        super().__init__(prior_path, device)
        self.sigma0 = sigma0

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "k": HYBRID_K, "sigma0": self.sigma0,
                "restarts": "IPOP"}

    def run(self, task: MatchTask) -> Tensor:
        ranked, _ = self.best_of(task, HYBRID_K)
        cmaes_search(task, ranked[:, 0], self.sigma0, seed_offset=1)
        return best_so_far(task.meter)


class PriorGradient(PriorMethod):
    """The prior's best of 16, refined by Adam; restarts from the next-best samples."""

    name = "prior+gradient"
    min_budget = HYBRID_K + 2
    needs_gradients = True

    def __init__(self, prior_path: str | Path, device: str = "cpu", *,
                 lr: float = PRIOR_GRADIENT_LR, steps_per_start: int = STEPS_PER_START):
        super().__init__(prior_path, device)
        self.lr, self.steps_per_start = lr, steps_per_start

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "k": HYBRID_K, "lr": self.lr,
                "steps_per_start": self.steps_per_start, "past_k": PAST_K}

    def run(self, task: MatchTask) -> Tensor:
        ranked, _ = self.best_of(task, HYBRID_K)
        fresh = functools.lru_cache(maxsize=None)(self.fresh_starts(task))  # one draw a cycle
        adam_search(task, lambda r: ranked[:, r] if r < HYBRID_K
                    else fresh(r // HYBRID_K)[:, r % HYBRID_K],
                    lr=self.lr, steps_per_start=self.steps_per_start)
        return best_so_far(task.meter)


class PriorES(PriorMethod):
    """The prior's best of 16, then a (1+1) evolution strategy: one Gaussian proposal per
    target per render (step ``sigma`` in every normalised parameter), kept if it sounds closer.

    The baseline the ``prior+rl`` refiner must beat: the same accept-if-closer loop, with
    proposals that learned nothing.
    """

    name = "prior+es"
    min_budget = HYBRID_K + 2

    def __init__(self, prior_path: str | Path, device: str = "cpu", *,
                 sigma: float = PRIOR_ES_SIGMA):
        super().__init__(prior_path, device)
        self.sigma = sigma

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "k": HYBRID_K, "sigma": self.sigma}

    def run(self, task: MatchTask) -> Tensor:
        ranked, d = self.best_of(task, HYBRID_K)
        x, best = ranked[:, 0], d.min(1).values.cpu()
        gen = task.generator(1)
        while int(task.meter.remaining().min()) > 0:
            proposal = (x + self.sigma * torch.randn(x.shape, generator=gen)).clamp(0.0, 1.0)
            dp = task.meter.score(proposal[:, None].to(task.synth.device))[:, 0].cpu()
            keep = dp < best
            x = torch.where(keep[:, None], proposal, x)
            best = torch.where(keep, dp, best)
        return best_so_far(task.meter)


class PriorLatentES(PriorMethod):
    """The prior's best of 16, then a (1+1) evolution strategy in the prior's noise space
    (:class:`~synthmatch.agents.latent.LatentSearch`): each render proposes the kept noise plus
    a Gaussian step (``sigma`` per coordinate), carried through the flow to a preset, and keeps
    it if it sounds closer. The control that ``prior+latent-rl`` must beat."""

    name = "prior+latent-es"
    min_budget = HYBRID_K + 1
    # The task's random stream the steps draw from (the samples draw from stream 0).
    step_stream = 1

    def __init__(self, prior_path: str | Path, device: str = "cpu", *,
                 sigma: float | None = None):
        from synthmatch.agents.latent import SIGMA

        super().__init__(prior_path, device)
        self.sigma = SIGMA if sigma is None else sigma

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "k": HYBRID_K, "sigma": self.sigma}

    def step(self, search, generator: torch.Generator) -> Tensor:
        """The step in noise space of every target's next proposal."""
        return self.sigma * torch.randn(search.z.shape, generator=generator)

    def start(self, task: MatchTask):
        """The search from each target's best of 16 (the draw ``prior`` makes), rendered."""
        from synthmatch.agents.latent import LatentSearch

        return LatentSearch.start(self.prior, task.synth, task.target_audio, HYBRID_K,
                                  draw_generator(self.prior, task, 0), task.meter.score)

    def run(self, task: MatchTask) -> Tensor:
        search = self.start(task)
        gen = task.generator(self.step_stream)
        while int(task.meter.remaining().min()) > 0:
            proposal = search.propose(self.step(search, gen))
            search.record(task.meter.score(proposal[:, None].to(task.synth.device))[:, 0])
        return best_so_far(task.meter)


class PriorLatentCMAES(PriorLatentES):
    """The prior's best of 16, then CMA-ES (pycma) in the prior's noise space from its noise:
    each generation's population is carried through the flow in one batch (with every other
    target's) and rendered as one, where ``prior+latent-es`` decodes and renders one proposal
    per target per render. IPOP restarts start from a fresh standard normal noise."""

    name = "prior+latent-cmaes"
    min_budget = HYBRID_K + 2

    def __init__(self, prior_path: str | Path, device: str = "cpu", *,
                 sigma: float | None = None, popsize: int | None = None):
        super().__init__(prior_path, device, sigma=sigma)
        self.popsize = popsize

    def settings(self) -> dict[str, Any]:
        settings = {**super().settings(), "sigma0": self.sigma,
                    "popsize": "4 + 3 ln P" if self.popsize is None else self.popsize,
                    "restarts": "IPOP"}
        del settings["sigma"]
        return settings

    def run(self, task: MatchTask) -> Tensor:
        search = self.start(task)
        cmaes_search(task, search.z, self.sigma, seed_offset=1, popsize=self.popsize,
                     decode=lambda z, owners: search.decode(z, owners).to(task.synth.device))
        return best_so_far(task.meter)


class PriorRestarts(PriorMethod):
    """The prior's best of 16, then Adam (:data:`PRIOR_GRADIENT_LR`) that restarts from the
    next-best sample when a rule says so (:class:`~synthmatch.agents.restarts.RestartingAdam`).
    Here the rule is untrained: restart once a run has stalled for ``patience`` renders, the
    control that ``prior+gradient+rl`` must beat."""

    name = "prior+gradient-patience"
    min_budget = HYBRID_K + 2
    needs_gradients = True

    def __init__(self, prior_path: str | Path, device: str = "cpu", *,
                 patience: int = RESTART_PATIENCE, lr: float = PRIOR_GRADIENT_LR):
        super().__init__(prior_path, device)
        self.patience, self.lr = patience, lr

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "k": HYBRID_K, "lr": self.lr, "patience": self.patience,
                "past_k": PAST_K}

    def rule(self):
        from synthmatch.agents.restarts import PatienceRule

        return PatienceRule(self.patience)

    def run(self, task: MatchTask) -> Tensor:
        from synthmatch.agents.restarts import RestartingAdam, render_with_grad

        require_gradients(task.synth)
        ranked, d = self.best_of(task, HYBRID_K)
        search = RestartingAdam(ranked, d.sort(1).values.cpu(), self.lr,
                                redraw=self.fresh_starts(task))
        rule = self.rule()

        def render(x: Tensor) -> Tensor:
            return task.meter.score(x[:, None], grad=True)[:, 0].cpu()

        search.record(*render_with_grad(render, search.u))
        while int(task.meter.remaining().min()) > 0:
            search.advance(rule(search))
            search.record(*render_with_grad(render, search.u))
        return best_so_far(task.meter)


class PriorCentral(PriorMethod):
    """The prior's samples rendered in a ranked order: :data:`CRITIC_PROPOSALS` samples per
    target, free to draw, the best ranked first; a budget past that many renders ranks a fresh
    draw. Here the ranking is untrained, the samples nearest their coordinate-wise median
    first (the prior's mode, roughly): the control that ``prior+critic`` must beat.
    """

    name = "prior+central"

    def __init__(self, prior_path: str | Path, device: str = "cpu", *,
                 proposals: int = CRITIC_PROPOSALS):
        if proposals < 1:
            raise ValueError(f"proposals must be >= 1, got {proposals}")
        super().__init__(prior_path, device)
        self.proposals = proposals

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "proposals": self.proposals}

    def rank(self, task: MatchTask, samples: Tensor) -> Tensor:
        """``samples`` ``(B, K, P)``, each target's in the order to render them."""
        from synthmatch.agents.critic import central_order

        order = central_order(samples)
        return samples.gather(1, order[..., None].expand_as(samples))

    def run(self, task: MatchTask) -> Tensor:
        meter, draw = task.meter, 0
        while int(meter.remaining().min()) > 0:
            ranked = self.rank(task, self.sample(task, self.proposals, draw))
            used = 0
            while int(meter.remaining().min()) > 0 and used < self.proposals:
                k = min(meter.next_stop() - int(meter.used.min()), self.proposals - used)
                meter.score(ranked[:, used:used + k])
                used += k
            draw += 1
        return best_so_far(meter)


class PriorCritic(PriorCentral):
    """:class:`PriorCentral` with a learned ranking: a critic (``experiments/train_critic.py``)
    that predicts each sample's distance to the target without rendering it. The critic's
    checkpoint names its prior."""

    name = "prior+critic"

    def __init__(self, critic_path: str | Path, device: str = "cpu", *,
                 proposals: int = CRITIC_PROPOSALS):
        self.critic_path = Path(critic_path)
        self.critic, meta = load_critic(critic_path, device)
        prior_path = named_prior(meta, "prior", critic_path, "the critic")
        super().__init__(prior_path, device, proposals=proposals)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "critic": str(self.critic_path)}

    def files(self) -> list[Path]:
        return [self.critic_path, *super().files()]

    def rank(self, task: MatchTask, samples: Tensor) -> Tensor:
        from synthmatch.agents.critic import rank_proposals
        from synthmatch.envs.core import SynthMatchCore

        # The meter already holds the targets' features: the critic's view is their log-mel.
        mel = SynthMatchCore.scale_mel(task.meter.target_features.log_mel)
        return rank_proposals(self.critic.to(samples.device), mel, samples, task.synth.params)


class FinetunedPriorCritic(PriorCritic):
    """:class:`PriorCritic` on a prior fine-tuned by reward (``prior-rlft``'s checkpoint),
    with a critic trained on sounds without parameters (``train_critic.py --pool``): both
    learned from rewards alone."""

    name = "prior-rlft+critic"
    finetuned = True


def critic_method(critic_path: str | Path, device: str = "cpu") -> PriorCritic:
    """The method a critic checkpoint is for: :class:`FinetunedPriorCritic` if the prior it
    ranks was fine-tuned by reward, else :class:`PriorCritic`."""
    prior_path = Path(load_critic(critic_path, device)[1]["prior"])
    tuned = prior_path.is_file() and load_prior(prior_path, device).finetuned is not None
    return (FinetunedPriorCritic if tuned else PriorCritic)(critic_path, device)


class FinetunedPrior(Prior):
    """The best of K samples of a prior fine-tuned by reward on sounds without parameters
    (``experiments/finetune_prior.py``): the same method as ``prior``, another checkpoint."""

    name = "prior-rlft"
    finetuned = True

    def settings(self) -> dict[str, Any]:
        tuned = self.prior.finetuned
        return {**super().settings(), "finetuned_from": tuned.get("from"),
                "rounds": tuned.get("rounds"), "k": tuned.get("k"), "seed": tuned.get("seed")}


class GatedPrior(FinetunedPrior):
    """The best of K samples of one of two priors per target, as a gate picks
    (``experiments/train_gate.py``): the prior trained on the synth's renders for the sounds
    the gate finds synth-like, the prior fine-tuned by reward (``prior-rlft``'s) for the rest.
    Routing renders nothing. The gate's checkpoint names both priors."""

    name = "prior-rlft+gate"

    def __init__(self, gate_path: str | Path, device: str = "cpu"):
        from synthmatch.agents.gate import check_pair

        self.gate_path = Path(gate_path)
        self.gate, meta = load_gate(gate_path, device)
        super().__init__(named_prior(meta, "finetuned", gate_path, "the gate"), device)
        self.base_path = named_prior(meta, "prior", gate_path, "the gate")
        self.base = load_prior(self.base_path, device)
        check_pair(self.base, self.prior)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "gate": str(self.gate_path),
                "base_prior": str(self.base_path)}

    def files(self) -> list[Path]:
        return [self.gate_path, self.base_path, *super().files()]

    def judge(self, audio: Tensor) -> Tensor:
        """``(B,)`` bool: which sounds ``(B, T)`` the gate finds synth-like (sends to the
        synthetic-data prior), on the gate's device."""
        from synthmatch.agents.gate import gate_mel, synth_like

        mel = gate_mel(self.base, audio.to(self.base.device))
        return synth_like(self.gate.to(mel.device), mel)

    def synth_like(self, task: MatchTask) -> Tensor:
        """``(B,)`` bool: the targets the gate sends to the synthetic-data prior."""
        return self.judge(task.target_audio).to(task.synth.device)

    def sample(self, task: MatchTask, k: int, offset: int) -> Tensor:
        # Both priors draw for every target with the same seeds, so a target's samples are
        # exactly those prior or prior-rlft would draw for it.
        tuned = super().sample(task, k, offset)
        base = draw_samples(self.base, task, k, offset)
        return torch.where(self.synth_like(task)[:, None, None], base, tuned)


class GatedPriorRestarts(PriorRestarts, GatedPrior):
    """``prior+gradient-patience`` from the gate's prior instead of the synthetic-data prior:
    the best of 16 samples of the prior the gate picks for each target, then Adam with the
    patience rule of restarts. Its control is ``prior+gradient-patience``: the same search,
    the same seeds, from the prior that never heard a sound without parameters."""

    name = "prior-rlft+gate+gradient-patience"

    def __init__(self, gate_path: str | Path, device: str = "cpu", *,
                 patience: int = RESTART_PATIENCE, lr: float = PRIOR_GRADIENT_LR):
        GatedPrior.__init__(self, gate_path, device)
        self.patience, self.lr = patience, lr
