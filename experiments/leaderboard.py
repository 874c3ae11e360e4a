"""The leaderboard: every method on the benchmark suites at matched render budgets.

Each method gets the target audio and a render budget per target; the harness renders and
counts for it (a method cannot exceed or misreport its budget) and keeps the best preset each
method heard within each budget. Results per suite: a Markdown table (methods x budgets, the
best per column in bold), CSV and JSON with provenance, a curve of median distance against
renders, and a spectrogram grid of a few targets and their matches.

    python experiments/leaderboard.py --help
    python experiments/leaderboard.py --suites bench-v1/quick --methods default random cmaes \
        --budgets 1 16 --out /tmp/lb
    python experiments/leaderboard.py --suites bench-v1/subtractive-id \
        --prior runs/prior/subtractive/prior.pt --dataset data/subtractive \
        --rl-checkpoint runs/warm_s0/model.zip --out docs/leaderboard

Finished chunks of targets are cached under ``<out>/cache``: an interrupted run resumes where
it stopped. With ``--ray`` every missing chunk is a task on a Ray cluster, and its result lands
in the same cache: a local run and a Ray run continue each other and give the same table.
Exit status: 0 done, 2 bad arguments (unknown suite or method, a checkpoint that fits no
suite, --ray without Ray installed), 130 Ctrl-C.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro
from tqdm.auto import tqdm

import synthmatch
from synthmatch.devices import set_cpu_threads
from synthmatch.envs.registration import env_synth
from synthmatch.leaderboard import report
from synthmatch.leaderboard.document import DIRTY
from synthmatch.leaderboard.harness import CHUNK_SIZE, Job, method_budgets, run_job
from synthmatch.leaderboard.methods import METHODS, NEEDS
from synthmatch.leaderboard.suites import SuiteError, load_suite, sha256_file

DEFAULT_SUITES = ("bench-v1/subtractive-id", "bench-v1/fm-id", "bench-v1/torchsynth-id",
                  "bench-v1/cross-vst3", "bench-v1/cross-vital")


@dataclass
class Args:
    """Rank sound-matching methods on benchmark suites at matched render budgets."""

    suites: tuple[str, ...] = DEFAULT_SUITES
    """suites to run (bench-v1/quick, bench-v1/subtractive-id, ... or a suite directory)"""
    methods: tuple[str, ...] = tuple(METHODS)
    """methods to run; those needing a prior, dataset or checkpoint that is not given (or fits
    no suite's synth) are skipped with a note. Empty (a bare --methods): run nothing, only
    write --doc and --rankings from the results in --out"""
    budgets: tuple[int, ...] = (1, 16, 100, 1000)
    """renders per target (each method runs at every budget it supports)"""
    cap: tuple[str, ...] = ()
    """METHOD=BUDGET: run METHOD only up to BUDGET renders per target (to save time; its
    larger budgets show as "–"), e.g. --cap gradient=100 random=100"""
    prior: tuple[Path, ...] = ()
    """prior checkpoints (prior.pt from train_prior.py), matched to suites by synth"""
    dataset: tuple[Path, ...] = ()
    """datasets (make_dataset.py) for the nearest-neighbour method, matched by synth"""
    rl_checkpoint: tuple[Path, ...] = ()
    """trained policies (model.zip of train_ppo.py / train_sac.py), matched by env id"""
    critic: tuple[Path, ...] = ()
    """critics of a prior's samples (critic.pt of train_critic.py; each names its prior),
    matched by synth: prior+critic, or prior-rlft+critic for a fine-tuned prior's"""
    restart_policy: tuple[Path, ...] = ()
    """restart policies of gradient descent (policy.pt of train_restarts.py; each names its
    prior), matched by synth: the prior+gradient+rl method"""
    latent_policy: tuple[Path, ...] = ()
    """proposal policies of the search in a prior's noise space (policy.pt of
    train_latent.py; each names its prior), matched by synth: the prior+latent-rl method"""
    finetuned_prior: tuple[Path, ...] = ()
    """priors fine-tuned by reward (prior.pt of finetune_prior.py), matched by synth: the
    prior-rlft method"""
    gate: tuple[Path, ...] = ()
    """gates between a prior and its fine-tuning by reward (gate.pt of train_gate.py; each
    names both priors), matched by synth: the prior-rlft+gate and
    prior-rlft+gate+gradient-patience methods"""
    cross_env: str = "SynthMatch-v0"
    """env whose synth matches the cross-synth suites (their sounds have no parameters)"""
    device: str = "cpu"
    """cpu or cuda"""
    threads: int = 1
    """torch threads on the CPU. Results depend on it at the float-rounding level, which a
    search carries into other trajectories, so keep the 1 that every published row and every
    Ray task (one CPU each) ran with"""
    seed: int = 0
    """seed of every method's random draws"""
    max_targets: int | None = None
    """use only the first N targets of each suite (a quick look; not for publishing)"""
    chunk_size: int = CHUNK_SIZE
    """targets per unit of work (and cache file). Each chunk draws from its own seed, so
    another size gives the targets other random draws: keep one size for a table"""
    grid_targets: int = 4
    """targets shown in each suite's spectrogram grid"""
    out: Path = Path("leaderboard")
    """output directory: tables, CSV, JSON, plots and the cache"""
    doc: Path | None = None
    """also regenerate this Markdown page (docs/leaderboard.md) from every suite's results in
    --out, with the hand-written reading from --reading"""
    reading: Path = Path("docs/leaderboard_reading.md")
    """hand-written reading of the results, included in --doc"""
    rankings: Path | None = None
    """also write the order `synthmatch match --method auto` follows
    (synthmatch/app/data/rankings.json) from the results in --out"""
    progress: bool = True
    """show a progress bar"""
    update: bool = False
    """keep the rows of the methods this run does not run from each suite's JSON in --out
    (same suite, targets and seed): a method is added or re-run without re-running the
    others, and each row keeps the command that made it. The spectrogram grid stays as the
    last run without --update drew it"""
    ray: bool = False
    """run each (suite, method, chunk of targets) cell, all its budgets, as a Ray task (pip
    install 'synthmatch[ray]'), with one CPU each, or one GPU each with --device cuda; results
    land in the same cache as a local run"""
    ray_address: str | None = None
    """Ray cluster to use (implies --ray): the address `ray start --head` prints, or auto;
    default: the RAY_ADDRESS variable, else a Ray instance started on this machine"""


def fail(message: str) -> int:
    print(f"leaderboard.py: error: {message}", file=sys.stderr)
    return 2


def machine() -> str:
    """CPU model, threads and Python version (the processor name from /proc/cpuinfo)."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    return (f"{model}, {os.cpu_count()} logical cores, torch {torch.get_num_threads()} "
            f"threads, Python {platform.python_version()}")


def git_commit() -> str | None:
    """HEAD, with ``DIRTY`` appended when the code (the package or the scripts) differs from
    it, by an edit or by a file git does not track yet: such a run's cells were computed by
    code no commit holds. Ignored files (caches, runs) do not count."""
    root = Path(__file__).parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=root, check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--",
                                  "synthmatch", "experiments"], capture_output=True, text=True,
                                 cwd=root.parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + (DIRTY if changed else "")


def parse_caps(caps: tuple[str, ...]) -> dict[str, int]:
    """``("gradient=100",)`` -> ``{"gradient": 100}``."""
    out = {}
    for cap in caps:
        name, _, value = cap.partition("=")
        if name not in METHODS or not value.isdigit() or int(value) < 1:
            raise ValueError(f"--cap takes METHOD=BUDGET with a known method and a positive "
                             f"budget, got {cap!r}")
        out[name] = int(value)
    return out


class Resources:
    """Methods that need a file, loaded once and matched to each suite's synth."""

    def __init__(self, args: Args):
        from synthmatch.leaderboard.methods.nearest import Nearest
        from synthmatch.leaderboard.methods.prior import (
            FinetunedPrior,
            GatedPrior,
            GatedPriorRestarts,
            critic_method,
        )
        from synthmatch.leaderboard.methods.rl import PriorGradientRL, PriorLatentRL, load_rl

        wanted = set(args.methods)
        self.loaded: dict[str, list] = {"prior": [], "dataset": [], "rl_checkpoint": [],
                                        "critic": [], "finetuned_prior": [],
                                        "restart_policy": [], "latent_policy": [],
                                        "gate": []}
        prior_classes = [METHODS[name] for name in METHODS
                         if NEEDS.get(name) == "prior" and name in wanted]
        for path in args.prior:
            self.loaded["prior"].append([c(path, args.device) for c in prior_classes])
        if "prior-rlft" in wanted:
            self.loaded["finetuned_prior"] = [[FinetunedPrior(p, args.device)]
                                              for p in args.finetuned_prior]
        if wanted & {"prior+critic", "prior-rlft+critic"}:  # each critic names its prior
            self.loaded["critic"] = [[critic_method(p, args.device)] for p in args.critic]
        if "prior+gradient+rl" in wanted:  # each policy names its prior
            self.loaded["restart_policy"] = [[PriorGradientRL(p, args.device)]
                                             for p in args.restart_policy]
        if "prior+latent-rl" in wanted:  # each policy names its prior
            self.loaded["latent_policy"] = [[PriorLatentRL(p, args.device)]
                                            for p in args.latent_policy]
        gate_classes = [c for c in (GatedPrior, GatedPriorRestarts) if c.name in wanted]
        for path in args.gate:  # each gate names both priors
            self.loaded["gate"].append([c(path, args.device) for c in gate_classes])
        if "nearest" in wanted:
            self.loaded["dataset"] = [[Nearest(path)] for path in args.dataset]
        if wanted & {"rl", "prior+rl"}:
            self.loaded["rl_checkpoint"] = [[load_rl(p, args.device)]
                                            for p in args.rl_checkpoint]

    def methods_for(self, name: str, synth, env_id: str):
        """The instance of method ``name`` that fits ``synth`` (or None)."""
        if name not in NEEDS:
            return METHODS[name]()
        for group in self.loaded[NEEDS[name]]:
            for m in group:
                if m.name != name:
                    continue
                fits = (m.env_id == env_id if NEEDS[name] == "rl_checkpoint"
                        else m.matches_synth(synth))
                if fits:
                    return m
        return None

    def unused(self, synths: list) -> list[str]:
        """Files given on the command line that fit none of the suites."""
        out = []
        for kind, groups in self.loaded.items():
            for group in groups:
                if group and not any(
                        (m.env_id == env if kind == "rl_checkpoint" else m.matches_synth(s))
                        for s, env in synths for m in group[:1]):
                    m = group[0]
                    path = getattr(m, "critic_path", None) or getattr(m, "policy_path", None) \
                        or getattr(m, "gate_path", None) \
                        or getattr(m, "prior_path", None) \
                        or getattr(m, "path", None) or getattr(m, "checkpoint", None)
                    what = {"prior": "prior", "dataset": "dataset",
                            "rl_checkpoint": "RL checkpoint", "critic": "critic",
                            "finetuned_prior": "fine-tuned prior",
                            "restart_policy": "restart policy",
                            "latent_policy": "latent-search policy", "gate": "gate"}[kind]
                    out.append(f"{what} {path} fits none of the suites' synths "
                               f"({', '.join(sorted({e for _, e in synths}))})")
        return out


def main(args: Args) -> int:
    if not args.methods:  # run nothing: only regenerate from the results already in --out
        if args.doc is None and args.rankings is None:
            return fail("--methods is empty: name methods to run, or give --doc or "
                        "--rankings to regenerate them from the results in --out")
        return publish(args)
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        return fail(f"unknown method(s) {unknown}; available: {', '.join(METHODS)}")
    if not args.budgets or min(args.budgets) < 1:
        return fail("budgets must be positive integers")
    try:
        set_cpu_threads(args.threads)
    except ValueError as err:
        return fail(str(err))
    try:
        caps = parse_caps(args.cap)
    except ValueError as err:
        return fail(str(err))
    try:
        suites = [load_suite(name) for name in args.suites]
    except (SuiteError, ImportError) as err:
        return fail(str(err))
    if args.max_targets is not None:
        suites = [s.subset(slice(0, args.max_targets)) for s in suites]
    for suite in suites if args.update else ():
        earlier = report.results_path(args.out, suite.name)
        if earlier.is_file():
            try:
                report.check_mergeable(json.loads(earlier.read_text())["meta"], {
                    "suite": suite.name, "targets": len(suite), "seed": args.seed,
                    "chunk_size": args.chunk_size})
            except ValueError as err:
                return fail(f"--update: {earlier}: {err}")
    try:
        resources = Resources(args)
        synths = [(env_synth(s.env_id or args.cross_env, args.device), s.env_id or args.cross_env)
                  for s in suites]
    except (ValueError, FileNotFoundError, ImportError, KeyError) as err:
        return fail(str(err))
    unused = resources.unused(synths)
    if unused:
        return fail(unused[0])

    jobs, notes, commit = [], [], git_commit()
    for suite, (synth, env_id) in zip(suites, synths, strict=True):
        for name in args.methods:
            method = resources.methods_for(name, synth, env_id)
            if method is None:
                notes.append(f"{suite.name}: {name} skipped (no {NEEDS[name].replace('_', ' ')}"
                             f" for {env_id} given)")
                continue
            if method.needs_gradients and not synth.differentiable:
                notes.append(f"{suite.name}: {name} skipped ({synth.name} is not "
                             "differentiable)")
                continue
            budgets = method_budgets(method, [b for b in args.budgets
                                              if b <= caps.get(name, b)])
            if budgets:
                jobs.append(Job(suite, method, synth, budgets, args.seed, args.chunk_size,
                                env_id, code=commit))
    for note in notes:
        print(note)
    use_ray = args.ray or args.ray_address is not None
    if use_ray:
        from synthmatch.distributed import connect

        try:
            connect(args.ray_address, device=args.device)
        except (ImportError, ConnectionError, ValueError) as err:
            return fail(str(err))

    cache = args.out / "cache"
    cells = []
    total = sum(len(j.suite) for j in jobs)
    started = time.time()
    try:
        with tqdm(total=total, desc="targets x methods", disable=not args.progress) as bar:
            if use_ray:
                from synthmatch.leaderboard.ray_jobs import fill_cache_ray

                bar.set_postfix_str("on Ray")
                fill_cache_ray(jobs, cache, torch.device(args.device).type, bar)
            for job in jobs:
                bar.set_postfix_str(f"{job.suite.name} {job.method.name}")
                cells += run_job(job, cache, None if use_ray else bar)
    except KeyboardInterrupt:
        print(f"leaderboard.py: interrupted; finished chunks are cached in {cache}: run the "
              "same command to resume", file=sys.stderr)
        return 130
    write_outputs(args, suites, jobs, cells, time.time() - started, commit)
    return publish(args)


def publish(args: Args) -> int:
    """Regenerate the page (--doc) and the rankings (--rankings) from the results in --out."""
    from synthmatch.app.match import write_rankings
    from synthmatch.leaderboard.document import write_document

    for flag, path, write in (
            ("--doc", args.doc,
             lambda: write_document(args.out, args.doc, args.reading, DEFAULT_SUITES)),
            ("--rankings", args.rankings, lambda: write_rankings(args.out, args.rankings))):
        if path is None:
            continue
        try:
            write()
        except OSError as err:  # no results in --out, or a path that cannot be written
            return fail(f"{flag}: {err}")
        print(f"wrote {path}")
    return 0


def write_outputs(args: Args, suites, jobs, cells, elapsed: float,
                  commit: str | None) -> None:
    from synthmatch.leaderboard.document import run_config

    summaries = report.summarize(cells, seed=args.seed)
    files = (*args.prior, *args.rl_checkpoint, *args.critic, *args.finetuned_prior,
             *args.restart_policy, *args.latent_policy, *args.gate)
    meta = {
        "command": "python experiments/leaderboard.py " + shlex.join(sys.argv[1:]),
        "synthmatch": synthmatch.__version__, "torch": torch.__version__,
        "git_commit": commit, "machine": machine(),
        "device": args.device, "seed": args.seed, "budgets": list(args.budgets),
        "chunk_size": args.chunk_size, "elapsed_s": round(elapsed, 1),
        "methods": {f"{j.suite.name} {j.method.name}": j.method.settings() for j in jobs},
        "files": {str(p): sha256_file(p) for p in files},
        "file_configs": {str(p): config for p in files
                         if (config := run_config(p)) is not None},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for suite in suites:
        mine = [s for s in summaries if s["suite"] == suite.name]
        if not mine:
            continue
        slug = report.file_stem(suite.name)
        suite_meta = {**meta, "suite": suite.name, "targets": len(suite),
                      "param_errors": param_errors(suite, cells),
                      # the commits whose code computed each method's cells: earlier ones
                      # where they came from the cache, which is keyed on settings, files
                      # and draws, not on code
                      "computed_at": {c["method"]: c["computed_at"] for c in cells
                                      if c["suite"] == suite.name}}
        results = report.results_path(args.out, suite.name)
        # Decided before the results are written: a first run into an empty --out with
        # --update merges nothing, so it draws the grid like any first run.
        merging = args.update and results.is_file()
        if merging:
            mine, suite_meta = report.merge_results(json.loads(results.read_text()), mine,
                                                    suite_meta)
        report.write_csv(mine, args.out / f"{slug}.csv")
        report.write_json(mine, suite_meta, results)
        report.plot_curves(mine, suite.name, args.out / f"{slug}_curve.png")
        if not merging:
            grid(args, suite, [j for j in jobs if j.suite is suite], cells, slug)
        text = suite_markdown(suite, mine)
        (args.out / f"{slug}.md").write_text(text)
        print(text)
    print(f"tables, CSV, JSON and plots in {args.out}")


def param_errors(suite, cells) -> dict | None:
    """Mean absolute error of each true parameter for each method at its largest budget:
    which parameters a method recovers and which it misses (``None`` without true params)."""
    if suite.params is None:
        return None
    true = suite.params.numpy()
    out = {"param_names": suite.param_names, "methods": {}}
    for method in dict.fromkeys(c["method"] for c in cells if c["suite"] == suite.name):
        cell = max((c for c in cells if c["suite"] == suite.name and c["method"] == method),
                   key=lambda c: c["budget"])
        params = np.array([t["params"] for t in cell["targets"]])
        out["methods"][f"{method} ({cell['budget']})"] = \
            np.abs(params - true).mean(0).round(4).tolist()
    return out


def suite_markdown(suite, summaries) -> str:
    parts = [f"### {suite.name} ({len(suite)} targets)\n",
             "Perceptual distance (median [95% CI]; success is below 0.2):\n",
             report.markdown_table(summaries, suite.name, "distance"),
             "\nSuccess rate:\n", report.markdown_table(summaries, suite.name, "success_rate"),
             "\nMSS (the flow-matching paper's multi-scale spectral distance, dB):\n",
             report.markdown_table(summaries, suite.name, "mss"),
             "\nRMS-envelope cosine similarity:\n",
             report.markdown_table(summaries, suite.name, "envelope_cosine")]
    if suite.params is not None:
        parts += ["\nParameter MAE (normalised):\n",
                  report.markdown_table(summaries, suite.name, "param_mae")]
    parts += ["\nMean renders per target:\n",
              report.markdown_table(summaries, suite.name, "mean_renders"),
              "\nWall time (s, all targets):\n",
              report.markdown_table(summaries, suite.name, "wall_s")]
    return "\n".join(parts) + "\n"


def grid(args: Args, suite, jobs, cells, slug: str) -> None:
    """Spectrograms of the first targets and each method's match at (up to) 100 renders."""
    n = min(args.grid_targets, len(suite))
    matches = {}
    for job in jobs:
        mine = [c for c in cells if c["suite"] == suite.name and c["method"] == job.method.name]
        cell = max((c for c in mine if c["budget"] <= 100), key=lambda c: c["budget"],
                   default=None) or min(mine, key=lambda c: c["budget"])
        params = torch.tensor([t["params"] for t in cell["targets"][:n]])
        with torch.no_grad():
            matches[f"{job.method.name} ({cell['budget']})"] = \
                job.synth.render(params).cpu().numpy()
    if matches:
        report.plot_spectrogram_grid(suite.audio[:n].numpy(), matches, suite.sample_rate,
                                     args.out / f"{slug}_grid.png",
                                     target_names=suite.target_names[:n], title=suite.name,
                                     dpi=80)  # small enough to commit with every update


if __name__ == "__main__":
    try:
        sys.exit(main(tyro.cli(Args)))
    except KeyboardInterrupt:
        sys.exit(130)
