"""Render and env-step throughput of every backend, as ratios measured in one run.

For each backend and batch size it times the raw synth render of random presets and a full
step of the native vector env (render + features + reward + observation + autoreset) on the
same batch, both with numpy arrays (one copy to the host per step) and with the torch-native
path (``array_type="torch"``, nothing leaves the device), in interleaved rounds so that machine
noise hits all of them alike, and reports medians. On a GPU it also counts the host
synchronisations of one step of each path.

Usage:
    python benchmarks/bench_env.py                      # CPU (and CUDA when present)
    python benchmarks/bench_env.py --num-envs 64 --rounds 9 --devices cpu
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

import synthmatch  # noqa: F401  (registers the ids)
from synthmatch.devices import count_syncs

BACKENDS = {"subtractive": "SynthMatch-Subtractive-v0", "fm": "SynthMatch-FM-v0",
            "torchsynth": "SynthMatch-TorchSynth-v0"}


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = (f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} with "
            f"{torch.get_num_threads()} threads, Python {platform.python_version()}")
    if torch.cuda.is_available():
        text += f"; GPU: {torch.cuda.get_device_name()}"
    return text


def timer(fn: Callable[[], object], device: str) -> Callable[[], float]:
    def run() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start
    return run


def bench(device: str, sizes: list[int], rounds: int, backends: list[str]) -> list[dict]:
    cases, syncs = {}, {}
    for name in backends:
        for n in sizes:
            venv = gym.make_vec(BACKENDS[name], num_envs=n, device=device)
            tenv = gym.make_vec(BACKENDS[name], num_envs=n, device=device, array_type="torch")
            venv.reset(seed=0)
            tenv.reset(seed=0)
            synth = venv.unwrapped.core.synth
            params = synth.params.sample(n, torch.Generator().manual_seed(1)).to(device)
            rng = np.random.default_rng(0)
            actions = rng.uniform(-1, 1, venv.action_space.shape).astype(np.float32)
            device_actions = torch.from_numpy(actions).to(device)
            render = timer(lambda s=synth, p=params: s.render(p), device)
            step = timer(lambda v=venv, a=actions: v.step(a), device)
            torch_step = timer(lambda v=tenv, a=device_actions: v.step(a), device)
            render(), step(), torch_step()  # warm-up: allocations, FFT plans, CUDA kernels
            cases[name, n] = (render, step, torch_step)
            syncs[name, n] = (count_syncs(lambda v=venv, a=actions: v.step(a)),
                              count_syncs(lambda v=tenv, a=device_actions: v.step(a)))
            if name == "torchsynth":
                raw = raw_voice(n, device)
                cases["torchsynth (raw Voice)", n] = (timer(raw, device), None, None)
    times = {key: ([], [], []) for key in cases}
    with torch.inference_mode():
        for _ in range(rounds):
            for key, fns in cases.items():
                for fn, out in zip(fns, times[key], strict=True):
                    if fn is not None:
                        out.append(fn())
    rows = []
    nan = float("nan")
    for (name, n), (renders, steps, torch_steps) in times.items():
        render_s = statistics.median(renders)
        row = {"device": device, "backend": name, "num_envs": n, "render_ms": 1e3 * render_s,
               "renders_per_s": n / render_s, "step_ms": nan, "env_steps_per_s": nan,
               "step_over_render": nan, "torch_steps_per_s": nan,
               "torch_step_over_render": nan, "syncs": (nan, nan)}
        if steps:
            def ratio(values: list[float], renders: list[float] = renders) -> float:
                return statistics.median(s / r for s, r in zip(values, renders, strict=True))

            step_s = statistics.median(steps)
            row.update(step_ms=1e3 * step_s, env_steps_per_s=n / step_s,
                       step_over_render=ratio(steps),
                       torch_steps_per_s=n / statistics.median(torch_steps),
                       torch_step_over_render=ratio(torch_steps), syncs=syncs[name, n])
        rows.append(row)
    return rows


def raw_voice(n: int, device: str) -> Callable[[], object]:
    """torchsynth's own ``Voice.output()`` at batch size ``n``, outside our wrapper."""
    from torchsynth.config import SynthConfig
    from torchsynth.synth import Voice

    # control_rate as in TorchSynthVoice (sample_rate / 100).
    voice = Voice(SynthConfig(batch_size=n, sample_rate=16000, buffer_size_seconds=1.0,
                              control_rate=160, reproducible=False)).to(device)
    if device == "cuda":
        voice.on_post_move_to_device()
    return voice.output


def bench_parallel(batch: int, rounds: int, workers: list[int], plugin: str | None) -> list[dict]:
    """Renders/s of the real-synth backends with 1 and N workers (threads for Vital, processes
    for VST3), on the same batch, in interleaved rounds. Backends that are not installed (or
    no plugin given) are skipped with a note."""
    from synthmatch.synths import make_synth

    makers = {}
    try:
        import vita  # noqa: F401

        for n in workers:
            makers[f"vital ({n} thread{'s' * (n > 1)})"] = lambda n=n: make_synth(
                "vital", threads=n)
    except ImportError:
        print("vital: skipped (pip install 'synthmatch[vital]')")
    if plugin:
        for n in workers:
            makers[f"vst3 {os.path.basename(plugin)} ({n} worker{'s' * (n > 1)})"] = (
                lambda n=n: make_synth("vst3", plugin_path=plugin, workers=n))
    else:
        print("vst3: skipped (give --plugin PATH, e.g. from scripts/build_test_plugins.sh)")
    cases = {}
    for name, make in makers.items():
        synth = make()
        params = synth.params.sample(batch, torch.Generator().manual_seed(1))
        render = timer(lambda s=synth, p=params: s.render(p), "cpu")
        render()
        cases[name] = (synth, render)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, (_, render) in cases.items():
            times[name].append(render())
    rows = []
    for name, (synth, _) in cases.items():
        median = statistics.median(times[name])
        rows.append({"backend": name, "num_envs": batch, "render_ms": 1e3 * median,
                     "renders_per_s": batch / median})
        if hasattr(synth, "close"):
            synth.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 16, 64, 256],
                        help="batch sizes (num_envs) to measure")
    parser.add_argument("--rounds", type=int, default=7,
                        help="interleaved timing rounds; medians are reported")
    parser.add_argument("--devices", nargs="+", default=None,
                        help="devices to measure (default: cpu, plus cuda when available)")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=list(BACKENDS))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--real", action="store_true",
                        help="also measure the real-synth backends (Vital, VST3) with 1 and "
                        "N workers")
    parser.add_argument("--plugin", default=None, help="VST3 instrument for --real")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="worker counts for --real")
    parser.add_argument("--real-batch", type=int, default=16, help="batch size for --real")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    warnings.filterwarnings("ignore")

    print(f"Machine: {machine()}")
    print("Probe: MIDI 60, 1 s at 16 kHz; random presets; medians of "
          f"{args.rounds} interleaved rounds.\n")
    if args.real:
        rows = bench_parallel(args.real_batch, args.rounds, args.workers, args.plugin)
        print("| backend (cpu) | batch | render ms | renders/s |")
        print("|---|---:|---:|---:|")
        for r in rows:
            print(f"| {r['backend']} | {r['num_envs']} | {r['render_ms']:.1f} | "
                  f"{r['renders_per_s']:.1f} |")
        print()
    print("| device | backend | num_envs | render ms | renders/s | env step ms | env steps/s "
          "| step / render | torch-path steps/s | torch step / render | host syncs per step "
          "(numpy, torch) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    results = []
    for device in devices:
        rows = bench(device, args.num_envs, args.rounds, args.backends)
        results += rows
        for r in rows:
            print(f"| {r['device']} | {r['backend']} | {r['num_envs']} | {r['render_ms']:.2f} | "
                  f"{r['renders_per_s']:.0f} | {r['step_ms']:.2f} | "
                  f"{r['env_steps_per_s']:.0f} | {r['step_over_render']:.2f} | "
                  f"{r['torch_steps_per_s']:.0f} | {r['torch_step_over_render']:.2f} | "
                  f"{'-' if device == 'cpu' else r['syncs']} |")
    print()
    for device in devices:
        by = {(r["backend"], r["num_envs"]): r for r in results if r["device"] == device}
        for n in args.num_envs:
            voice = by.get(("torchsynth (raw Voice)", n))
            if ("subtractive", n) in by and voice:
                ratio = by["subtractive", n]["renders_per_s"] / voice["renders_per_s"]
                print(f"{device}, num_envs={n}: the subtractive synth renders {ratio:.2f}x as "
                      "many sounds/s as torchsynth's raw Voice")


if __name__ == "__main__":
    main()
