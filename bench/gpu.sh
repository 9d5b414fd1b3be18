#!/usr/bin/env bash
# Run framecast's GPU benchmarks and GPU-only tests from a source checkout on a CUDA machine,
# without installing the package (the framecast.* namespace is assembled from the source
# folders with links).
#   bash bench/gpu.sh [tests] [kernels] [clip] [caps] [adapters] [job] [quality] [toy]   # default: kernels clip adapters
#   tests:    the compiled Triton kernels against their references, and toy-model training on CUDA
#   caps:     the 14B on emulated 8, 12, 16 and 24 GiB cards (the allocator capped): for each, the settings
#             --max-vram picks, a propagation and training steps with peak allocated/reserved, seconds per
#             step against the uncapped bf16 run, peak host RSS and the memory model's estimates (~7 minutes;
#             caps that would end past CLIP_DEADLINE_S, default 450 s, are skipped and say so)
#   job:      the whole job (train + propagate + file) on the 14B for the slow path and each speed lever:
#             unit costs measured with JOB_UNIT_STEPS (3) steps, jobs extrapolated (~4 minutes)
#   quality:  bench/quality.py on the GPU (the built-in toy model, or QUALITY_MODEL=DIR, e.g. one
#             trained there with the toy target below)
#   toy:      train the toy model on the GPU into TOY_OUT (default /tmp/toy-wan-i2v), as train-toy-model
#             --device cuda would (the CLI needs grpcio, which GPU images may carry in another version):
#             TOY_SETTINGS and TOY_SPEC are JSON objects of ToyTrainSettings fields and overrides of the "toy" WanSpec preset,
#             TOY_INIT_FROM a model to start from. The built-in model's decoder was trained with
#             TOY_INIT_FROM=engine/assets/toy-wan-i2v TOY_SPEC='{"vae_decoder_base_dim": 20}'
#             TOY_SETTINGS='{"vae_steps": 0, "vae_finetune_steps": 0, "transformer_steps": 0,
#             "decoder_steps": 100000, "vae_image_batch": 32, "vae_clip_batch": 4, "max_minutes": 12.5,
#             "data_workers": 12}'
# Environment:
#   RESULTS_DIR=DIR   rows go to DIR/<bench>.jsonl instead of bench/results/
#   BENCH_GIT_SHA=SHA the commit rows name, where the tree was copied without its own .git
#   CLIP_CONFIGS="Q/O/W ..."   bench_clip's configurations (QUANTIZE/OFFLOAD/WINDOW; window 0 = the
#                     whole 49-frame clip), after its bf16 all-on-GPU baseline
#   CLIP_CAPS="8 12 16 24"     the emulated cards' sizes in GiB (caps)
#   CLIP_STEPS, CLIP_RUNS, CLIP_TRAIN_STEPS, CLIP_DEADLINE_S, ADAPTER_ITERS   shorter runs when time is short
#   KERNEL_ARGS="--no-compile"  extra bench_kernels.py options (--only loss|blend, --no-compile)
#   PYTHON=python3    the interpreter
# Missing wheels (diffusers, bitsandbytes, ftfy) are installed from .whl/ when it exists.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
site=/tmp/framecast-site
if [ -d .whl ] && [ ! -e "$site/.installed" ]; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
  touch "$site/.installed"
fi
[ -d "$site" ] && export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/framecast"
cp proto/framecast/__init__.py "$stage/framecast/"
for part in proto/framecast/*/; do  # v1 (the wire) and common (what client and server share)
  part=${part%/}
  [ "${part##*/}" = __pycache__ ] && continue
  ln -s "$PWD/$part" "$stage/framecast/${part##*/}"
done
for part in engine server kernels client; do ln -s "$PWD/$part" "$stage/framecast/$part"; done
export PYTHONPATH=$stage${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
results=${RESULTS_DIR:-bench/results}
mkdir -p "$results"
what=${*:-kernels clip adapters}
for bench in $what; do
  case $bench in
    tests) TRITON_INTERPRET=0 "$python" -m pytest -q -p no:cacheprovider -k cuda \
             tests/kernels/test_kernels_cuda.py tests/engine/toy/test_train.py ;;
    kernels) "$python" bench/bench_kernels.py --device cuda ${KERNEL_ARGS:-} --results "$results/kernels.jsonl" ;;
    clip) "$python" bench/bench_clip.py --arch wan2.1-i2v-14b --device cuda --steps "${CLIP_STEPS:-4}" \
            --runs "${CLIP_RUNS:-2}" --train-steps "${CLIP_TRAIN_STEPS:-3}" --results "$results/clip.jsonl" \
            --config ${CLIP_CONFIGS:-nf4/model/13 nf4/none/0 none/none/13 none/model/0 nf4/group/13} ;;
    caps) "$python" bench/bench_clip.py --arch wan2.1-i2v-14b --device cuda --caps ${CLIP_CAPS:-8 12 16 24} \
            --steps "${CLIP_STEPS:-4}" --train-steps "${CLIP_TRAIN_STEPS:-3}" --deadline-s "${CLIP_DEADLINE_S:-450}" \
            --results "$results/clip.jsonl" ;;
    adapters) "$python" bench/bench_adapters.py --arch wan2.1-i2v-14b --device cuda --iters "${ADAPTER_ITERS:-20}" \
                --results "$results/adapters.jsonl" ;;
    toy) "$python" - "${TOY_OUT:-/tmp/toy-wan-i2v}" <<'EOF'
import json, logging, os, sys
from framecast.engine.toy.architectures import preset
from framecast.engine.toy.train import ToyTrainSettings, train_toy_model
logging.basicConfig(level=logging.INFO)
spec = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(os.environ.get("TOY_SPEC") or "{}").items()}
settings = ToyTrainSettings(**{"device": "cuda", **json.loads(os.environ.get("TOY_SETTINGS") or "{}")})
print(train_toy_model(sys.argv[1], settings, preset("toy", **spec), init_from=os.environ.get("TOY_INIT_FROM") or None))
EOF
      ;;
    job) "$python" bench/bench_job.py --arch wan2.1-i2v-14b --device cuda --unit-steps "${JOB_UNIT_STEPS:-3}" \
           --results "$results/job.jsonl" ;;
    quality) "$python" bench/quality.py ${QUALITY_MODEL:+--model "$QUALITY_MODEL"} --results "$results/quality.jsonl" ;;
    *) echo "unknown benchmark: $bench" >&2; exit 2 ;;
  esac
done
