"""Train the conditional flow-matching prior (target audio -> synth parameters) on a dataset.

Make the dataset first with experiments/make_dataset.py. Everything lands in
``runs/prior/<run_name>/``: TensorBoard events (training and validation loss, and the
perceptual distance of re-rendered prior samples), ``checkpoints/latest.pt`` and ``prior.pt``.

    python experiments/make_dataset.py --synth subtractive --n 200000 --out data/subtractive
    python experiments/train_prior.py --data data/subtractive
    python experiments/train_prior.py --resume runs/prior/<run_name>/checkpoints/latest.pt
    tensorboard --logdir runs/prior

Use the result with ``train_ppo.py --warm-start runs/prior/<run_name>/prior.pt`` or
``experiments/prior_results.py``.
"""

from __future__ import annotations

from synthmatch.agents.prior_training import PriorSettings, train_prior
from synthmatch.cli import run
from synthmatch.data import DatasetError


def main(settings: PriorSettings) -> None:
    train_prior(settings)


if __name__ == "__main__":
    run(main, PriorSettings, "train_prior.py", errors=(DatasetError,))
