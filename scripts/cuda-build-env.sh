#!/usr/bin/env bash
# Source this file to build candle's `cuda` feature on a machine with no GPU and no CUDA toolkit:
#
#   source scripts/cuda-build-env.sh      # once per shell; first run installs ~1.2 GB of wheels
#   cargo build --release --features cuda ...     # first build ~8 min on 2 cores (candle-kernels runs nvcc)
#
# What it does: installs NVIDIA's CUDA 13.0 compiler and libraries from PyPI into a venv (13.0 runs on drivers
# from 580 on; a newer nvcc emits PTX that such a driver cannot load), makes unversioned .so links and a
# stub libcuda.so (SONAME libcuda.so.1, every function returns CUDA_ERROR_NO_DEVICE) to link against, and
# exports PATH, CUDA_HOME, NVCC, CUDA_COMPUTE_CAP (90 = H100/H200, sm_90a) and RUSTFLAGS.
#
# Running the binary:
#   - on a machine with a GPU: LD_LIBRARY_PATH=<python site-packages>/nvidia/cu13/lib ./binary (any Python
#     environment with NVIDIA's cu13 wheels has these libraries); NEVER ship the stub there, it would hide the
#     real driver.
#   - without a GPU: LD_LIBRARY_PATH="$SWARMLAB_CUDA_STUB_RUNTIME:$SWARMLAB_CUDA_LIBS" ./binary
#     (the program must then fall back to CPU with a clear message).
# Changing these variables rebuilds everything: keep a separate target dir, e.g. CARGO_TARGET_DIR=target/cuda.

_cuda_dir=${SWARMLAB_CUDA_DIR:-$HOME/.cache/swarmlab-cuda}
_venv=$_cuda_dir/venv
if [ ! -e "$_venv/.wheels-ok" ]; then
  python3 -m venv "$_venv" || return 1 2>/dev/null || exit 1
  "$_venv/bin/pip" install -q \
    "nvidia-cuda-nvcc==13.0.88" "nvidia-cuda-crt==13.0.88" "nvidia-nvvm==13.0.88" \
    "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cccl==13.0.85" \
    "nvidia-cublas>=13.0,<13.1" "nvidia-curand>=10.4,<10.5" "nvidia-cuda-nvrtc>=13.0,<13.1" \
    && touch "$_venv/.wheels-ok" || { echo "cuda-build-env: wheel install failed" >&2; return 1 2>/dev/null || exit 1; }
fi
_cu=$("$_venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
_lnk=$_cuda_dir/link
mkdir -p "$_lnk/stub-runtime"
for _l in cublas:13 cublasLt:13 curand:10 nvrtc:13 cudart:13; do
  ln -sf "$_cu/lib/lib${_l%%:*}.so.${_l##*:}" "$_lnk/lib${_l%%:*}.so"
done
if [ ! -e "$_lnk/libcuda.so" ]; then
  # the stub exports every driver function that cudarc declares
  _cudarc=$(ls -d "$HOME"/.cargo/registry/src/*/cudarc-0.19.* 2>/dev/null | sort | tail -1)
  if [ -z "$_cudarc" ]; then
    echo "cuda-build-env: cudarc sources not found; run 'cargo fetch' first" >&2
    return 1 2>/dev/null || exit 1
  fi
  grep -ohE '^\s+fn (cu[A-Za-z0-9_]+)\(' "$_cudarc/src/driver/sys/mod.rs" | sed -E 's/^\s+fn //; s/\($//' | sort -u \
    | awk '{print "int " $1 "(void){return 100;}"}' > "$_lnk/libcuda_stub.c"
  gcc -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o "$_lnk/libcuda.so" "$_lnk/libcuda_stub.c" \
    && cp "$_lnk/libcuda.so" "$_lnk/stub-runtime/libcuda.so.1"
fi
export PATH="$_cu/bin:$PATH" CUDA_HOME="$_cu" NVCC="$_cu/bin/nvcc" CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export RUSTFLAGS="-L native=$_lnk ${RUSTFLAGS:-}"
export SWARMLAB_CUDA_LIBS="$_cu/lib" SWARMLAB_CUDA_STUB_RUNTIME="$_lnk/stub-runtime"
echo "cuda-build-env: nvcc $("$NVCC" --version | grep -oE 'release [0-9.]+'), compute cap $CUDA_COMPUTE_CAP, link dir $_lnk"
unset _cuda_dir _venv _cu _lnk _l _cudarc
