"""Leaderboard reports: per-cell summaries, Markdown tables, CSV/JSON files and figures.

The input is a list of *cells*, one per (suite, method, render budget), each holding the
per-target results of one method on one benchmark suite::

    {"suite": "bench-v1/subtractive-id", "method": "cmaes", "budget": 100, "wall_s": 12.3,
     "targets": [{"target": "t000", "distance": 0.41, "success": False, "mss": 5.2,
                  "envelope_cosine": 0.97, "param_mae": 0.12, "renders": 100}, ...]}

:func:`summarize` reduces every cell to medians with bootstrap 95% intervals (medians, not
means: a few unmatched targets produce huge distances that would swamp a mean), and the other
functions present those summaries. matplotlib is only needed by the two plotting functions.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from synthmatch.fileio import temporary_name, write_json_atomic
from synthmatch.leaderboard.metrics import median_ci

#: Per-target metric -> (label, higher_is_better). Each gets a median and a 95% interval.
METRICS: dict[str, tuple[str, bool]] = {
    "distance": ("Perceptual distance", False),
    "mss": ("Multi-scale spectral distance", False),
    "envelope_cosine": ("Envelope cosine similarity", True),
    "param_mae": ("Parameter MAE", False),
}

# Cell-level columns a table or plot can also show: label and higher_is_better, where None
# means "no best": fewer renders or less wall time is cheaper, not a better match.
_PLAIN: dict[str, tuple[str, bool | None]] = {
    "success_rate": ("Success rate", True),
    "mean_renders": ("Mean renders per target", None),
    "max_renders": ("Max renders per target", None),
    "wall_s": ("Wall time (s)", None),
    "wall_s_per_target": ("Wall time per target (s)", None),
}

# Known methods get fixed colours so a method looks the same in every suite's figure.
_METHOD_ORDER = ("default", "random", "cmaes", "gradient", "nearest", "prior", "prior+cmaes",
                 "prior+gradient", "prior+es", "rl", "prior+rl", "prior-rlft", "prior+critic",
                 "prior+central", "prior-rlft+critic", "prior+gradient-patience",
                 "prior+gradient+rl", "prior-rlft+gate",
                 "prior-rlft+gate+gradient-patience")


def file_stem(suite: str) -> str:
    """The name a suite's files go by (``bench-v1/fm-id`` -> ``bench-v1__fm-id``): results
    ``<stem>.json``/``.csv``/``.md``, plots and the cache's folder."""
    return suite.replace("/", "__")


def results_path(directory: str | os.PathLike, suite: str) -> Path:
    """The JSON results of ``suite`` under ``directory``, as :func:`write_json` is given it."""
    return Path(directory) / f"{file_stem(suite)}.json"


def summarize(cells: list[dict], seed: int = 0) -> list[dict]:
    """Reduce each cell's per-target results to medians, intervals and rates.

    Args:
        cells: One dict per (suite, method, budget) as in the module docstring.
        seed: Seed of the bootstrap resampling (the same seed for every cell, so a rerun on
            the same results gives the same intervals).

    Returns:
        One dict per cell with ``suite``, ``method``, ``budget``, ``n``, for each metric in
        :data:`METRICS` ``<m>_median``, ``<m>_lo`` and ``<m>_hi`` (None when no target has
        the metric, as ``param_mae`` on suites without true parameters), ``success_rate``,
        ``mean_renders``, ``max_renders``, ``wall_s``, ``wall_s_per_target`` and
        ``target_distances`` (target name -> distance, for paired comparisons; not in the
        CSV). Sorted by
        suite, then method in order of first appearance, then budget.

    Raises:
        ValueError: A cell has no targets or a non-finite metric value, or two cells share a
            (suite, method, budget).
    """
    method_rank: dict[str, int] = {}
    seen: set[tuple[str, str, int]] = set()
    summaries = []
    for cell in cells:
        key = (cell["suite"], cell["method"], int(cell["budget"]))
        if key in seen:
            raise ValueError(f"duplicate cell for suite, method, budget = {key}")
        seen.add(key)
        method_rank.setdefault(key[1], len(method_rank))
        targets = cell["targets"]
        if not targets:
            raise ValueError(f"cell {key} has no targets")
        n = len(targets)
        summary: dict[str, Any] = {"suite": key[0], "method": key[1], "budget": key[2], "n": n}
        for metric in METRICS:
            values = [t[metric] for t in targets if t.get(metric) is not None]
            try:
                stats = median_ci(values, seed=seed) if values else (None, None, None)
            except ValueError as err:  # NaN/inf: say which cell and metric
                raise ValueError(f"cell {key}, metric {metric!r}: {err}") from err
            summary.update(zip((f"{metric}_median", f"{metric}_lo", f"{metric}_hi"), stats,
                               strict=True))
        renders = [int(t["renders"]) for t in targets]
        wall_s = float(cell["wall_s"])
        summary.update(success_rate=sum(bool(t["success"]) for t in targets) / n,
                       mean_renders=sum(renders) / n, max_renders=max(renders), wall_s=wall_s,
                       wall_s_per_target=wall_s / n,
                       target_distances={t["target"]: t["distance"] for t in targets})
        summaries.append(summary)
    summaries.sort(key=lambda s: (s["suite"], method_rank[s["method"]], s["budget"]))
    return summaries


def rank_methods(results: str | os.PathLike, suites: tuple[str, ...]) -> dict[int, list[str]]:
    """Methods best first, per render budget, by the median distance over every target of
    ``suites`` together (their ``<suite>.json`` under ``results``, as written by
    :func:`write_json`). A method is ranked at a budget only if it has a result there for
    every target of every suite; ties go by name.

    Raises:
        FileNotFoundError: A suite has no results under ``results``.
    """
    pooled: dict[tuple[int, str], list[float]] = {}
    total = 0
    for suite in suites:
        path = results_path(results, suite)
        if not path.is_file():
            raise FileNotFoundError(f"no leaderboard results for {suite} in {results}")
        data = json.loads(path.read_text())
        total += int(data["meta"]["targets"])
        for row in data["summaries"]:
            pooled.setdefault((int(row["budget"]), row["method"]), []).extend(
                row["target_distances"].values())
    ranked: dict[int, list[tuple[float, str]]] = {}
    for (budget, method), distances in pooled.items():
        if len(distances) == total:
            ranked.setdefault(budget, []).append((float(np.median(distances)), method))
    return {b: [m for _, m in sorted(ranked[b])] for b in sorted(ranked)}


def markdown_table(summaries: list[dict], suite: str, metric: str = "distance",
                   methods: list[str] | None = None, budgets: list[int] | None = None) -> str:
    """A Markdown table of one suite: a row per method, a column per render budget.

    Entries of :data:`METRICS` read ``median [lo, hi]``; ``success_rate`` reads as a
    percentage. The best entry of each column is bold (lowest, or highest where higher is
    better; every entry tied at the shown precision is bold); ``mean_renders``,
    ``max_renders``, ``wall_s`` and ``wall_s_per_target`` have no best and bold nothing.

    Args:
        summaries: Output of :func:`summarize` (other suites are ignored).
        suite: Suite to tabulate.
        metric: A key of :data:`METRICS`, or one of the cell-level columns above.
        methods: Rows, in order; default every method of the suite in summary order.
        budgets: Columns, in order; default every budget of the suite, ascending.

    Returns:
        The table, one line per row, with a trailing newline. Missing cells read "–";
        cells whose metric is undefined (``param_mae`` without true parameters) "n/a".

    Raises:
        ValueError: Unknown metric or suite.
    """
    higher = _column(metric)[1]
    rows = [s for s in summaries if s["suite"] == suite]
    if not rows:
        suites = sorted({s["suite"] for s in summaries})
        raise ValueError(f"no summaries for suite {suite!r}; have {suites}")
    if methods is None:
        methods = list(dict.fromkeys(s["method"] for s in rows))
    if budgets is None:
        budgets = sorted({s["budget"] for s in rows})
    by_key = {(s["method"], s["budget"]): s for s in rows}

    columns = []  # per budget: the text of each method's entry
    for budget in budgets:
        entries = [_entry(by_key.get((method, budget)), metric) for method in methods]
        values = [value for _, value in entries if value is not None]
        best = (max if higher else min)(values) if higher is not None and values else None
        columns.append([f"**{text}**" if best is not None and value == best else text
                        for text, value in entries])

    header = ["Method"] + [f"{b} render" if b == 1 else f"{b} renders" for b in budgets]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "---|" + "---:|" * len(budgets)]
    for i, method in enumerate(methods):
        lines.append("| " + " | ".join([method] + [c[i] for c in columns]) + " |")
    return "\n".join(lines) + "\n"


def write_csv(summaries: list[dict], path: str | os.PathLike) -> None:
    """Write the summaries as CSV (a header row; None as an empty field), atomically.

    Args:
        summaries: Output of :func:`summarize`.
        path: Destination; its directory is created if needed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    with open(tmp, "w", newline="") as f:
        fields = list(dict.fromkeys(key for s in summaries for key, v in s.items()
                                    if not isinstance(v, dict)))
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        for summary in summaries:
            writer.writerow({k: "" if v is None else v for k, v in summary.items()
                             if k in fields})
    os.replace(tmp, path)


def write_json(summaries: list[dict], meta: dict, path: str | os.PathLike) -> None:
    """Write ``{"meta": meta, "summaries": summaries}`` as JSON, atomically.

    Non-finite floats become null: Python would write ``NaN``, which strict JSON parsers
    (browsers, jq) reject.

    Args:
        summaries: Output of :func:`summarize`.
        meta: Anything JSON-serialisable describing the run (versions, seeds, date...).
        path: Destination; its directory is created if needed.
    """
    write_json_atomic(Path(path), _finite({"meta": meta, "summaries": summaries}))


# What says how one command ran: kept per command when results are merged.
RUN_KEYS = ("command", "synthmatch", "torch", "git_commit", "computed_at", "machine", "device",
            "budgets", "chunk_size", "elapsed_s", "files", "file_configs")


def check_mergeable(before: dict, meta: dict) -> None:
    """Refuse to put a run's rows (``meta``: its ``suite``, ``targets``, ``seed`` and
    ``chunk_size``) in one table with earlier results (``before``, their meta). Each chunk of
    targets draws from its own seed, so another chunk size gives the targets other random
    draws (tables written before the chunk size was recorded are taken as they are).

    Raises:
        ValueError: another suite, target count, seed or chunk size.
    """
    for key in ("suite", "targets", "seed", "chunk_size"):
        if key == "chunk_size" and key not in before:
            continue
        if before.get(key) != meta.get(key):
            raise ValueError(f"the earlier results have {key} {before.get(key)!r}, this run "
                             f"{meta.get(key)!r}: they cannot share a table")


def merge_results(old: dict, summaries: list[dict], meta: dict) -> tuple[list[dict], dict]:
    """A suite's earlier results (``{"meta", "summaries"}`` as :func:`write_json` wrote them)
    with the rows of the methods in ``summaries`` replaced or added, and ``meta`` holding
    the provenance of both: ``runs`` lists each command with the methods whose rows it made
    (a command whose rows were all replaced is dropped), and the per-method settings and
    parameter errors are those of the command that made each row.

    Raises:
        ValueError: the earlier results are of another suite, target count or seed.
    """
    before = old["meta"]
    check_mergeable(before, meta)
    ran = list(dict.fromkeys(s["method"] for s in summaries))
    rows, placed = [], set()
    for row in old["summaries"]:
        method = row["method"]
        if method not in ran:
            rows.append(row)
        elif method not in placed:  # a re-run method keeps its place in the table
            rows += [s for s in summaries if s["method"] == method]
            placed.add(method)
    rows += [s for s in summaries if s["method"] not in placed]
    runs = before.get("runs") or [{**{k: before[k] for k in RUN_KEYS if k in before},
                                   "methods": list(dict.fromkeys(
                                       s["method"] for s in old["summaries"]))}]
    runs = [{**r, "methods": [m for m in r["methods"] if m not in ran]} for r in runs]
    runs = [r for r in runs if r["methods"]]
    runs.append({**{k: meta[k] for k in RUN_KEYS if k in meta}, "methods": ran})
    settings = {key: value for key, value in before.get("methods", {}).items()
                if key.split(" ", 1)[1] not in ran}
    merged = {**meta, "runs": runs, "methods": {**settings, **meta.get("methods", {})},
              "files": {path: sha for r in runs for path, sha in r.get("files", {}).items()},
              "file_configs": {path: config for r in runs
                               for path, config in (r.get("file_configs") or {}).items()}}
    errors, new_errors = before.get("param_errors"), meta.get("param_errors")
    if errors or new_errors:
        kept = {key: value for key, value in (errors or {}).get("methods", {}).items()
                if key.rsplit(" (", 1)[0] not in ran}
        merged["param_errors"] = {
            "param_names": (new_errors or errors)["param_names"],
            "methods": {**kept, **(new_errors or {}).get("methods", {})}}
    return rows, merged


def plot_curves(summaries: list[dict], suite: str, path: str | os.PathLike,
                metric: str = "distance", *, figsize: tuple[float, float] = (6.4, 4.2),
                dpi: int = 120) -> None:
    """Plot a metric's median against the render budget, one line per method, as a PNG.

    The x axis (renders per target) is logarithmic; the 95% interval is a shaded band, or an
    error bar for a method measured at a single budget (shown as a point). The image is
    ``figsize * dpi`` pixels.

    Args:
        summaries: Output of :func:`summarize` (other suites are ignored).
        suite: Suite to plot; also the title.
        path: Destination PNG.
        metric: A key of :data:`METRICS` or a cell-level column (those have no interval).
        figsize: Figure size in inches.
        dpi: Resolution.

    Raises:
        ValueError: Unknown metric or suite.
        ImportError: matplotlib is not installed.
    """
    label = _column(metric)[0]
    rows = [s for s in summaries if s["suite"] == suite]
    if not rows:
        raise ValueError(f"no summaries for suite {suite!r}")
    column = f"{metric}_median" if metric in METRICS else metric
    fig, ax = _figure(figsize, dpi)
    import matplotlib  # present: _figure checked
    for i, method in enumerate(dict.fromkeys(s["method"] for s in rows)):
        points = sorted((s for s in rows if s["method"] == method and s[column] is not None),
                        key=lambda s: s["budget"])
        if not points:
            continue
        x = np.array([s["budget"] for s in points], dtype=float)
        y = np.array([s[column] for s in points], dtype=float)
        # tab20 by the fixed order for known methods, the spare colours for the others.
        known = method in _METHOD_ORDER
        color = matplotlib.colormaps["tab20"](
            (_METHOD_ORDER.index(method) if known else len(_METHOD_ORDER) + i) % 20)
        has_ci = metric in METRICS  # lo and hi are set wherever the median is
        lo, hi = (np.array([s[f"{metric}_{k}"] for s in points], dtype=float) if has_ci
                  else y for k in ("lo", "hi"))
        if len(points) == 1:
            # Clipped at 0: errorbar rejects negative lengths from a float rounding slip.
            yerr = np.maximum(0.0, [y - lo, hi - y])
            ax.errorbar(x, y, yerr=yerr, fmt="o", color=color, capsize=3, label=method)
        else:
            ax.plot(x, y, marker="o", markersize=3, color=color, label=method)
            if has_ci:
                ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)
    ax.set(xscale="log", xlabel="renders per target", ylabel=label, title=suite)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # an empty legend only draws a warning
        ax.legend(fontsize="small")
    _save(fig, Path(path))


def plot_spectrogram_grid(target_audio: np.ndarray, matches: dict[str, np.ndarray],
                          sample_rate: int, path: str | os.PathLike,
                          target_names: list[str] | None = None, title: str = "", *,
                          cell_size: tuple[float, float] = (2.0, 1.5), dpi: int = 120,
                          dynamic_range_db: float = 80.0) -> None:
    """Log-mel spectrograms of targets and each method's matches in a grid, as a PNG.

    Rows are targets; the first column is the target, then one column per method. All
    images share one colour scale (the loudest bin anywhere down to ``dynamic_range_db``
    below it), so a quieter match looks quieter. The image is ``(cell_size[0] * columns,
    cell_size[1] * rows) * dpi`` pixels.

    Args:
        target_audio: ``(n, T)`` target audio.
        matches: Method -> ``(n, T)`` audio of its match for each target.
        sample_rate: Sample rate in Hz.
        path: Destination PNG.
        target_names: Row labels (default ``target 0``, ``target 1``...).
        title: Figure title.
        cell_size: Size of one spectrogram in inches.
        dpi: Resolution.
        dynamic_range_db: Span of the colour scale in dB.

    Raises:
        ValueError: Shapes disagree, or there are not ``n`` target names.
        ImportError: matplotlib is not installed.
    """
    import torch

    from synthmatch.rewards.features import LogMelSpectrogram

    target_audio = np.asarray(target_audio)
    if target_audio.ndim != 2:
        raise ValueError(f"target_audio must be (n, T), got shape {target_audio.shape}")
    n, T = target_audio.shape
    for method, audio in matches.items():
        if np.shape(audio) != target_audio.shape:
            raise ValueError(f"matches[{method!r}] has shape {np.shape(audio)}, not {n, T}")
    names = target_names if target_names is not None else [f"target {i}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} target names for {n} targets")

    columns = ["target", *matches]
    audio = np.concatenate([target_audio, *(np.asarray(a) for a in matches.values())])
    with torch.no_grad():
        mels = LogMelSpectrogram(sample_rate)(torch.from_numpy(audio.astype(np.float32)))
    mels = mels.numpy()
    mels = mels.reshape(len(columns), n, *mels.shape[1:])
    # Silence reads -100 dB; anchoring the scale at the peak keeps a silent match from
    # stretching it and washing out every other image.
    vmax = float(mels.max())

    ncols = len(columns)
    fig, axes = _figure((cell_size[0] * ncols, cell_size[1] * n), dpi, nrows=n, ncols=ncols)
    axes = np.asarray(axes).reshape(n, ncols)
    for r in range(n):
        for c, name in enumerate(columns):
            ax = axes[r, c]
            ax.imshow(mels[c, r], origin="lower", aspect="auto", cmap="magma",
                              vmin=vmax - dynamic_range_db, vmax=vmax,
                              extent=(0.0, T / sample_rate, 0, mels.shape[2]))
            ax.set(xticks=[], yticks=[])
            if r == 0:
                ax.set_title(name, fontsize="small")
            if c == 0:
                ax.set_ylabel(names[r], fontsize="small")
    fig.colorbar(axes[0, 0].images[0], ax=axes, label="dB", fraction=0.02)
    if title:
        fig.suptitle(title)
    _save(fig, Path(path))


def _column(metric: str) -> tuple[str, bool | None]:
    """Label and higher_is_better (None: no best) of a table/plot column."""
    columns = {**METRICS, **_PLAIN}
    if metric not in columns:
        raise ValueError(f"unknown metric {metric!r}; choose from {list(columns)}")
    return columns[metric]


def _number(x: float) -> str:
    """Three significant digits for values near 1 (``0.412``, ``5.20``), fewer decimals above."""
    magnitude = abs(x)
    decimals = 0 if magnitude >= 100 else 1 if magnitude >= 10 else 2 if magnitude >= 1 else 3
    return f"{x:.{decimals}f}"


def _entry(summary: dict | None, metric: str) -> tuple[str, float | None]:
    """Table text of one cell and the value it is ranked by (None: nothing to rank).

    The rank value is the rounded number as shown, so entries that read the same tie.
    """
    if summary is None:  # the method has no cell at this budget
        return "–", None
    if metric == "success_rate":
        percent = round(100 * summary[metric])
        return f"{percent}%", float(percent)
    if metric not in METRICS:
        text = _number(summary[metric])
        return text, float(text)
    median, lo, hi = (summary[f"{metric}_{k}"] for k in ("median", "lo", "hi"))
    if median is None:
        return "n/a", None
    text = _number(median)
    return f"{text} [{_number(lo)}, {_number(hi)}]", float(text)


def _finite(data: Any) -> Any:
    """``data`` with every non-finite float replaced by None (recursively)."""
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return None if isinstance(data, float) and not math.isfinite(data) else data


def _figure(figsize: tuple[float, float], dpi: int, nrows: int = 1, ncols: int = 1):
    """A Figure on the Agg canvas and its axes, without pyplot.

    Going around pyplot leaves the caller's backend and figure registry alone (no
    ``matplotlib.use`` switch, no figures kept alive until ``plt.close``).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            "leaderboard plots need matplotlib: pip install 'synthmatch[leaderboard]'"
        ) from err
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=True)


def _save(fig: Any, path: Path) -> None:
    """Save ``fig`` as PNG at its own dpi through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    fig.savefig(tmp, format="png", dpi=fig.dpi)
    os.replace(tmp, path)
