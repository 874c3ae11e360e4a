"""Checkpoints made small enough to ship inside the package: a prior in float16, a gate
with the two priors it routes between, and a restart policy with its prior
(``experiments/package_prior.py``, ``experiments/package_match.py``).

A shipped gate or policy names its priors by file name, next to it (``names_relative``),
with the sha256 of the shipped files, so they cannot be swapped for others without it
refusing them; ``source_sha256`` records what each file was made from.
"""

from __future__ import annotations

from pathlib import Path

import torch

from synthmatch.agents.gate import load_gate
from synthmatch.agents.prior import FlowPrior
from synthmatch.agents.prior_training import save_checkpoint
from synthmatch.fileio import sha256_file


def package_prior(source: str | Path, out: str | Path, check_items: int = 64) -> str:
    """Write ``source`` (a prior checkpoint) to ``out`` with float16 weights, which
    :meth:`FlowPrior.load` casts back to float32, and check it against the original: both
    sample the same random log-mels from the same noise. Returns a line saying how large the
    file is and how far the presets moved."""
    source, out = Path(source), Path(out)
    prior = FlowPrior.load(source)
    ckpt = prior.checkpoint(source_sha256=sha256_file(source))
    if prior.finetuned is not None:
        ckpt["finetuned"] = prior.finetuned
    ckpt["model"] = {k: v.half() if v.is_floating_point() else v
                     for k, v in ckpt["model"].items()}
    save_checkpoint(ckpt, out)
    small = FlowPrior.load(out)
    cfg = prior.config
    gen = torch.Generator().manual_seed(0)
    mel = torch.tensor(cfg.mel_mean).reshape(-1, 1) + torch.tensor(cfg.mel_std).reshape(
        -1, 1) * torch.randn(check_items, *cfg.mel_shape, generator=gen)
    noise = torch.randn(check_items, cfg.num_params, generator=gen)
    with torch.no_grad():
        ref = prior.to_unit(prior.sample_flow(prior.embed(mel), noise, 16))
        got = small.to_unit(small.sample_flow(small.embed(mel), noise, 16))
    diff = (ref - got).abs()
    return (f"{out}: {out.stat().st_size / 1e6:.1f} MB (from {source.stat().st_size / 1e6:.1f} "
            f"MB); presets of {check_items} random log-mels differ by at most "
            f"{float(diff.max()):.2e} (median {float(diff.median()):.2e})")


def packaged_source(path: Path) -> str | None:
    """The sha256 of the file a packaged checkpoint was made from (None: not packaged)."""
    if not path.is_file():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return ckpt.get("source_sha256") if isinstance(ckpt, dict) else None


def _shipped_base(out_dir: Path, stem: str, source: str, source_sha256: str,
                  owner: Path, check_items: int) -> tuple[Path, str]:
    """``prior-<stem>.pt`` in ``out_dir``: the float16 copy of ``source``, written unless it
    is there already (or is ``source`` itself, as for a gate repointed from a shipped one);
    and a line saying which."""
    base = out_dir / f"prior-{stem}.pt"
    known = packaged_source(base)
    if known is None:
        return base, package_prior(source, base, check_items)
    if sha256_file(base) == source_sha256:
        return base, f"{base}: already the gate's prior"
    if known != source_sha256:
        raise ValueError(f"{base} was made from another prior than the one {owner} was "
                         f"trained with ({source}); package that prior first, or pick another "
                         "stem")
    return base, f"{base}: already the float16 copy of {source}"


def package_restart_policy(policy: str | Path, out_dir: str | Path, stem: str,
                           check_items: int = 64) -> list[str]:
    """Ship a restart policy of ``train_restarts.py`` into ``out_dir`` as
    ``restarts-<stem>.pt``, naming ``prior-<stem>.pt`` (the float16 copy of the prior it was
    trained on, written unless it is there). Returns one line per file.

    Raises:
        ValueError: ``prior-<stem>.pt`` was made from another prior.
    """
    from synthmatch.agents.restarts import load_policy

    policy, out_dir = Path(policy), Path(out_dir)
    model, meta = load_policy(policy)
    source = meta["settings"]["prior"]
    base, line = _shipped_base(out_dir, stem, source, sha256_file(source), policy, check_items)
    out = out_dir / f"restarts-{stem}.pt"
    save_checkpoint({**meta, "state_dict": model.state_dict(),
                     "settings": {**meta["settings"], "prior": base.name},
                     "names_relative": True, "prior_sha256": sha256_file(base),
                     "source_sha256": sha256_file(policy)}, out)
    return [line, f"{out}: {out.stat().st_size / 1e6:.2f} MB, restarting gradient search "
                  f"from {base.name}'s samples"]


def package_gate(gate: str | Path, out_dir: str | Path, stem: str,
                 check_items: int = 64) -> list[str]:
    """Ship ``gate`` and its two priors into ``out_dir`` as ``prior-<stem>.pt`` (the
    synthetic-data prior, reused when it is already the float16 copy of the gate's),
    ``prior-rlft-<stem>.pt`` and ``gate-<stem>.pt``. Returns one line per file written.

    Raises:
        ValueError: ``out_dir`` holds a ``prior-<stem>.pt`` made from another prior than the
            gate's (replacing it would change what the shipped ``prior`` method does).
    """
    gate, out_dir = Path(gate), Path(out_dir)
    model, meta = load_gate(gate)
    base, line = _shipped_base(out_dir, stem, meta["prior"], meta["prior_sha256"], gate,
                               check_items)
    tuned = out_dir / f"prior-rlft-{stem}.pt"
    lines = [line, package_prior(meta["finetuned"], tuned, check_items)]
    out = out_dir / f"gate-{stem}.pt"
    save_checkpoint({"kind": "prior_gate", "config": model.config,
                     "state_dict": model.state_dict(), "names_relative": True,
                     "prior": base.name, "prior_sha256": sha256_file(base),
                     "finetuned": tuned.name, "finetuned_sha256": sha256_file(tuned),
                     "source_sha256": sha256_file(gate),
                     **{k: meta[k] for k in ("settings", "validation") if k in meta}}, out)
    lines.append(f"{out}: {out.stat().st_size / 1e6:.1f} MB, routing between {base.name} and "
                 f"{tuned.name}")
    return lines
