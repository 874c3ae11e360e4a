"""experiments/leaderboard.py end to end on the quick suite, its cache and its errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.data.helpers import run_script
from tests.inprocess import run_in_process

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("cma")
pytest.importorskip("librosa")

QUICK = ["--suites", "bench-v1/quick", "--methods", "default", "random", "cmaes", "gradient",
         "--budgets", "1", "4", "--no-progress"]


@pytest.mark.slow
def test_the_quick_suite_runs_writes_every_output_and_resumes_from_its_cache(tmp_path):
    out = tmp_path / "lb"
    first = run_script("leaderboard.py", *QUICK, "--out", str(out))
    assert first.returncode == 0, first.stderr
    stem = out / "bench-v1__quick"
    table = (stem.with_suffix(".md")).read_text()
    assert "| cmaes | – | " in table and "| default | " in table
    rows = list(csv.DictReader(stem.with_suffix(".csv").read_text().splitlines()))
    assert {(r["method"], r["budget"]) for r in rows} == {
        ("default", "1"), ("random", "1"), ("random", "4"), ("cmaes", "4"), ("gradient", "4")}
    assert all(float(r["max_renders"]) <= int(r["budget"]) for r in rows)
    data = json.loads(stem.with_suffix(".json").read_text())
    assert data["meta"]["torch"] == torch.__version__ and data["meta"]["seed"] == 0
    assert data["meta"]["git_commit"] and data["meta"]["targets"] == 6
    assert "torch 1 threads" in data["meta"]["machine"]  # the default --threads
    errors = data["meta"]["param_errors"]
    assert set(errors["methods"]) == {"default (1)", "random (4)", "cmaes (4)", "gradient (4)"}
    assert all(len(v) == len(errors["param_names"]) == 24 and min(v) >= 0
               for v in errors["methods"].values())
    for png in ("_curve.png", "_grid.png"):
        assert (out / f"bench-v1__quick{png}").stat().st_size > 1000
    # A second run reads every chunk from the cache and gives the same table (in-process:
    # the first and the --update runs below are the subprocesses).
    doc = tmp_path / "docs" / "leaderboard.md"
    again = run_in_process("leaderboard.py", *QUICK, "--out", str(out), "--doc", str(doc))
    assert again.returncode == 0 and stem.with_suffix(".md").read_text() == table
    page = doc.read_text()
    assert "## bench-v1/quick (6 targets)" in page and "--budgets 1 4" in page
    assert "](../lb/bench-v1__quick_curve.png)" in page
    # Paired comparisons read the per-target distances the JSON keeps.
    assert set(data["summaries"][0]["target_distances"]) == {f"t{i:03d}" for i in range(6)}
    compared = run_in_process("compare_methods.py", f"{out}:random", f"{out}:cmaes",
                              f"{out}:random", "--suites", "bench-v1/quick", "--budgets", "4")
    assert compared.returncode == 0, compared.stderr
    assert "| bench-v1/quick | 4 | " in compared.stdout
    assert compared.stdout.rstrip().endswith("| +0.0% [+0.0%, +0.0%] |")  # random vs itself
    # best-found takes each target's lowest distance over every method and budget, so it
    # is the base median here and no method's change against it can be negative.
    lowest = {n: min(s["target_distances"][n] for s in data["summaries"])
              for n in data["summaries"][0]["target_distances"]}
    bound = run_in_process("compare_methods.py", f"{out}:best-found", f"{out}:random",
                           f"{out}:cmaes", "--suites", "bench-v1/quick", "--budgets", "4")
    assert bound.returncode == 0, bound.stderr
    row = bound.stdout.splitlines()[-1]
    assert row.startswith(f"| bench-v1/quick | 4 | {np.median(list(lowest.values())):.3g} | ")
    assert all(cell.strip().startswith("+") for cell in row.split("|")[4:-1])
    twice = run_in_process("compare_methods.py", f"{out},{out}:best-found", f"{out}:random",
                           f"{out}:cmaes", "--suites", "bench-v1/quick", "--budgets", "4")
    assert twice.returncode == 0 and twice.stdout.splitlines()[-1] == row
    several = run_in_process("compare_methods.py", f"{out},{out}:random", f"{out}:cmaes",
                             "--suites", "bench-v1/quick", "--budgets", "4")
    assert several.returncode == 2 and "only best-found reads several" in several.stderr
    wrong = run_in_process("compare_methods.py", f"{out}:random", f"{out}:magic", "--suites",
                           "bench-v1/quick", "--budgets", "4")
    assert wrong.returncode == 2 and "has no magic at 4 renders" in wrong.stderr
    # --source keeps the targets of one instrument: here all of them, or none.
    same = run_in_process("compare_methods.py", f"{out}:random", f"{out}:cmaes", "--suites",
                          "bench-v1/quick", "--budgets", "4", "--source", "subtractive")
    assert same.returncode == 0, same.stderr
    assert same.stdout.splitlines()[-1].replace(" (subtractive)", "") == \
        compared.stdout.splitlines()[-1].rpartition(" | ")[0] + " |"
    wrong = run_in_process("compare_methods.py", f"{out}:random", f"{out}:cmaes", "--suites",
                           "bench-v1/quick", "--budgets", "4", "--source", "vital")
    assert wrong.returncode == 2
    assert "has no targets of source 'vital' (its sources: subtractive)" in wrong.stderr
    # --update re-runs one method and keeps the others' rows, each with its own command.
    grid_before = (out / "bench-v1__quick_grid.png").read_bytes()
    updated = run_script("leaderboard.py", "--suites", "bench-v1/quick", "--methods", "random",
                         "--budgets", "1", "4", "--no-progress", "--update", "--out", str(out),
                         "--doc", str(doc))
    assert updated.returncode == 0, updated.stderr
    assert stem.with_suffix(".md").read_text() == table  # the same seed, the same rows
    merged = json.loads(stem.with_suffix(".json").read_text())["meta"]
    assert [run["methods"] for run in merged["runs"]] == [["default", "cmaes", "gradient"],
                                                          ["random"]]
    assert "--update" in merged["runs"][1]["command"]
    assert set(merged["param_errors"]["methods"]) == set(errors["methods"])
    page = doc.read_text()
    assert "`default`, `cmaes`, `gradient` (on " in page and "`random` (on " in page
    assert (out / "bench-v1__quick_grid.png").read_bytes() == grid_before
    other_seed = run_in_process("leaderboard.py", "--suites", "bench-v1/quick", "--methods",
                                "random", "--budgets", "1", "--no-progress", "--update", "--seed",
                                "1", "--out", str(out))
    assert other_seed.returncode == 2 and "seed 0, this run 1" in other_seed.stderr
    assert "Traceback" not in other_seed.stderr
    other_chunks = run_in_process("leaderboard.py", "--suites", "bench-v1/quick", "--methods",
                                  "random", "--budgets", "1", "--no-progress", "--update",
                                  "--chunk-size", "3", "--out", str(out))
    assert other_chunks.returncode == 2 and "chunk_size 32, this run 3" in other_chunks.stderr
    # --update into an empty directory is a first run: it draws the grid too
    first = run_script("leaderboard.py", "--suites", "bench-v1/quick", "--methods", "default",
                       "--budgets", "1", "--no-progress", "--update", "--out",
                       str(tmp_path / "fresh"))
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "fresh" / "bench-v1__quick_grid.png").stat().st_size > 0


def test_help_and_clear_errors(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    assert run_script("leaderboard.py", "--help").returncode == 0  # a fresh interpreter too
    assert run_in_process("compare_methods.py", "--help").returncode == 0
    for args, message in [
        (["--suites", "bench-v9/x"], "unknown suite 'bench-v9/x'"),
        (["--suites", "bench-v1/quick", "--methods", "magic"], "unknown method(s) ['magic']"),
        (["--suites", "bench-v1/quick", "--budgets", "0"], "budgets must be positive"),
        (["--suites", "bench-v1/quick", "--threads", "0"], "--threads must be at least 1"),
        (["--suites", "bench-v1/quick", "--cap", "magic=3"], "--cap takes METHOD=BUDGET"),
        (["--methods"], "--methods is empty: name methods to run, or give --doc"),
        (["--methods", "--rankings", str(tmp_path / "r.json")],
         "--rankings: no leaderboard results for bench-v1/"),
        (["--methods", "--doc", str(tmp_path / "a_file" / "page.md")], "--doc: "),
    ]:
        result = run_in_process("leaderboard.py", *args, "--out", str(tmp_path))
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip().startswith("leaderboard.py: error: ")
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_bare_methods_only_regenerates_the_page_and_the_rankings(tmp_path):
    """The published results give the rankings that ship with the package, and the page,
    without running a method or touching the results."""
    from synthmatch.app.match import shipped_rankings

    results = ROOT / "docs" / "leaderboard"
    before = {p.name: p.read_bytes() for p in results.glob("*.json")}
    doc, rankings = tmp_path / "leaderboard.md", tmp_path / "rankings.json"
    result = run_script("leaderboard.py", "--methods", "--out", str(results), "--doc", str(doc),
                        "--rankings", str(rankings))
    assert result.returncode == 0, result.stderr
    assert json.loads(rankings.read_text()) == json.loads(
        (ROOT / "synthmatch" / "app" / "data" / "rankings.json").read_text())
    assert shipped_rankings().cross["subtractive"][100][0] in doc.read_text()
    assert "## bench-v1/cross-vital (24 targets)" in doc.read_text()
    assert {p.name: p.read_bytes() for p in results.glob("*.json")} == before
    # The published page carries the current reading guide (regenerate it after an edit).
    reading = (ROOT / "docs" / "leaderboard_reading.md").read_text()
    assert reading in doc.read_text()
    assert reading in (ROOT / "docs" / "leaderboard.md").read_text()


def test_a_prior_of_another_synth_is_refused(tmp_path):
    pytest.importorskip("flow_matching")
    from synthmatch.synths import make_synth
    from tests.agents.test_prior import tiny_prior

    fm = make_synth("fm")
    prior = tiny_prior(fm)
    prior.config.data = {"synth": "fm"}
    path = tmp_path / "fm_prior.pt"
    torch.save(prior.checkpoint(), path)
    result = run_script("leaderboard.py", "--suites", "bench-v1/quick", "--methods", "prior",
                        "--prior", str(path), "--out", str(tmp_path / "lb"))
    assert result.returncode == 2
    assert f"prior {path} fits none of the suites' synths (SynthMatch-v0)" in result.stderr


def test_gradient_methods_are_skipped_on_a_synth_without_gradients(tmp_path):
    """Every method that follows gradients says so, and the script skips it with a note on
    a synth that has none (Vital), instead of failing mid-run."""
    pytest.importorskip("vita")
    from synthmatch.leaderboard.methods import METHODS

    assert {n for n, m in METHODS.items() if m.needs_gradients} == \
        {n for n in METHODS if "gradient" in n}
    result = run_script("leaderboard.py", "--suites", "bench-v1/cross-vst3", "--cross-env",
                        "SynthMatch-Vital-v0", "--methods", "default", "gradient", "--budgets",
                        "1", "--max-targets", "1", "--out", str(tmp_path / "lb"),
                        "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "gradient skipped (vital is not differentiable)" in result.stdout
