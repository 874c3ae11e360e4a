"""Tests of the leaderboard report: summaries, Markdown tables, CSV/JSON files and figures."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest

from synthmatch.leaderboard.report import (
    METRICS,
    markdown_table,
    plot_curves,
    plot_spectrogram_grid,
    rank_methods,
    summarize,
    write_csv,
    write_json,
)

SUITE = "bench-v1/subtractive-id"
OTHER = "bench-v1/fm-ood"


def _cell(suite, method, budget, distances, params=None, wall_s=3.0):
    """A cell whose targets have the given distances (success = distance < 0.2)."""
    params = params if params is not None else [None] * len(distances)
    targets = [
        {"target": f"t{i:03d}", "distance": d, "success": d < 0.2, "mss": 10 * d,
         "envelope_cosine": 1.0 - d, "param_mae": p, "renders": min(budget, 1 + i)}
        for i, (d, p) in enumerate(zip(distances, params, strict=True))
    ]
    return {"suite": suite, "method": method, "budget": budget, "wall_s": wall_s,
            "targets": targets}


@pytest.fixture(scope="module")
def summaries():
    # Deliberately out of order: summaries are sorted by suite, first-seen method, budget.
    cells = [
        _cell(OTHER, "nearest", 1, [0.5, 0.7, 0.9]),
        _cell(OTHER, "prior", 1, [0.5, 0.7, 0.9]),
        _cell(SUITE, "random", 1, [0.4, 0.6, 0.8], params=[0.3, 0.4, 0.5]),
        _cell(SUITE, "cmaes", 16, [0.05, 0.15, 0.9], params=[0.0, 0.1, 0.2], wall_s=6.0),
        _cell(SUITE, "cmaes", 1, [0.1, 0.3, 0.5], params=[0.1, 0.2, 0.3]),
    ]
    return summarize(cells, seed=0)


def _table(text):
    """Markdown table -> (header cells, {row name: cells})."""
    lines = text.strip().splitlines()
    split = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert set(lines[1]) <= set("|-:")
    return split[0], {row[0]: row[1:] for row in split[2:]}


def _text(summary, metric="distance"):
    lo, med, hi = (summary[f"{metric}_{k}"] for k in ("lo", "median", "hi"))
    return f"{med:.3f} [{lo:.3f}, {hi:.3f}]"


def test_summarize_order_and_medians(summaries):
    keys = [(s["suite"], s["method"], s["budget"]) for s in summaries]
    assert keys == [(OTHER, "nearest", 1), (OTHER, "prior", 1), (SUITE, "random", 1),
                    (SUITE, "cmaes", 1), (SUITE, "cmaes", 16)]
    cmaes16 = summaries[4]
    assert cmaes16["n"] == 3
    assert cmaes16["distance_median"] == pytest.approx(0.15)
    assert cmaes16["mss_median"] == pytest.approx(1.5)
    assert cmaes16["envelope_cosine_median"] == pytest.approx(0.85)
    assert cmaes16["param_mae_median"] == pytest.approx(0.1)
    assert cmaes16["success_rate"] == pytest.approx(2 / 3)
    assert cmaes16["mean_renders"] == pytest.approx(2.0)  # renders 1, 2, 3
    assert cmaes16["max_renders"] == 3
    assert cmaes16["wall_s"] == 6.0
    assert cmaes16["wall_s_per_target"] == pytest.approx(2.0)
    for s in summaries:
        for metric in ("distance", "mss", "envelope_cosine"):
            assert s[f"{metric}_lo"] <= s[f"{metric}_median"] <= s[f"{metric}_hi"]


def test_summarize_param_mae_none_without_true_parameters(summaries):
    for s in summaries:
        present = s["suite"] == SUITE
        for k in ("median", "lo", "hi"):
            assert (s[f"param_mae_{k}"] is not None) == present


def test_summarize_rejects_duplicates_and_empty_cells():
    with pytest.raises(ValueError, match="duplicate"):
        summarize([_cell(SUITE, "cmaes", 1, [0.1, 0.2]), _cell(SUITE, "cmaes", 1, [0.3, 0.4])])
    with pytest.raises(ValueError, match="no targets"):
        summarize([_cell(SUITE, "cmaes", 1, [])])


def test_markdown_bolds_lowest_distance_and_marks_missing(summaries):
    header, rows = _table(markdown_table(summaries, SUITE))
    assert header == ["Method", "1 render", "16 renders"]
    assert list(rows) == ["random", "cmaes"]
    assert rows["cmaes"] == [f"**{_text(summaries[3])}**", f"**{_text(summaries[4])}**"]
    assert rows["random"] == [_text(summaries[2]), "–"]


def test_markdown_bolds_highest_success_and_higher_is_better_metrics(summaries):
    _, rows = _table(markdown_table(summaries, SUITE, "success_rate"))
    assert rows == {"random": ["0%", "–"], "cmaes": ["**33%**", "**67%**"]}
    assert METRICS["envelope_cosine"][1] is True
    _, rows = _table(markdown_table(summaries, SUITE, "envelope_cosine", budgets=[1]))
    # cmaes has the lower distance, so the higher envelope cosine.
    assert rows["cmaes"][0].startswith("**") and not rows["random"][0].startswith("**")


def test_markdown_ties_selection_and_unavailable(summaries):
    _, rows = _table(markdown_table(summaries, OTHER))
    assert all(cells[0].startswith("**") for cells in rows.values())  # identical data
    _, rows = _table(markdown_table(summaries, OTHER, "param_mae"))
    assert rows == {"nearest": ["n/a"], "prior": ["n/a"]}
    header, rows = _table(markdown_table(summaries, SUITE, methods=["cmaes", "rl"],
                                         budgets=[16, 1000]))
    assert header == ["Method", "16 renders", "1000 renders"]
    assert rows == {"cmaes": [f"**{_text(summaries[4])}**", "–"], "rl": ["–", "–"]}


def test_markdown_plain_columns_have_no_bold(summaries):
    for metric in ("mean_renders", "wall_s"):
        text = markdown_table(summaries, SUITE, metric)
        assert "**" not in text
    _, rows = _table(markdown_table(summaries, SUITE, "wall_s"))
    assert rows["cmaes"] == ["3.00", "6.00"]


def test_markdown_rejects_unknown_metric_and_suite(summaries):
    with pytest.raises(ValueError, match="unknown metric"):
        markdown_table(summaries, SUITE, "loudness")
    with pytest.raises(ValueError, match="no summaries"):
        markdown_table(summaries, "bench-v1/none")


def test_csv_round_trip(summaries, tmp_path):
    path = tmp_path / "out" / "summary.csv"
    write_csv(summaries, path)
    assert [p.name for p in path.parent.iterdir()] == ["summary.csv"]  # no temp file left
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["suite"], r["method"], int(r["budget"])) for r in rows] == [
        (s["suite"], s["method"], s["budget"]) for s in summaries]
    for row, s in zip(rows, summaries, strict=True):
        assert float(row["distance_median"]) == pytest.approx(s["distance_median"])
        assert float(row["success_rate"]) == pytest.approx(s["success_rate"])
        assert (row["param_mae_median"] == "") == (s["param_mae_median"] is None)


def test_json_holds_meta_and_summaries(summaries, tmp_path):
    path = tmp_path / "summary.json"
    meta = {"version": "bench-v1", "seed": 0, "methods": ["cmaes", "random"]}
    write_json(summaries, meta, path)
    data = json.loads(path.read_text())
    assert data["meta"] == meta
    assert data["summaries"] == summaries
    write_json([{"x": float("nan"), "y": [float("inf"), 1.0]}], {}, path)
    assert json.loads(path.read_text())["summaries"] == [{"x": None, "y": [None, 1.0]}]


def test_rank_methods_pools_suites_and_skips_methods_missing_targets(tmp_path):
    one = summarize([_cell(SUITE, "a", 1, [0.1, 0.9]), _cell(SUITE, "b", 1, [0.25, 0.5]),
                     _cell(SUITE, "c", 1, [0.125, 0.625]), _cell(SUITE, "a", 16, [0.1, 0.2])])
    other = summarize([_cell(OTHER, "a", 1, [0.8, 0.8, 0.9]), _cell(OTHER, "b", 1,
                       [0.2, 0.3, 0.6]), _cell(OTHER, "c", 1, [0.1, 0.1, 0.7])])
    write_json(one, {"suite": SUITE, "targets": 2}, tmp_path / "bench-v1__subtractive-id.json")
    write_json(other, {"suite": OTHER, "targets": 3}, tmp_path / "bench-v1__fm-ood.json")
    # Alone, by each suite's median (c's 0.375 ties b's: by name); together, by the
    # median of all five targets: a 0.8, b 0.3, c 0.125. At 16 renders only a has the first
    # suite's targets, and none of the second's.
    assert rank_methods(tmp_path, (SUITE,)) == {1: ["b", "c", "a"], 16: ["a"]}
    assert rank_methods(tmp_path, (OTHER,)) == {1: ["c", "b", "a"]}
    assert rank_methods(tmp_path, (SUITE, OTHER)) == {1: ["c", "b", "a"]}
    with pytest.raises(FileNotFoundError, match="no leaderboard results for bench-v1/x"):
        rank_methods(tmp_path, (SUITE, "bench-v1/x"))


def test_plot_curves_writes_png(summaries, tmp_path):
    matplotlib_image = pytest.importorskip("matplotlib.image")
    path = tmp_path / "curves.png"
    # random has a single budget (drawn as a point with an error bar), cmaes two.
    plot_curves(summaries, SUITE, path, figsize=(2.0, 1.5), dpi=50)
    assert path.stat().st_size > 0
    assert matplotlib_image.imread(path).shape[:2] == (75, 100)
    plot_curves(summaries, SUITE, path, metric="success_rate", figsize=(2.0, 1.5), dpi=50)
    with pytest.raises(ValueError, match="unknown metric"):
        plot_curves(summaries, SUITE, path, metric="loudness")


def test_plot_spectrogram_grid_writes_png(tmp_path):
    matplotlib_image = pytest.importorskip("matplotlib.image")
    sr, n = 8000, 2
    t = np.arange(2048) / sr
    target = np.stack([np.sin(2 * np.pi * f * t) for f in (220.0, 880.0)]).astype(np.float32)
    matches = {"cmaes": 0.5 * target, "random": np.zeros_like(target)}
    path = tmp_path / "grid.png"
    plot_spectrogram_grid(target, matches, sr, path, target_names=["a", "b"], title="grid",
                          cell_size=(1.0, 1.0), dpi=40)
    assert path.stat().st_size > 0
    assert matplotlib_image.imread(path).shape[:2] == (n * 40, 3 * 40)
    with pytest.raises(ValueError, match="shape"):
        plot_spectrogram_grid(target, {"cmaes": target[:1]}, sr, path)


def test_plots_name_the_extra_without_matplotlib(summaries, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"synthmatch\[leaderboard\]"):
        plot_curves(summaries, SUITE, tmp_path / "curves.png")


def test_merge_replaces_a_methods_rows_in_place_and_keeps_each_rows_command(summaries):
    from synthmatch.leaderboard.report import merge_results

    mine = [s for s in summaries if s["suite"] == SUITE]  # random (1), cmaes (1, 16)
    first = {"suite": SUITE, "targets": 3, "seed": 0, "command": "lb a", "git_commit": "aa",
             "machine": "m", "device": "cpu", "files": {"x.pt": "1", "g1.pt": "2"},
             "file_configs": {"x.pt": {"lr": 1}},
             "methods": {f"{SUITE} random": {"k": 1}, f"{SUITE} cmaes": {"sigma": 0.3}},
             "param_errors": {"param_names": ["p"], "methods": {"random (1)": [0.3],
                                                                "cmaes (16)": [0.1]}}}
    redone = [{**s, "distance_median": 0.01} for s in mine if s["method"] == "random"]
    second = {"suite": SUITE, "targets": 3, "seed": 0, "command": "lb b", "git_commit": "bb",
              "machine": "m", "device": "cpu", "files": {"g2.pt": "3"},
              "methods": {f"{SUITE} random": {"k": 2}},
              "param_errors": {"param_names": ["p"], "methods": {"random (1)": [0.2]}}}
    rows, meta = merge_results({"meta": first, "summaries": mine}, redone, second)
    assert [(r["method"], r["budget"]) for r in rows] == [(r["method"], r["budget"])
                                                          for r in mine]
    assert [r["distance_median"] for r in rows if r["method"] == "random"] == [0.01]
    assert [r for r in rows if r["method"] == "cmaes"] == [r for r in mine
                                                          if r["method"] == "cmaes"]
    assert [(r["command"], r["methods"]) for r in meta["runs"]] == [
        ("lb a", ["cmaes"]), ("lb b", ["random"])]
    assert meta["methods"] == {f"{SUITE} cmaes": {"sigma": 0.3}, f"{SUITE} random": {"k": 2}}
    assert meta["param_errors"]["methods"] == {"cmaes (16)": [0.1], "random (1)": [0.2]}
    assert meta["files"] == {"x.pt": "1", "g1.pt": "2", "g2.pt": "3"}
    assert meta["file_configs"] == {"x.pt": {"lr": 1}}
    # A method that is new to the table goes last; a run whose rows are all replaced goes.
    newcomer = [{**mine[0], "method": "gradient"}]
    third = {**second, "command": "lb c", "methods": {}, "param_errors": None}
    rows2, meta2 = merge_results({"meta": meta, "summaries": rows}, newcomer, third)
    assert [r["method"] for r in rows2][-1] == "gradient" and len(rows2) == len(rows) + 1
    redo_all = [{**r} for r in rows2 if r["method"] in ("cmaes", "gradient")]
    _, meta3 = merge_results({"meta": meta2, "summaries": rows2}, redo_all,
                             {**third, "command": "lb d"})
    assert [r["command"] for r in meta3["runs"]] == ["lb b", "lb d"]
    with pytest.raises(ValueError, match="seed 0, this run 1"):
        merge_results({"meta": first, "summaries": mine}, redone, {**second, "seed": 1})
    # Another chunk size is refused once a table records its own (each chunk has its seed);
    # a table from before chunk sizes were recorded takes any.
    sized = {**second, "chunk_size": 32}
    merge_results({"meta": first, "summaries": mine}, redone, sized)
    with pytest.raises(ValueError, match="chunk_size 32, this run 8"):
        merge_results({"meta": sized, "summaries": mine}, redone, {**sized, "chunk_size": 8})
    assert merge_results({"meta": sized, "summaries": mine}, redone,
                         sized)[1]["runs"][-1]["chunk_size"] == 32
