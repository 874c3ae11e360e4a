"""Sweeps of training settings as Ray Tune trials (``experiments/sweep.py`` is the command line).

A trial is one ordinary training run: the training script (``train_ppo.py``, ``train_sac.py``
or ``train_prior.py``) in a process of its own, given the trial's settings as flags, writing
``<out>/runs/<trial>/`` as it always does (config.json, TensorBoard events, checkpoints,
``eval.json`` or ``val.json``) and its output to ``<out>/logs/<trial>.log``. A trial's name is
made of its settings, so running the same sweep again reuses every finished run, and a trial
whose worker died resumes from its last checkpoint when Tune restarts it. The result of a
trial is its final held-out distance: the median final perceptual distance on the held-out
targets (``eval.json``) for PPO and SAC, the median distance of re-rendered prior samples on
the validation split (``val.json``) for the prior. Lower is better.

Scripts and paths given in settings are resolved on the machine that runs the trial, from the
directory the sweep was started in: on a cluster, use a checkout and data at the same paths on
every node (a shared file system).
"""

from __future__ import annotations

import csv
import ctypes
import json
import math
import re
import shutil
import signal
import statistics
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# algo -> (training script, result file, the result's held-out distance)
ALGOS: dict[str, tuple[str, str, str]] = {
    "ppo": ("train_ppo.py", "eval.json", "median_final_distance"),
    "sac": ("train_sac.py", "eval.json", "median_final_distance"),
    "prior": ("train_prior.py", "val.json", "val/spectral_distance"),
}
# Settings the sweep sets itself: a trial's directory, and the seed from ``seeds``.
RESERVED = ("run_name", "log_dir", "resume", "seed")
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
# Metrics of a result file shown in the summary besides the distance ("/" becomes "_").
SUMMARY_METRICS = ("success_rate", "median_initial_distance", "val_param_mae", "loss_val",
                   "steps", "step")


class TrialError(RuntimeError):
    """A training script exited with an error (the message quotes its log's last line).

    Attributes:
        code: Its exit status; negative when a signal ended it (killed, out of memory).
    """

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code

    def __reduce__(self):  # Ray sends it to the driver
        return type(self), (str(self), self.code)


@dataclass(frozen=True)
class SweepSpec:
    """What every trial of a sweep shares.

    Attributes:
        algo: ``ppo``, ``sac`` or ``prior``.
        script: The training script (absolute path).
        out: The sweep directory (absolute path).
        cwd: The directory trials run in (relative paths in settings are from here).
        python: The interpreter that runs the script.
        fixed: Settings every trial gets (``{"total_timesteps": 20000}``).
        bool_settings: Names of boolean settings (given as ``--name`` / ``--no-name``).
    """

    algo: str
    script: str
    out: str
    cwd: str
    python: str
    fixed: dict[str, Any] = field(default_factory=dict)
    bool_settings: tuple[str, ...] = ()


def parse_value(text: str) -> Any:
    """``"3e-4"`` -> 0.0003, ``"16"`` -> 16, ``"true"`` -> True, ``"none"`` -> None, else the
    string itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_assignments(items: Iterable[str], flag: str) -> dict[str, str]:
    """``["lr=1e-3", ...]`` -> ``{"lr": "1e-3"}``; ``ValueError`` naming ``flag`` otherwise."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().lstrip("-").replace("-", "_")
        if not sep or not name or not value:
            raise ValueError(f"{flag} takes NAME=VALUE, got {item!r}")
        if name in out:
            raise ValueError(f"{flag}: {name} is given twice")
        out[name] = value
    return out


def parse_distribution(name: str, text: str) -> tuple[str, list[Any]]:
    """``"loguniform:1e-5:1e-3"`` -> ``("loguniform", [1e-5, 1e-3])``; ``choice:a,b`` ->
    ``("choice", ["a", "b"])``.

    Raises:
        ValueError: an unknown distribution or bad bounds (the message names the setting).
    """
    kind, _, rest = text.partition(":")
    if kind not in DISTRIBUTIONS:
        raise ValueError(f"--sample {name}={text}: the distribution must be one of "
                         f"{', '.join(DISTRIBUTIONS)} (e.g. loguniform:1e-5:1e-3)")
    if kind == "choice":
        values = [parse_value(v) for v in rest.split(",") if v]
        if not values:
            raise ValueError(f"--sample {name}={text}: choice needs values, e.g. choice:a,b")
        return kind, values
    bounds = [parse_value(v) for v in rest.split(":")]
    if len(bounds) != 2 or not all(isinstance(b, (int, float)) for b in bounds) \
            or not bounds[0] < bounds[1] or (kind == "loguniform" and bounds[0] <= 0):
        raise ValueError(f"--sample {name}={text}: {kind} takes LO:HI with LO < HI"
                         + (" and LO > 0" if kind == "loguniform" else ""))
    if kind == "randint" and not all(isinstance(b, int) for b in bounds):
        raise ValueError(f"--sample {name}={text}: randint takes integer bounds")
    return kind, bounds


def check_names(names: Iterable[str], known: Sequence[str], algo: str) -> None:
    """Refuse settings the training script does not have, or that the sweep sets itself."""
    for name in names:
        if name in RESERVED:
            raise ValueError(f"{name} is set by the sweep for every trial (the seed through "
                             "--seeds); leave it out")
        if name not in known:
            raise ValueError(f"{ALGOS[algo][0]} has no setting {name!r}; it has: "
                             f"{', '.join(n for n in known if n not in RESERVED)}")


def format_value(value: Any) -> str:
    """A setting's value in a trial name: floats with 6 significant digits."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def trial_name(algo: str, varied: dict[str, Any]) -> str:
    """``ppo__learning_rate=0.0003__seed=1``: what the trial's settings differ in."""
    parts = [f"{k}={format_value(v)}" for k, v in sorted(varied.items())]
    return re.sub(r"[^\w.=+-]", "_", "__".join([algo, *parts]))


def script_flags(settings: dict[str, Any], bool_settings: Iterable[str]) -> list[str]:
    """Command-line flags of ``settings`` (booleans as ``--name`` / ``--no-name``)."""
    flags = []
    for name, value in settings.items():
        flag = "--" + name.replace("_", "-")
        if name in bool_settings:
            flags.append(flag if value else "--no-" + name.replace("_", "-"))
        else:
            flags += [flag, str(value)]  # str(None) is tyro's None
    return flags


def recorded_settings(run_dir: Path, algo: str) -> dict[str, Any]:
    """The settings a finished or started run recorded in its config.json."""
    config = json.loads((run_dir / "config.json").read_text())
    return config.get("settings", {}) if algo == "prior" else config


def read_result(run_dir: Path, algo: str) -> dict[str, float]:
    """A finished run's metrics: ``distance`` (the held-out distance) and the result file's
    other numbers, with ``/`` in names turned into ``_``."""
    _, result_file, key = ALGOS[algo]
    data = json.loads((run_dir / result_file).read_text())
    out = {"distance": float(data[key])}
    for name, value in data.items():
        # eval.json's seed is the held-out targets' seed, not the trial's.
        if name != "seed" and isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name.replace("/", "_")] = float(value)
    return out


def checkpoint_of(run_dir: Path, algo: str) -> Path:
    return run_dir / "checkpoints" / ("latest.pt" if algo == "prior" else "latest.zip")


def _end_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child end when the process that started it does
    (Linux's ``PR_SET_PDEATHSIG``), or ``None`` elsewhere. Without it, a trial whose worker was
    killed would leave its training running beside the restarted one."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: no import after fork
    except (OSError, AttributeError):
        return None
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def run_trial(config: dict[str, Any], spec: SweepSpec) -> dict[str, float]:
    """Run (or resume, or reuse) one trial's training run; returns its metrics.

    Raises:
        ValueError: the trial's directory holds a run made with other settings.
        TrialError: the training script failed.
    """
    settings = {**spec.fixed, **config}
    name = trial_name(spec.algo, config)
    out = Path(spec.out)
    run_dir, log = out / "runs" / name, out / "logs" / f"{name}.log"
    _, result_file, _ = ALGOS[spec.algo]
    flags = script_flags(settings, spec.bool_settings)
    if (run_dir / "config.json").is_file():
        recorded = recorded_settings(run_dir, spec.algo)
        differ = {k: (recorded.get(k), v) for k, v in settings.items()
                  if k in recorded and recorded[k] != v}
        if differ:
            raise ValueError(f"{run_dir} holds a run with other settings ({differ}, recorded "
                             "vs asked); give the sweep another --out")
        if (run_dir / result_file).is_file():
            return read_result(run_dir, spec.algo)
        checkpoint = checkpoint_of(run_dir, spec.algo)
        if checkpoint.is_file():
            flags += ["--resume", str(checkpoint)]
    if "--resume" not in flags and run_dir.exists():
        shutil.rmtree(run_dir)  # a start that died before its first checkpoint
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [spec.python, spec.script, *flags, "--log-dir", str(run_dir.parent),
               "--run-name", name]
    with open(log, "a") as stream:
        stream.write("$ " + " ".join(command) + "\n")
        stream.flush()
        code = subprocess.run(command, cwd=spec.cwd, stdout=stream, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL,
                              preexec_fn=_end_with_parent()).returncode
    if code != 0:
        # The scripts end with a one-line error (or a traceback's last line).
        last = (log.read_text().strip().splitlines() or [""])[-1]
        raise TrialError(f"{Path(spec.script).name} exited with {code}: {last} (log: {log})",
                         code)
    return read_result(run_dir, spec.algo)


def _trainable(config: dict[str, Any], spec: SweepSpec) -> None:
    from ray import tune

    try:
        metrics = run_trial(config, spec)
    except (TrialError, ValueError) as err:
        if isinstance(err, TrialError) and err.code < 0:
            raise  # killed: Tune restarts the trial, which resumes from its checkpoint
        # The script refused its settings or failed: the same again would fail again.
        metrics = {"error": str(err)}
    tune.report(metrics)


def search_space(grid: dict[str, list[Any]], sample: dict[str, tuple[str, list[Any]]],
                 seeds: Sequence[int]) -> dict[str, Any]:
    """Tune's ``param_space``: a grid axis per ``grid`` entry and for the seeds, a
    distribution per ``sample`` entry."""
    from ray import tune

    space: dict[str, Any] = {name: tune.grid_search(list(values))
                             for name, values in grid.items()}
    for name, (kind, args) in sample.items():
        space[name] = tune.choice(args) if kind == "choice" else getattr(tune, kind)(*args)
    space["seed"] = tune.grid_search(list(seeds))
    return space


def run_sweep(spec: SweepSpec, grid: dict[str, list[Any]],
              sample: dict[str, tuple[str, list[Any]]], seeds: Sequence[int], *,
              num_samples: int = 1, cpus_per_trial: float = 1, gpus_per_trial: float = 0,
              max_concurrent: int | None = None, max_failures: int = 2,
              search_seed: int = 0, verbose: int = 1) -> list[dict[str, Any]]:
    """Run every trial as a Ray Tune trial on the cluster this process is connected to;
    returns one row per trial (its settings, run directory, metrics or error)."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    trainable = tune.with_resources(tune.with_parameters(_trainable, spec=spec),
                                    {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
    tuner = tune.Tuner(
        trainable, param_space=search_space(grid, sample, seeds),
        tune_config=tune.TuneConfig(
            num_samples=num_samples, max_concurrent_trials=max_concurrent,
            search_alg=BasicVariantGenerator(random_state=search_seed),
            trial_name_creator=lambda trial: trial_name(spec.algo, trial.config),
            trial_dirname_creator=lambda trial: trial_name(spec.algo, trial.config)),
        run_config=tune.RunConfig(name="tune", storage_path=spec.out, verbose=verbose,
                                  failure_config=tune.FailureConfig(max_failures=max_failures)))
    rows = []
    for result in tuner.fit():
        name = trial_name(spec.algo, result.config)
        row: dict[str, Any] = {"trial": name, **result.config,
                               "run_dir": str(Path(spec.out) / "runs" / name)}
        if result.error is not None:
            cause = getattr(result.error, "cause", None) or result.error
            row["error"] = str(cause).strip().splitlines()[0]
        elif "error" in result.metrics:
            row["error"] = result.metrics["error"]
        else:
            row.update({k: v for k, v in result.metrics.items()
                        if k == "distance" or k in SUMMARY_METRICS})
        rows.append(row)
    return rows


def aggregate(rows: list[dict[str, Any]], varied: Sequence[str]) -> list[dict[str, Any]]:
    """One row per setting (the trials that differ only in seed): the median, mean, min and
    max distance over its seeds, best first."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in varied), []).append(row)
    out = []
    for key, members in groups.items():
        values = [r["distance"] for r in members if "distance" in r]
        out.append({**dict(zip(varied, key, strict=True)), "seeds": len(values),
                    "failed": len(members) - len(values),
                    "median": statistics.median(values) if values else math.nan,
                    "mean": statistics.fmean(values) if values else math.nan,
                    "min": min(values, default=math.nan), "max": max(values, default=math.nan)})
    return sorted(out, key=lambda r: (math.isnan(r["median"]), r["median"]))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4g}"
    return "–" if value is None else str(value).replace("|", "\\|")


def markdown_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_summary(rows: list[dict[str, Any]], out: Path, algo: str, varied: Sequence[str],
                  command: str) -> str:
    """Write ``summary.md``, ``summary.csv`` (one line per trial) and ``summary.json``;
    returns the Markdown."""
    _, result_file, key = ALGOS[algo]
    settings = aggregate(rows, varied)
    trials = sorted(rows, key=lambda r: (r.get("distance", math.inf), r["trial"]))
    extra = [k for k in SUMMARY_METRICS if any(k in r for r in rows)]
    text = (f"# Sweep: {algo}, {len(rows)} trials\n\n`{command}`\n\n"
            f"Final held-out distance: `{key}` of each run's `{result_file}` (lower is "
            "better).\n\n## Settings (over seeds, best first)\n\n"
            + markdown_table(settings, [*varied, "seeds", "failed", "median", "mean", "min",
                                        "max"])
            + "\n## Trials\n\n"
            + markdown_table(trials, ["trial", "seed", "distance", *extra, "error"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(text)
    columns = ["trial", *varied, "seed", "distance", *extra, "error", "run_dir"]
    with open(out / "summary.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(trials)
    (out / "summary.json").write_text(json.dumps(
        {"algo": algo, "command": command, "metric": f"{result_file}:{key}",
         "settings": settings, "trials": trials}, indent=2, default=str) + "\n")
    return text

