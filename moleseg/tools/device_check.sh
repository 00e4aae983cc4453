#!/usr/bin/env bash
# `make gpu-check-device`: the GPU check (moleseg.tools.gpu_check, Keras on JAX) on the GPU machine lent through
# the device tool, which has Python 3.12, JAX with CUDA, OpenCV, SciPy and h5py but no TensorFlow, no Keras and
# no package registry (README, "GPU and several machines", gives the exact call).
#
# Run from the repository root with the system python3 there and the wheels of `make device-wheels` carried in
# .device-wheels/. It installs those wheels into a temporary folder put first on PYTHONPATH, checks that every
# module the Keras-on-JAX check imports is there (one line names each that is not), then runs
# `python3 -m moleseg.tools.gpu_check --backend jax ARGS...` (the GPU mode; ARGS e.g. --steps 500) under
# `timeout`, and writes everything it printed to $OUT/device-check.txt (test-artifacts/device-check/ without $OUT).
#
# Environment: PYTHON (default python3), DEVICE_WHEELS (default .device-wheels), GPU_CHECK_TIMEOUT_S (default 300).
# Exit status: gpu_check's (0 passed, 1 a check failed, 2 it could not run), 3 a wheel or module is missing,
# 124 the check ran past its timeout.
set -uo pipefail

PYTHON=${PYTHON:-python3}
WHEELS=${DEVICE_WHEELS:-.device-wheels}
LIMIT_S=${GPU_CHECK_TIMEOUT_S:-300}
REPORT_DIR=${OUT:-test-artifacts/device-check}

check() {
    local site
    site=$(mktemp -d "${TMPDIR:-/tmp}/moleseg-device-site.XXXXXX")
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
            --disable-pip-version-check --target "$site" "$WHEELS"/*.whl \
            || { echo "device-check: the wheels in $WHEELS did not install"; return 3; }
    fi
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" KERAS_BACKEND=jax PYTHONUNBUFFERED=1
    # The modules a `--backend jax` check imports beyond the standard library (read off its sys.modules):
    # moleseg's own needs, then Keras and its needs, then JAX.
    "$PYTHON" - <<'EOF' || return 3
import importlib
import importlib.metadata
import platform
import sys

NEEDED = ("numpy", "scipy", "cv2", "PIL", "h5py", "ml_dtypes", "absl", "rich", "packaging", "namex", "optree",
          "keras", "jax", "jaxlib")
missing, versions = [], []
for name in NEEDED:
    try:
        module = importlib.import_module(name)
    except ImportError as error:
        missing.append(f"{name} ({error})")
    else:
        distribution = importlib.metadata.packages_distributions().get(name, [name])[0]
        versions.append(f"{distribution} {importlib.metadata.version(distribution)}")
if missing:
    print(f"device-check: missing for the jax check: {'; '.join(missing)} (add its wheel to .device-wheels/)")
    sys.exit(3)
import jax

print(f"device-check: Python {platform.python_version()}; {', '.join(versions)}")
print(f"device-check: JAX devices: {', '.join(str(device) for device in jax.devices())}")
EOF
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    echo "device-check: $PYTHON -m moleseg.tools.gpu_check --backend jax $* (at most $LIMIT_S s), $(nproc) cores"
    local started status
    started=$(date +%s)
    timeout "$LIMIT_S" "$PYTHON" -m moleseg.tools.gpu_check --backend jax "$@"
    status=$?
    echo "device-check: exit status $status after $(( $(date +%s) - started )) s"
    return "$status"
}

mkdir -p "$REPORT_DIR"
check "$@" 2>&1 | tee "$REPORT_DIR/device-check.txt"
exit "${PIPESTATUS[0]}"
