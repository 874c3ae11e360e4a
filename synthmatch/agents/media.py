"""What a training run's episodes sound and look like, for TensorBoard: target and current audio
of a few envs, and their spectrograms side by side."""

from __future__ import annotations

import torch
from torch.utils.tensorboard import SummaryWriter

from synthmatch.envs.core import SynthMatchCore
from synthmatch.envs.drawing import side_by_side


def log_media(writer: SummaryWriter, core: SynthMatchCore, step: int, clips: int = 2) -> None:
    """Write the target and current sound of the first ``clips`` envs of ``core`` as audio
    (``media/env{i}_target``, ``media/env{i}_current``) and their log-mels as one picture
    (``media/env{i}_target_vs_current``), at ``step``."""
    k = min(clips, core.num_envs)
    with torch.no_grad():
        current = core.synth.render(core.params[:k]).cpu()
    target = core.target_audio[:k].cpu()
    obs = core.observation()
    target_mel, current_mel = obs["target_mel"][:k].cpu(), obs["current_mel"][:k].cpu()
    rate = core.synth.sample_rate
    for i in range(k):
        writer.add_audio(f"media/env{i}_target", target[i:i + 1], step, sample_rate=rate)
        writer.add_audio(f"media/env{i}_current", current[i:i + 1], step, sample_rate=rate)
        picture = side_by_side(target_mel[i].numpy(), current_mel[i].numpy())
        writer.add_image(f"media/env{i}_target_vs_current", picture, step, dataformats="HWC")
