"""Agents: feature extractors, priors and search baselines (built on envs, synths, rewards)."""
