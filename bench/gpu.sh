#!/usr/bin/env bash
# Run framecast's GPU benchmarks from a source checkout on a CUDA machine, without installing
# the package (the framecast.* namespace is assembled from the source folders with links).
#   bash bench/gpu.sh [kernels] [clip] [adapters] [quality]   # default: the first three
#   quality: bench/quality.py on the GPU (the built-in toy model, or QUALITY_MODEL=DIR, e.g. one
#   trained there with `python3 -m framecast.client.cli train-toy-model DIR --device cuda`)
# Missing wheels (diffusers, bitsandbytes, ftfy) are installed from .whl/ when it exists.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/framecast-site .whl/*.whl
  export PYTHONPATH=/tmp/framecast-site${PYTHONPATH:+:$PYTHONPATH}
fi
stage=$(mktemp -d)
mkdir -p "$stage/framecast"
cp proto/framecast/__init__.py "$stage/framecast/"
ln -s "$PWD/proto/framecast/v1" "$stage/framecast/v1"
for part in engine server kernels client; do ln -s "$PWD/$part" "$stage/framecast/$part"; done
export PYTHONPATH=$stage${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
what=${*:-kernels clip adapters}
for bench in $what; do
  case $bench in
    kernels) python3 bench/bench_kernels.py --device cuda ;;
    clip) python3 bench/bench_clip.py --arch wan2.1-i2v-14b --device cuda --steps 4 --runs 2 --train-steps 3 \
            --quantize none nf4 --offload none model --windows 0 13 ;;
    adapters) if [ -f bench/bench_adapters.py ]; then python3 bench/bench_adapters.py --arch wan2.1-i2v-14b --device cuda; fi ;;
    quality) python3 bench/quality.py ${QUALITY_MODEL:+--model "$QUALITY_MODEL"} ;;
    *) echo "unknown benchmark: $bench" >&2; exit 2 ;;
  esac
done
