"""The leaderboard: benchmark suites, methods behind one render-counted interface, metrics and
reports (built on agents, envs, synths and rewards; ``experiments/leaderboard.py`` runs it)."""
