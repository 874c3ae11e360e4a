#!/usr/bin/env bash
# Every CUDA figure of the GPU issue, in a few device calls (each under the device tool's
# 10 minutes), logs and a short table under OUT:
#
#   bash ../shared/device/prepare.sh            # here, once: wheels for the GPU machine
#   # on the device machine (carry .device), one part per call:
#   source .device/setup.sh && bash benchmarks/gpu_session.sh "$OUT" env     # bench_env.py
#   source .device/setup.sh && bash benchmarks/gpu_session.sh "$OUT" tests   # pytest -m gpu
#   source .device/setup.sh && bash benchmarks/gpu_session.sh "$OUT" ppo     # ppo_gpu vs SB3
#   source .device/setup.sh && bash benchmarks/gpu_session.sh "$OUT" data    # make_dataset
#
# SMOKE=1 runs the same commands at toy sizes on the CPU, to check this script without a GPU.
# Record the printed tables in docs/benchmarks.md with the command that made them.
set -euo pipefail
out="${1:?usage: gpu_session.sh OUT env|tests|ppo|data}"
part="${2:?usage: gpu_session.sh OUT env|tests|ppo|data}"
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
mkdir -p "$out"

if [[ "${SMOKE:-0}" == 1 ]]; then
    device=cpu sizes="4 16" rounds=1 steps=2048 ppo_envs=16 sb3_envs=16 presets=256 batch=256
else
    device=cuda sizes="64 256 1024 4096 16384" rounds=5 steps=1000000 ppo_envs=4096
    sb3_envs=256 presets=200000 batch=4096
    "$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA')"
    nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv \
        > "$out/gpu.csv"
fi

case "$part" in
env)
    # Raw renders against full vector-env steps (numpy and torch-native paths) and the host
    # synchronisations per step, for the three torch backends at every size.
    "$python" benchmarks/bench_env.py --devices "$device" --num-envs $sizes \
        --rounds "$rounds" 2>&1 | tee "$out/bench_env.txt"
    ;;
tests)
    # The gpu-marked tests (reset, autoreset, SB3 adapter, torch-native path, the budget of
    # host synchronisations, ppo_gpu.py smoke run); skipped on a CPU.
    "$python" -m pytest -m gpu -q -p no:cacheprovider 2>&1 | tee "$out/pytest_gpu.txt"
    ;;
ppo)
    # The same env steps by the device-resident PPO and by SB3's, then both curves.
    SECONDS=0
    "$python" experiments/ppo_gpu.py --env-id SynthMatch-v0 --device "$device" \
        --num-envs "$ppo_envs" --batch-size "$batch" --total-timesteps "$steps" \
        --log-dir "$out/runs" --run-name ppo_gpu 2>&1 | tail -n 3 | tee "$out/ppo_gpu.txt"
    echo "ppo_gpu.py: $steps steps in ${SECONDS}s end to end" | tee -a "$out/ppo_gpu.txt"
    SECONDS=0
    "$python" experiments/train_ppo.py --env-id SynthMatch-v0 --device "$device" \
        --num-envs "$sb3_envs" --total-timesteps "$steps" --log-dir "$out/runs" \
        --run-name sb3 2>&1 | tail -n 3 | tee "$out/sb3.txt"
    echo "train_ppo.py: $steps steps in ${SECONDS}s end to end" | tee -a "$out/sb3.txt"
    "$python" experiments/learning_results.py "$out/runs/sb3" "$out/runs/ppo_gpu" \
        --out "$out/ppo_gpu_vs_sb3.png" 2>&1 | tail -n 20 | tee "$out/curves.txt"
    ;;
data)
    SECONDS=0
    "$python" experiments/make_dataset.py --synth subtractive --n "$presets" \
        --device "$device" --out "$out/data" --no-progress 2>&1 | tail -n 3 \
        | tee "$out/make_dataset.txt"
    echo "make_dataset.py --device $device: $presets presets in ${SECONDS}s" \
        | tee -a "$out/make_dataset.txt"
    rm -rf "$out/data"  # the figure is the time; the shards would not come back anyway
    ;;
*)
    echo "gpu_session.sh: unknown part '$part' (env, tests, ppo or data)" >&2
    exit 2
    ;;
esac
