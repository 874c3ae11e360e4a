"""Fine-tune a prior by reward alone on sounds that have no parameters (RL fine-tuning of the
flow model: reward-filtered policy improvement, see synthmatch/agents/prior_finetune.py).

Make the pools first with experiments/make_sound_pool.py. Everything lands in
``runs/finetune/<run_name>/``: TensorBoard events, ``history.json`` (best-of-K distances on
the validation pool and on held-out synthetic targets, before and after every round) and
``prior.pt``, which the leaderboard takes with ``--finetuned-prior``.

    python experiments/finetune_prior.py --help
    python experiments/finetune_prior.py --prior runs/prior/subtractive/prior.pt \\
        --pool data/pool/train --val-pool data/pool/val --data data/subtractive
    tensorboard --logdir runs/finetune
"""

from __future__ import annotations

from pathlib import Path

from synthmatch.agents.prior_finetune import FinetuneSettings, finetune_prior
from synthmatch.cli import run
from synthmatch.data import DatasetError
from synthmatch.leaderboard.suites import SuiteError, load_suite


def load_pool(path: str, flag: str):
    if not (Path(path) / "manifest.json").is_file():
        raise FileNotFoundError(f"{flag}: no pool at {path} (make one with "
                                "experiments/make_sound_pool.py)")
    return load_suite(path)


def main(settings: FinetuneSettings) -> None:
    pool = load_pool(settings.pool, "--pool")
    val = load_pool(settings.val_pool, "--val-pool") if settings.val_pool else None
    sources = None if val is None else [t.get("source", "") for t in val.manifest["targets"]]
    finetune_prior(settings, pool.audio, None if val is None else val.audio,
                   val_sources=sources if sources and all(sources) else None)


if __name__ == "__main__":
    run(main, FinetuneSettings, "finetune_prior.py", errors=(DatasetError, SuiteError))
