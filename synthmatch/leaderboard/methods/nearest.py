"""Nearest neighbours in a dataset made by ``experiments/make_dataset.py``.

Retrieval is by Euclidean distance between log-mel spectrograms (dB, the dataset's own mel
settings), which needs no render: the dataset holds them. The retrieved presets are then
rendered in order of that distance and scored by the perceptual distance, so renders =
candidates checked, as for the prior's samples.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from synthmatch.leaderboard.methods.base import MatchTask, Method, best_so_far

# Dataset rows compared per matrix product (bounds the float32 copy of the float16 mels).
RETRIEVAL_CHUNK = 16384


def dataset_columns(dataset_names: tuple[str, ...], synth_names: tuple[str, ...],
                    what: str) -> list[int]:
    """Columns of ``dataset_names`` that give ``synth_names``, in the synth's order."""
    missing = [n for n in synth_names if n not in dataset_names]
    if missing:
        raise ValueError(f"{what} has no parameter(s) {missing[:5]} of the suite's synth; it "
                         f"was made for {len(dataset_names)} other parameters")
    return [dataset_names.index(n) for n in synth_names]


class Nearest(Method):
    """The dataset presets whose log-mels are closest to the target's.

    Args:
        dataset: Dataset directory (its ``train`` split is searched).
    """

    name = "nearest"

    def __init__(self, dataset: str | Path):
        from synthmatch.data import open_dataset

        self.path = Path(dataset)
        self.dataset = open_dataset(self.path)
        self._arrays: dict[str, np.ndarray] | None = None

    def settings(self) -> dict[str, Any]:
        return {"dataset": str(self.path), "split": "train",
                "items": self.dataset.num_items("train"), "retrieval": "log-mel L2"}

    def matches_synth(self, synth) -> bool:
        names = tuple(self.dataset.param_names)
        return (self.dataset.config.synth == synth.name
                and set(synth.params.names) <= set(names)
                and self.dataset.config.probe_note.num_samples == synth.num_samples)

    def run(self, task: MatchTask) -> Tensor:
        if self._arrays is None:
            self._arrays = self.dataset.load("train", ("params", "mel"))
        params, mels = self._arrays["params"], self._arrays["mel"]
        columns = dataset_columns(tuple(self.dataset.param_names), task.synth.params.names,
                                  f"dataset {self.path}")
        log_mel = self.dataset.log_mel()
        with torch.no_grad():
            query = log_mel(task.target_audio.cpu()).flatten(1).float()
        order = self._ranking(query, mels, task.meter.budget)
        meter = task.meter
        while int(meter.remaining().min()) > 0:
            lo, hi = int(meter.used.min()), meter.next_stop()
            rows = order[:, lo:hi]
            u = torch.from_numpy(params[rows.reshape(-1).numpy()][:, columns])
            meter.score(u.reshape(task.num_targets, hi - lo, -1))
        return best_so_far(meter)

    @staticmethod
    def _ranking(query: Tensor, mels: np.ndarray, k: int) -> Tensor:
        """``(B, k)`` dataset rows ordered by log-mel distance to each query ``(B, F)``."""
        k = min(k, mels.shape[0])
        best_d = torch.full((query.shape[0], 0), float("inf"))
        best_i = torch.zeros((query.shape[0], 0), dtype=torch.long)
        q2 = (query ** 2).sum(1, keepdim=True)
        for start in range(0, mels.shape[0], RETRIEVAL_CHUNK):
            block = torch.from_numpy(mels[start:start + RETRIEVAL_CHUNK].reshape(
                -1, query.shape[1]).astype(np.float32))
            d = q2 - 2.0 * query @ block.T + (block ** 2).sum(1)
            d = torch.cat([best_d, d], 1)
            i = torch.cat([best_i, torch.arange(start, start + block.shape[0]).expand(
                query.shape[0], -1)], 1)
            top = d.topk(min(k, d.shape[1]), dim=1, largest=False)
            best_d, best_i = top.values, i.gather(1, top.indices)
        return best_i
