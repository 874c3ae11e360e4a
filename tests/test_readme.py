"""The README's two commands are the ones CI runs."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym

import synthmatch  # noqa: F401
from synthmatch.envs import env_ids

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_readme_starts_with_two_commands_that_ci_runs():
    install, test = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test in ci
    for step in install.split(" && ")[:-1]:  # every install step, not the training run
        assert step in ci


def test_readme_lists_every_registered_id_with_its_size():
    rows = {line.split("|")[1].strip(" `"): line.split("|")[3].strip()
            for line in (ROOT / "README.md").read_text().splitlines()
            if line.startswith("| `SynthMatch")}
    assert sorted(rows) == sorted(env_ids())
    for env_id, size in rows.items():
        if env_id not in env_ids(external=False):
            continue  # its size depends on the plugin or the chosen controls
        params = gym.make(env_id, disable_env_checker=True).action_space.shape[0]
        assert size.split()[0] == str(params), env_id
