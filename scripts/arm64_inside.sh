#!/usr/bin/env bash
# Run by scripts/arm64_check.sh inside the arm64 root (chroot): the technician's steps on a fresh Pi OS.
# Layout made by the caller: /src = the checkout (read-only), /home/tech/shared/data = the photos (read-only),
# /out = results for the host (rw). Prints "RESULT PASS|FAIL name detail" lines; the caller tallies them.
# Usage: arm64_inside.sh [--skip-tests] [--cpu LABEL] [--embeddings-only]
set -uo pipefail
export LC_ALL=C.UTF-8 HOME=/root PYTHONDONTWRITEBYTECODE=1
SKIP_TESTS=0
EMBEDDINGS_ONLY=0
CPU=pi4  # which Pi's core qemu emulates (the caller sets QEMU_CPU); names the embedding files
while [ $# -gt 0 ]; do
    case $1 in
        --skip-tests) SKIP_TESTS=1; shift;;
        --embeddings-only) EMBEDDINGS_ONLY=1; shift;;  # after a full run: the venv is there
        --cpu) CPU=$2; shift 2;;
        *) echo "arm64_inside: unknown argument $1" >&2; exit 2;;
    esac
done
WORK=/home/tech
APP=$WORK/edge-app
OUT=/out
FACES=$WORK/shared/data/faces-dev

result() { echo "RESULT $1 $2 $3"; }
step() {  # step NAME CMD...: run, time, report
    local name=$1 t0 rc
    shift
    echo "---- $name: $*"
    t0=$(date +%s)
    "$@"
    rc=$?
    if [ $rc = 0 ]; then result PASS "$name" "$(( $(date +%s) - t0 )) s"
    else result FAIL "$name" "exit $rc after $(( $(date +%s) - t0 )) s"; fi
    return $rc
}

echo "arm64 root: $(. /etc/os-release; echo "$PRETTY_NAME"), $(uname -m) (qemu: ${QEMU_CPU:-max}), $(python3 --version)," \
     "Debian numpy $(python3 -c 'import numpy; print(numpy.__version__)')"

embeddings() {  # 2. every dev photo through every embedder, for the host to compare with its own
    cd "$APP" || return 1
    local e
    for e in sface dlib sface+edgeface sface+edgeface+reid; do
        step "embeddings-$CPU-$e" .venv/bin/python scripts/embeddings.py dump "$FACES" --out "$OUT/emb-$CPU-$e.json" \
            --embedder "$e"
    done
}
if [ $EMBEDDINGS_ONLY = 1 ]; then
    embeddings
    exit 0
fi

# A clone as a technician has it: the working tree without the host's venv or caches.
rm -rf "$APP" && mkdir -p "$APP"
tar -C /src --exclude=./.venv --exclude=./.git --exclude='*.egg-info' --exclude=__pycache__ --exclude=./out \
    --exclude=./.mypy_cache --exclude=./.ruff_cache --exclude=./.pytest_cache -cf - . | tar -C "$APP" -xf -
cd "$APP" || exit 1

rm -rf "$HOME/.local/share/edge-app"  # the README's gallery: a fresh Pi has none (the root is reused between runs)

# 1. The README's first command, word for word (taken from README.md so the two cannot drift apart).
readme_cmd=$(awk '/^## Set up a fresh machine/{f=1} f && /^    python3 -m venv/{sub(/^    /, ""); print; exit}' README.md)
[ -n "$readme_cmd" ] || { result FAIL readme "no 'python3 -m venv' command under '## Set up a fresh machine'"; exit 1; }
readme() { bash -c "$readme_cmd" > "$OUT/readme.txt" 2>&1; local rc=$?; cat "$OUT/readme.txt"
           [ $rc = 0 ] && grep -q "obama2.jpg.*Obama.*decision=granted" "$OUT/readme.txt"; }
step readme readme || exit 1

# The wheels pip resolved (the tag says which binary build: manylinux_..._aarch64 or pure python).
for d in .venv/lib/python3*/site-packages/*.dist-info; do
    name=$(sed -n 's/^Name: //p' "$d/METADATA" | head -1); ver=$(sed -n 's/^Version: //p' "$d/METADATA" | head -1)
    tag=$(sed -n 's/^Tag: //p' "$d/WHEEL" 2>/dev/null | head -1)
    echo "WHEEL $name==$ver ${tag:-}"
done | sort -f > "$OUT/wheels.txt"

embeddings

# 3. doctor and the door daemon, camera = a video of Obama walking up (his enrolment photo is not in it).
#    Framed as the x86 daemon tests frame him (tests/conftest.py kiosk_frame): face 35 % of the frame height,
#    the photo's own edges continued; a letterbox on flat grey looks like a print held up, and liveness
#    (on by default) rightly refuses that.
.venv/bin/python - "$FACES" "$WORK/walkup.avi" <<'EOF'
import sys
import cv2
from edge_app.imageio import read_image
from edge_app.models import ModelSet
import numpy as np
photo = read_image(f"{sys.argv[1]}/obama2.jpg")
x0, y0, x1, y1 = ModelSet().pipeline(num_threads=2).detector.detect(photo)[0].box
scale = 0.35 * 480 / (y1 - y0)
m = np.array([[scale, 0, 320 - (x0 + x1) / 2 * scale], [0, scale, 240 - (y0 + y1) / 2 * scale]], np.float64)
frame = cv2.warpAffine(photo, m, (640, 480), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
out = cv2.VideoWriter(sys.argv[2], cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (640, 480))
for _ in range(12):
    out.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
out.release()
EOF
GALLERY=$HOME/.local/share/edge-app/gallery.db   # where the README's enroll put Obama
cat > "$WORK/kiosk.toml" <<EOF
[camera]
source = "$WORK/walkup.avi"
[door]
pins = "mock"
pulse_seconds = 0.5
[feedback]
green_pin = 5
red_pin = 6
buzzer_pin = 13
[gallery]
path = "$GALLERY"
EOF
step doctor .venv/bin/edge-app doctor --config "$WORK/kiosk.toml"
granted() {
    .venv/bin/edge-app run --config "$WORK/kiosk.toml" || return 1
    .venv/bin/python - "$GALLERY" <<'EOF'
import sqlite3, sys
rows = sqlite3.connect(sys.argv[1]).execute(
    "SELECT person_name, reason FROM events WHERE kind = 'access' ORDER BY ts").fetchall()
print("access events:", rows)
sys.exit(0 if ("Obama", "granted") in rows else 1)
EOF
}
step run-grants granted

# 4. provisioning/setup.sh staged under a directory: a real venv with --system-site-packages, real pip install.
STAGE=$WORK/stage
rm -rf "$STAGE" && mkdir -p "$STAGE"
step setup-root provisioning/setup.sh --root "$STAGE" --device-id arm64-check --relay-pin 17 --contact-pin 27
step setup-root-again bash -c "provisioning/setup.sh --root '$STAGE' --device-id arm64-check --relay-pin 17 \
    --contact-pin 27 | tee /dev/stderr | grep -q '^setup: 0 changed'"

# 5. Pi OS numpy: the kiosk venv sees apt's packages (python3-picamera2 on a Pi); its numpy must keep the major
#    version of Debian's, else C extensions built against Debian's numpy break. python3-bottleneck is such an
#    extension here (picamera2's own, python3-simplejpeg and python3-libcamera, are not in Debian).
numpy_abi() {  # numpy_abi VENV: Debian's compiled module works with the numpy that VENV imports
    "$1/bin/python" -c "import numpy, bottleneck; print('venv numpy', numpy.__version__, numpy.__file__);
assert bottleneck.nansum(numpy.array([1.0, numpy.nan, 2.0])) == 3.0"
}
step numpy-kiosk-venv numpy_abi "$STAGE/opt/edge-app/venv"
# The clash the pin avoids, shown: the newest numpy from pip in such a venv.
numpy_clash() {
    local v=$WORK/clash-venv sys_major
    sys_major=$(python3 -c 'import numpy; print(numpy.__version__.split(".")[0])')
    if [ "$sys_major" -ge 2 ]; then echo "Debian's numpy is $sys_major.x: no 1.x/2.x clash on this release"; return 0; fi
    rm -rf "$v" && python3 -m venv --system-site-packages "$v" && "$v/bin/pip" install -q 'numpy>=2' || return 1
    if numpy_abi "$v" 2>&1 | tail -3; then echo "expected the clash, none seen"; return 1; fi
    echo "as expected: numpy 2 from pip breaks Debian's numpy-1.x extensions"
}
step numpy-clash-shown numpy_clash

# 6. The unit tests that make sense on a Pi: no dlib (no aarch64 wheel of dlib-bin), pure logic and the models.
if [ $SKIP_TESTS = 0 ]; then
    .venv/bin/pip install -q pytest >/dev/null
    step unit-tests env EDGE_APP_FACES_DEV="$FACES" .venv/bin/python -m pytest -q -p no:cacheprovider \
        tests/unit/test_config.py tests/unit/test_door.py tests/unit/test_feedback.py tests/unit/test_platform.py \
        tests/unit/test_model_stats.py tests/unit/test_access.py tests/unit/test_gallery_store.py tests/unit/test_matcher.py \
        tests/unit/test_quality.py tests/unit/test_sdnotify.py tests/unit/test_security.py
fi
exit 0
