#!/usr/bin/env bash
# provisioning/setup.sh: turn a Raspberry Pi (Debian / Raspberry Pi OS) into an edge-app door kiosk.
#
# Installs the apt packages, the system user edge-app (groups gpio, video), a venv under /opt/edge-app with
# the package (its models ship inside it), /etc/edge-app/config.toml from the flags, the state directory,
# the systemd unit and tmpfiles.d entry; enables and starts the service and runs `edge-app doctor`.
#
# Idempotent: every step first looks at what is there and reports "changed" (it acted) or "unchanged" (it
# was already so); a second run with the same flags reports 0 changed and rewrites nothing. The gallery
# (/var/lib/edge-app/gallery.db) is never created, moved or touched. All flags are checked before anything
# is done: a bad one exits 2 with nothing changed. `--help` lists the flags.
set -euo pipefail
umask 022
export LC_ALL=C

PROG=setup.sh
PREFIX=/opt/edge-app
VENV=$PREFIX/venv
ETC=/etc/edge-app
CONFIG=$ETC/config.toml
TLS_DIR=$ETC/tls
PASSWORD_TARGET=$ETC/mqtt-password
STATE=/var/lib/edge-app
GALLERY=$STATE/gallery.db
UNIT_TARGET=/etc/systemd/system/edge-app.service
TMPFILES_TARGET=/usr/lib/tmpfiles.d/edge-app.conf
SERVICE=edge-app.service
SERVICE_USER=edge-app
SERVICE_GROUPS=(gpio video)  # the unit's SupplementaryGroups=
DEFAULT_RELAY_PIN=17         # edge_app.config DoorSection.relay_pin

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REPO_DIR=$(cd -- "$SCRIPT_DIR/.." && pwd -P)
UNIT_SOURCE=$REPO_DIR/systemd/edge-app.service
TMPFILES_SOURCE=$REPO_DIR/systemd/edge-app.tmpfiles.conf

usage() {
    cat <<'EOF'
Usage: provisioning/setup.sh --device-id ID [flags]

Provision this machine as an edge-app door kiosk (run as root), or stage the same tree under a directory
(--root DIR, as anyone). Non-interactive; without --device-id it asks for one only when stdin is a terminal.
64-bit only: a 32-bit ARM OS (armv7l, or a 32-bit userland on a 64-bit kernel) is refused (exit 1).

Device and door:
  --device-id ID            required; 1-64 of A-Z a-z 0-9 _ -   ([device] id, MQTT topics)
  --timezone AREA/CITY      [device] timezone, must exist under /usr/share/zoneinfo (default: the system's)
  --camera SPEC             [camera] source: 0, picamera2, rtsp://..., a file (default: picamera2 on a Pi, else 0)
  --relay-pin N             BCM pin 0..27 of the door relay (default 17)
  --contact-pin N           BCM pin 0..27 of the door contact (default: none)
  --exit-pin N              BCM pin 0..27 of the request-to-exit button (default: none); all pins distinct
  --lock-type TYPE          fail_secure (strike) | fail_safe (maglock) (default fail_secure)

MQTT (without --broker: [mqtt] enabled = false, and the flags below are refused):
  --broker URL              mqtt://host[:port] (default port 1883) or mqtts://host[:port] (TLS, 8883)
  --ca FILE                 CA certificate (PEM) of the broker, mqtts only   -> /etc/edge-app/tls/ca.pem
  --cert FILE --key FILE    client certificate and its key (PEM), mqtts only -> /etc/edge-app/tls/client.{pem,key}
  --mqtt-user NAME          broker user name
  --mqtt-password-file FILE file holding the password (needs --mqtt-user)  -> /etc/edge-app/mqtt-password
  --admin-key KEY           ed25519:<base64 of 32 bytes>, as printed by `edge-admin keygen`; repeatable
  --groups A,B              fleet groups this device answers ([mqtt] groups)
  Copied files and config.toml are 0640 root:edge-app in 0750 directories.

Installation:
  --package SPEC            what pip installs into the venv: a source directory, a wheel or a requirement
                            (default: the repository that contains this script). Installed again only when
                            its version differs from the installed one (bump the version to redeploy).
  --pip-no-deps             pip install --no-deps: the package alone, for staging tests and offline mirrors
                            whose dependencies were installed another way (apt, a wheelhouse)
  --python PATH             interpreter the venv is made from (default python3; the venv uses
                            --system-site-packages so that apt's python3-picamera2 is importable)

Run control:
  --root DIR                stage everything under DIR (DIR/opt/edge-app, DIR/etc/edge-app, DIR/var/lib/edge-app,
                            DIR/etc/systemd/system, DIR/usr/lib/tmpfiles.d; user and groups written to DIR/etc/passwd
                            and DIR/etc/group). No apt-get, systemctl or doctor: it prints them. The venv's scripts
                            carry DIR's absolute path (a venv cannot be moved): good for checking a tree, not for
                            copying it onto a device.
  --dry-run                 print what would be done ("+ command" lines, "would change: ..."), change nothing
  --no-start                enable the service but do not start or restart it
  -h, --help                this text

Output: one line per step, "changed: ..." or "unchanged: ...", then "setup: N changed, M unchanged".
Exit: 0 done, 1 a step failed or `edge-app doctor` found a problem, 2 bad flags (nothing was changed).
EOF
}

# --- messages -------------------------------------------------------------------------------------------

die_usage() {
    printf '%s: error: %s\n' "$PROG" "$1" >&2
    printf "Run '%s --help' for the flags.\n" "$PROG" >&2
    exit 2
}

die() {
    printf '%s: error: %s\n' "$PROG" "$1" >&2
    exit 1
}

# What the board is; the variables let tests play another board (edge_app.hardware.pi does the same).
DT_MODEL=${EDGE_APP_DEVICE_TREE_MODEL:-/proc/device-tree/model}
MACHINE=${EDGE_APP_MACHINE:-$(uname -m)}
USER_BITS=${EDGE_APP_USER_BITS:-$(getconf LONG_BIT 2>/dev/null || echo 64)}
APT_PYTHON_DIR=${EDGE_APP_APT_PYTHON_DIR:-/usr/lib/python3/dist-packages}  # apt's python3-* packages

check_64bit() {  # ai-edge-litert and OpenCV publish no 32-bit ARM wheels
    local what=""
    case $MACHINE in
        armv6l | armv7l | armv8l | armhf | arm) what="this is $MACHINE (32-bit ARM)" ;;
        aarch64 | arm64) [[ $USER_BITS == 32 ]] && what="the kernel is $MACHINE but the OS is 32-bit" ;;
    esac
    if [[ -n $what ]]; then
        die "edge-app needs a 64-bit OS: $what. Flash 'Raspberry Pi OS (64-bit)' (bookworm or trixie); a Pi 3, 4, 5 or Zero 2 W runs it."
    fi
}

CHANGED=0
UNCHANGED=0
LAST_CHANGED=0  # did the last ensure_* step act? (for daemon-reload / restart decisions)
RESTART=0       # something the daemon reads changed
CLEANUP=()      # temp files to remove if we stop half-way

cleanup() {
    if ((${#CLEANUP[@]})); then
        rm -f -- "${CLEANUP[@]}"
    fi
}
trap cleanup EXIT

changed() {
    CHANGED=$((CHANGED + 1))
    LAST_CHANGED=1
    if ((DRY_RUN)); then
        printf 'would change: %s\n' "$1"
    else
        printf 'changed: %s\n' "$1"
    fi
}

unchanged() {
    UNCHANGED=$((UNCHANGED + 1))
    LAST_CHANGED=0
    printf 'unchanged: %s\n' "$1"
}

show_cmd() {
    local line
    printf -v line '%q ' "$@"
    printf '+ %s\n' "${line% }"
}

# The one place that acts: print the command, skip it under --dry-run, stop the script if it fails.
run() {
    show_cmd "$@"
    if ((DRY_RUN)); then
        return 0
    fi
    "$@" || {
        local rc=$?
        printf '%s: error: failed (exit %d): %s\n' "$PROG" "$rc" "$*" >&2
        exit 1
    }
}

# Python, for look-ups only: never writes bytecode (a dry run writes nothing anywhere).
pyq() {
    PYTHONDONTWRITEBYTECODE=1 "$@"
}

# --- flags ----------------------------------------------------------------------------------------------

DEVICE_ID=""
BROKER=""
CA=""
CERT=""
KEY=""
MQTT_USER=""
MQTT_PASSWORD_FILE=""
RELAY_PIN=""
CONTACT_PIN=""
EXIT_PIN=""
LOCK_TYPE="fail_secure"
CAMERA=""
TIMEZONE=""
FLEET_GROUPS=""
PACKAGE=""
PIP_NO_DEPS=0
PYTHON="python3"
ROOT=""
DRY_RUN=0
NO_START=0
ADMIN_KEYS=()
declare -A GIVEN=()

parse_args() {
    local arg flag value has_value
    while (($#)); do
        arg=$1
        shift
        case $arg in
            -h | --help)
                usage
                exit 0
                ;;
            --*=*)
                flag=${arg%%=*}
                value=${arg#*=}
                has_value=1
                ;;
            --*)
                flag=$arg
                value=""
                has_value=0
                ;;
            -*) die_usage "$arg: unknown flag (flags are long, like --device-id; see --help)" ;;
            *) die_usage "unexpected argument '$arg' (every value follows its flag; see --help)" ;;
        esac
        case $flag in
            --pip-no-deps | --dry-run | --no-start)
                ((!has_value)) || die_usage "$flag: takes no value"
                [[ -z ${GIVEN[$flag]:-} ]] || die_usage "$flag: given twice"
                GIVEN[$flag]=1
                case $flag in
                    --pip-no-deps) PIP_NO_DEPS=1 ;;
                    --dry-run) DRY_RUN=1 ;;
                    --no-start) NO_START=1 ;;
                esac
                continue
                ;;
            --device-id | --broker | --ca | --cert | --key | --mqtt-user | --mqtt-password-file | --admin-key | \
                --relay-pin | --contact-pin | --exit-pin | --lock-type | --camera | --timezone | --groups | \
                --package | --python | --root) ;;
            *) die_usage "$flag: unknown flag (see --help)" ;;
        esac
        if ((!has_value)); then
            if (($# == 0)) || [[ $1 == --* ]]; then
                die_usage "$flag: missing value"
            fi
            value=$1
            shift
        fi
        if [[ $flag != --admin-key && -n ${GIVEN[$flag]:-} ]]; then
            die_usage "$flag: given twice"
        fi
        GIVEN[$flag]=1
        case $flag in
            --device-id) DEVICE_ID=$value ;;
            --broker) BROKER=$value ;;
            --ca) CA=$value ;;
            --cert) CERT=$value ;;
            --key) KEY=$value ;;
            --mqtt-user) MQTT_USER=$value ;;
            --mqtt-password-file) MQTT_PASSWORD_FILE=$value ;;
            --admin-key) ADMIN_KEYS+=("$value") ;;
            --relay-pin) RELAY_PIN=$value ;;
            --contact-pin) CONTACT_PIN=$value ;;
            --exit-pin) EXIT_PIN=$value ;;
            --lock-type) LOCK_TYPE=$value ;;
            --camera) CAMERA=$value ;;
            --timezone) TIMEZONE=$value ;;
            --groups) FLEET_GROUPS=$value ;;
            --package) PACKAGE=$value ;;
            --python) PYTHON=$value ;;
            --root) ROOT=$value ;;
        esac
    done
}

given() {
    [[ -n ${GIVEN[$1]:-} ]]
}

# --- validation (all of it before any action) -----------------------------------------------------------

BROKER_HOST=""
BROKER_PORT=""
BROKER_TLS=0
ON_PI=0
PYTHON_OK=0

check_pin() {  # FLAG VALUE VARIABLE: VARIABLE = the pin as a plain number
    local re='^[0-9]{1,2}$'
    if ! [[ $2 =~ $re ]] || ((10#$2 > 27)); then
        die_usage "$1: expected 0..27, got $2"
    fi
    printf -v "$3" '%d' "$((10#$2))"
}

check_text() {  # FLAG VALUE WHAT: a non-empty single-line value without control characters
    local re='^[^[:cntrl:]]{1,1024}$'
    [[ $2 =~ $re ]] || die_usage "$1: expected $3, got '$2'"
}

check_file() {  # FLAG PATH
    [[ -e $2 ]] || die_usage "$1: no such file: $2"
    [[ -f $2 ]] || die_usage "$1: not a regular file: $2"
    [[ -r $2 ]] || die_usage "$1: cannot read $2"
    [[ -s $2 ]] || die_usage "$1: empty file: $2"
}

check_pem() {  # FLAG PATH REGEX WHAT
    grep -Eq -- "$3" "$2" || die_usage "$1: $2 does not look like $4 (no '$3' line)"
}

check_python() {  # -> 0 usable, 1 not found; exits 2 when found but too old
    local exe
    if [[ $PYTHON == */* ]]; then
        [[ -x $PYTHON && ! -d $PYTHON ]] || return 1
        exe=$PYTHON
    else
        exe=$(command -v -- "$PYTHON") || return 1
    fi
    local version
    version=$(pyq "$exe" -c 'import sys; print("%d.%d" % sys.version_info[:2])') \
        || die_usage "--python: $PYTHON does not run"
    pyq "$exe" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die_usage "--python: $PYTHON is Python $version; edge-app needs 3.11 or newer"
    return 0
}

validate() {
    local re

    if [[ -n $ROOT ]]; then
        [[ -d $ROOT ]] || die_usage "--root: not a directory: $ROOT"
        ROOT=$(cd -- "$ROOT" && pwd -P)
        [[ $ROOT != / ]] || die_usage "--root: / is the real system; leave --root out to provision it"
    fi

    if ! given --device-id; then
        if [[ -t 0 ]]; then
            read -r -p "Device id (1-64 of A-Z a-z 0-9 _ -, e.g. front-door): " DEVICE_ID \
                || die_usage "--device-id: required (no answer)"
        else
            die_usage "--device-id: required (1-64 of A-Z a-z 0-9 _ -); stdin is not a terminal, so nobody can be asked"
        fi
    fi
    re='^[A-Za-z0-9_-]{1,64}$'
    [[ $DEVICE_ID =~ $re ]] || die_usage "--device-id: expected 1-64 of A-Z a-z 0-9 _ -, got '$DEVICE_ID'"

    # Door pins: 0..27 (the Pi header's BCM GPIOs), all different.
    if given --relay-pin; then check_pin --relay-pin "$RELAY_PIN" RELAY_PIN; fi
    if given --contact-pin; then check_pin --contact-pin "$CONTACT_PIN" CONTACT_PIN; fi
    if given --exit-pin; then check_pin --exit-pin "$EXIT_PIN" EXIT_PIN; fi
    local relay=${RELAY_PIN:-$DEFAULT_RELAY_PIN}
    local relay_name="--relay-pin"
    given --relay-pin || relay_name="the relay pin (--relay-pin default $DEFAULT_RELAY_PIN)"
    if [[ -n $CONTACT_PIN && $CONTACT_PIN == "$relay" ]]; then
        die_usage "--contact-pin: $CONTACT_PIN is already $relay_name; the pins must differ"
    fi
    if [[ -n $EXIT_PIN && $EXIT_PIN == "$relay" ]]; then
        die_usage "--exit-pin: $EXIT_PIN is already $relay_name; the pins must differ"
    fi
    if [[ -n $EXIT_PIN && $EXIT_PIN == "$CONTACT_PIN" ]]; then
        die_usage "--exit-pin: $EXIT_PIN is already the --contact-pin; the pins must differ"
    fi
    case $LOCK_TYPE in
        fail_secure | fail_safe) ;;
        *) die_usage "--lock-type: expected fail_secure or fail_safe, got '$LOCK_TYPE'" ;;
    esac

    check_64bit
    if [[ -r $DT_MODEL ]] && grep -qa 'Raspberry Pi' "$DT_MODEL"; then
        ON_PI=1
    fi
    if given --camera; then
        check_text --camera "$CAMERA" "a camera source (0, picamera2, rtsp://..., a file)"
    elif ((ON_PI)); then
        CAMERA=picamera2
    else
        CAMERA=0
    fi

    if given --timezone; then
        re='^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$'
        if ! [[ $TIMEZONE =~ $re ]] \
            || ! [[ -f $ROOT/usr/share/zoneinfo/$TIMEZONE || -f /usr/share/zoneinfo/$TIMEZONE ]]; then
            die_usage "--timezone: unknown time zone '$TIMEZONE' (not in /usr/share/zoneinfo; an IANA name like Europe/Berlin)"
        fi
    fi

    # MQTT
    if given --broker; then
        re='^(mqtts?)://([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(:([0-9]{1,5}))?/?$'
        [[ $BROKER =~ $re ]] \
            || die_usage "--broker: expected mqtt://host[:port] or mqtts://host[:port], got '$BROKER'"
        BROKER_HOST=${BASH_REMATCH[2]}
        BROKER_HOST=${BROKER_HOST#[}
        BROKER_HOST=${BROKER_HOST%]}
        BROKER_PORT=${BASH_REMATCH[5]}
        if [[ ${BASH_REMATCH[1]} == mqtts ]]; then
            BROKER_TLS=1
            BROKER_PORT=${BROKER_PORT:-8883}
        else
            BROKER_PORT=${BROKER_PORT:-1883}
        fi
        BROKER_PORT=$((10#$BROKER_PORT))
        if ((BROKER_PORT < 1 || BROKER_PORT > 65535)); then
            die_usage "--broker: port expected 1..65535, got $BROKER_PORT"
        fi
    fi
    if given --ca; then
        check_file --ca "$CA"
        check_pem --ca "$CA" '-----BEGIN CERTIFICATE-----' "a PEM certificate"
    fi
    if given --cert; then
        check_file --cert "$CERT"
        check_pem --cert "$CERT" '-----BEGIN CERTIFICATE-----' "a PEM certificate"
    fi
    if given --key; then
        check_file --key "$KEY"
        check_pem --key "$KEY" '-----BEGIN ([A-Z]+ )?PRIVATE KEY-----' "a PEM private key"
    fi
    if given --mqtt-user; then
        check_text --mqtt-user "$MQTT_USER" "a user name"
    fi
    if given --mqtt-password-file; then
        check_file --mqtt-password-file "$MQTT_PASSWORD_FILE"
    fi
    local key b64 n seen=","
    local keys=()
    re='^ed25519:[A-Za-z0-9+/]{43}=$'
    for key in ${ADMIN_KEYS[@]+"${ADMIN_KEYS[@]}"}; do
        b64=${key#ed25519:}
        n=0
        if [[ $key =~ $re ]]; then
            n=$(printf '%s' "$b64" | base64 -d 2>/dev/null | wc -c) || n=0
        fi
        if ((n != 32)); then
            die_usage "--admin-key: expected ed25519:<base64 of 32 bytes> (as printed by edge-admin keygen), got '$key'"
        fi
        if [[ $seen != *",$key,"* ]]; then
            keys+=("$key")
            seen+="$key,"
        fi
    done
    ADMIN_KEYS=(${keys[@]+"${keys[@]}"})
    if given --groups; then
        local group out="" rest=$FLEET_GROUPS,
        re='^[A-Za-z0-9_.-]{1,64}$'
        while [[ -n $rest ]]; do
            group=${rest%%,*}
            rest=${rest#*,}
            group=${group// /}
            [[ -n $group ]] || continue
            [[ $group =~ $re ]] \
                || die_usage "--groups: expected comma-separated names of A-Z a-z 0-9 _ . -, got '$FLEET_GROUPS'"
            out+=${out:+,}$group
        done
        [[ -n $out ]] || die_usage "--groups: expected comma-separated names of A-Z a-z 0-9 _ . -, got '$FLEET_GROUPS'"
        FLEET_GROUPS=$out
    fi
    # Cross-checks, once every flag is well-formed on its own (the most specific message first).
    if given --cert && ! given --key; then
        die_usage "--cert: a client certificate needs its --key"
    fi
    if given --key && ! given --cert; then
        die_usage "--key: a client key needs its --cert"
    fi
    if given --mqtt-password-file && ! given --mqtt-user; then
        die_usage "--mqtt-password-file: needs --mqtt-user"
    fi
    local flag
    if ! given --broker; then
        for flag in --ca --cert --key --mqtt-user --mqtt-password-file --admin-key --groups; do
            if given "$flag"; then
                die_usage "$flag: needs --broker (without it MQTT is off)"
            fi
        done
    fi
    if ((!BROKER_TLS)); then
        for flag in --ca --cert --key; do
            if given "$flag"; then
                die_usage "$flag: TLS files need an mqtts:// broker, got --broker '$BROKER'"
            fi
        done
    fi

    # Installation
    if [[ -z $PACKAGE ]]; then
        PACKAGE=$REPO_DIR
    fi
    if [[ -d $PACKAGE ]]; then
        [[ -f $PACKAGE/pyproject.toml || -f $PACKAGE/setup.py ]] \
            || die_usage "--package: $PACKAGE is not a Python project (no pyproject.toml)"
        PACKAGE=$(cd -- "$PACKAGE" && pwd -P)
    elif [[ $PACKAGE == */* || $PACKAGE == *.whl ]]; then
        [[ -f $PACKAGE ]] || die_usage "--package: no such file or directory: $PACKAGE"
    else
        re='^[A-Za-z0-9][^[:space:][:cntrl:]]*$'
        [[ $PACKAGE =~ $re ]] || die_usage "--package: expected a directory, a wheel or a requirement, got '$PACKAGE'"
    fi
    if check_python; then
        PYTHON_OK=1
    elif given --python || [[ -n $ROOT ]] || ((DRY_RUN)); then
        die_usage "--python: not found or not executable: $PYTHON"
    fi  # else: python3 comes with the apt step

    [[ -f $UNIT_SOURCE && -f $TMPFILES_SOURCE ]] \
        || die "the systemd files are missing: $UNIT_SOURCE, $TMPFILES_SOURCE (run setup.sh from the edge-app repository)"
    [[ $(grep -c '^ExecStart=' "$UNIT_SOURCE") == 1 ]] || die "$UNIT_SOURCE: expected one ExecStart= line"
    [[ $(grep -c '^ExecStopPost=' "$UNIT_SOURCE") == 1 ]] || die "$UNIT_SOURCE: expected one ExecStopPost= line"

    if [[ -z $ROOT ]] && ((!DRY_RUN)) && ((EUID != 0)); then
        die_usage "must be run as root (sudo $0 ...), or stage into a directory with --root DIR"
    fi
}

# --- file helpers (TARGET = path on the device; the file is $ROOT$TARGET) -------------------------------

CAN_CHOWN=0

attrs_ok() {  # PATH MODE UID GID: mode matches and, when we can chown, the owner too
    local cur
    cur=$(stat -c '%a %u %g' "$1")
    if ((CAN_CHOWN)); then
        [[ $cur == "$2 $3 $4" ]]
    else
        [[ ${cur%% *} == "$2" ]]
    fi
}

set_attrs() {  # PATH MODE UID GID
    if ((CAN_CHOWN)); then
        run chown -h "$3:$4" -- "$1"
    fi
    run chmod "$2" -- "$1"
}

ensure_dir() {  # TARGET MODE UID GID
    local path=$ROOT$1
    # Never through a symbolic link: chown/chmod would change whatever it points at (a link planted in a folder
    # the service user owns would hand it, say, /etc/systemd/system on the next run).
    [[ -L $path ]] && die "$1 is a symbolic link; refusing to set its owner or mode through it (remove it, then run again)"
    if [[ ! -d $path ]]; then
        run mkdir -p -- "$path"
        set_attrs "$path" "$2" "$3" "$4"
        changed "$1: directory created, mode $2, owner $3:$4"
    elif ! attrs_ok "$path" "$2" "$3" "$4"; then
        set_attrs "$path" "$2" "$3" "$4"
        changed "$1: directory set to mode $2, owner $3:$4"
    else
        unchanged "$1: directory, mode $2, owner $3:$4"
    fi
}

# Put a new file in place atomically: a temp file beside it (0600 until its attributes are set), then rename.
# SOURCE_KIND is "file" (copy PATH_OR_TEXT) or "text" (write it).
place_file() {  # PATH MODE UID GID SOURCE_KIND PATH_OR_TEXT
    local path=$1 dir tmp
    dir=$(dirname -- "$path")
    if [[ $5 == file ]]; then
        show_cmd install -m "$2" -o "$3" -g "$4" -- "$6" "$path"
    else
        show_cmd write "$path" mode "$2" owner "$3:$4"
    fi
    if ((DRY_RUN)); then
        return 0
    fi
    [[ -d $dir ]] || mkdir -p -- "$dir" || die "cannot create $dir"
    tmp=$(mktemp -- "$dir/.$(basename -- "$path").XXXXXX") || die "cannot create a temp file in $dir"
    CLEANUP+=("$tmp")
    if [[ $5 == file ]]; then
        cat -- "$6" >"$tmp" || die "cannot copy $6 to $tmp"
    else
        printf '%s' "$6" >"$tmp" || die "cannot write $tmp"
    fi
    if ((CAN_CHOWN)); then
        chown "$3:$4" -- "$tmp" || die "cannot chown $tmp"
    fi
    chmod "$2" -- "$tmp" || die "cannot chmod $tmp"
    mv -f -- "$tmp" "$path" || die "cannot move $tmp to $path"
}

same_content() {  # PATH SOURCE_KIND PATH_OR_TEXT
    [[ -f $1 ]] || return 1
    if [[ $2 == file ]]; then
        cmp -s -- "$3" "$1"
    else
        printf '%s' "$3" | cmp -s -- - "$1"
    fi
}

ensure_file() {  # TARGET MODE UID GID SOURCE_KIND PATH_OR_TEXT [backup]
    local path=$ROOT$1
    if same_content "$path" "$5" "$6"; then
        if attrs_ok "$path" "$2" "$3" "$4"; then
            unchanged "$1: mode $2, owner $3:$4"
        else
            set_attrs "$path" "$2" "$3" "$4"
            changed "$1: set to mode $2, owner $3:$4"
        fi
        return 0
    fi
    if [[ -f $path ]]; then
        if [[ ${7:-} == backup ]]; then
            run cp -p -- "$path" "$path.bak"
        fi
        place_file "$path" "$2" "$3" "$4" "$5" "$6"
        changed "$1: replaced (new content), mode $2, owner $3:$4${7:+; the old one kept as $1.bak}"
    else
        place_file "$path" "$2" "$3" "$4" "$5" "$6"
        changed "$1: written, mode $2, owner $3:$4"
    fi
}

note_restart() {
    if ((LAST_CHANGED)); then
        RESTART=1
    fi
}

# --- steps ----------------------------------------------------------------------------------------------

step_apt() {
    local pkgs=(python3-venv) missing=() pkg status
    if ((ON_PI)); then
        # lgpio: gpiozero's pin factory; the only one that drives a Pi 5's GPIO (RP1), fine on a Pi 4.
        pkgs+=(python3-picamera2 python3-lgpio)
    fi
    if [[ -n $ROOT ]]; then
        printf 'apt: skipped with --root; the target needs: %s\n' "${pkgs[*]}"
        return 0
    fi
    if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
        die "apt-get/dpkg-query not found: setup.sh provisions Debian or Raspberry Pi OS"
    fi
    for pkg in "${pkgs[@]}"; do
        # shellcheck disable=SC2016  # ${db:Status-Status} is dpkg-query's format, not a shell expansion
        status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null) || status=""
        if [[ $status == installed ]]; then
            unchanged "apt package $pkg"
        else
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]})); then
        run apt-get update -qq
        run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
        for pkg in "${missing[@]}"; do
            changed "apt package $pkg installed"
        done
    fi
    if ((!PYTHON_OK)) && ((!DRY_RUN)); then
        check_python || die "--python: $PYTHON not found even after installing python3-venv"
        PYTHON_OK=1
    fi
}

EA_UID=""
EA_GID=""

field_of() {  # FILE NAME FIELD -> the field of NAME's line, or nothing
    [[ -f $1 ]] || return 0
    awk -F: -v n="$2" -v f="$3" '$1 == n { print $f; exit }' "$1"
}

declare -A USED_IDS=()

FREE_ID=""

free_id() {  # FREE_ID = a system id (< 1000, from 999 down) no user or group of the staging root has
    local id
    for ((id = 999; id >= 100; id--)); do
        if [[ -z ${USED_IDS[$id]:-} ]]; then
            USED_IDS[$id]=1
            FREE_ID=$id
            return 0
        fi
    done
    die "no free system uid/gid below 1000 in $ROOT/etc/passwd and $ROOT/etc/group"
}

append_line() {  # FILE LINE: create the file (0644) if missing, add the line
    show_cmd append "$2" to "$1"
    if ((DRY_RUN)); then
        return 0
    fi
    if [[ -s $1 ]] && (($(tail -c 1 -- "$1" | wc -l) == 0)); then
        printf '\n' >>"$1" || die "cannot write $1"
    fi
    printf '%s\n' "$2" >>"$1" || die "cannot write $1"
}

add_member() {  # GROUP_FILE GROUP USER: rewrite the group's line with USER added to its members
    local file=$1 tmp
    show_cmd add member "$3" to group "$2" in "$file"
    if ((DRY_RUN)); then
        return 0
    fi
    tmp=$(mktemp -- "$file.XXXXXX") || die "cannot create a temp file beside $file"
    CLEANUP+=("$tmp")
    awk -F: -v OFS=: -v g="$2" -v u="$3" '$1 == g { $4 = ($4 == "" ? u : $4 "," u) } { print }' "$file" >"$tmp" \
        || die "cannot rewrite $file"
    chmod --reference="$file" -- "$tmp" || die "cannot chmod $tmp"
    if ((CAN_CHOWN)); then
        chown --reference="$file" -- "$tmp" || die "cannot chown $tmp"
    fi
    mv -f -- "$tmp" "$file" || die "cannot replace $file"
}

is_member() {  # GROUP_FILE GROUP USER
    local members
    members=$(field_of "$1" "$2" 4)
    [[ ",$members," == *",$3,"* ]]
}

# With --root: the accounts are lines in DIR/etc/passwd and DIR/etc/group, and files are chowned to the
# numeric ids written there (the host does not know the staging user).
step_accounts_staging() {
    local passwd=$ROOT/etc/passwd group=$ROOT/etc/group id g file
    if [[ ! -d $ROOT/etc ]]; then
        run mkdir -p -- "$ROOT/etc"
    fi
    for file in "$passwd" "$group"; do
        if [[ -f $file ]]; then
            while IFS=: read -r _ _ id _; do
                if [[ -n $id ]]; then
                    USED_IDS[$id]=1
                fi
            done <"$file"
        fi
    done
    EA_UID=$(field_of "$passwd" "$SERVICE_USER" 3)
    EA_GID=$(field_of "$group" "$SERVICE_USER" 3)
    local user_gid
    user_gid=$(field_of "$passwd" "$SERVICE_USER" 4)
    if [[ -n $EA_GID ]]; then
        unchanged "group $SERVICE_USER (gid $EA_GID) in $group"
    else
        if [[ -n $user_gid ]]; then
            EA_GID=$user_gid
        else
            free_id
            EA_GID=$FREE_ID
        fi
        USED_IDS[$EA_GID]=1
        append_line "$group" "$SERVICE_USER:x:$EA_GID:"
        changed "group $SERVICE_USER (gid $EA_GID) added to $group"
    fi
    if [[ -n $EA_UID ]]; then
        EA_GID=${user_gid:-$EA_GID}
        unchanged "user $SERVICE_USER (uid $EA_UID) in $passwd"
    else
        EA_UID=$EA_GID
        if [[ -f $passwd && -n $(awk -F: -v id="$EA_UID" '$3 == id { print; exit }' "$passwd") ]]; then
            free_id
            EA_UID=$FREE_ID
        fi
        append_line "$passwd" "$SERVICE_USER:x:$EA_UID:$EA_GID:edge-app door kiosk:$STATE:/usr/sbin/nologin"
        changed "user $SERVICE_USER (uid $EA_UID, gid $EA_GID) added to $passwd"
    fi
    for g in "${SERVICE_GROUPS[@]}"; do
        if [[ -z $(field_of "$group" "$g" 1) ]]; then
            free_id
            id=$FREE_ID
            append_line "$group" "$g:x:$id:$SERVICE_USER"
            changed "group $g (gid $id) added to $group with member $SERVICE_USER"
        elif is_member "$group" "$g" "$SERVICE_USER"; then
            unchanged "$SERVICE_USER is in group $g"
        else
            add_member "$group" "$g" "$SERVICE_USER"
            changed "$SERVICE_USER added to group $g"
        fi
    done
}

step_accounts_system() {
    local g
    for g in "${SERVICE_GROUPS[@]}"; do
        if getent group "$g" >/dev/null; then
            unchanged "group $g"
        else
            run groupadd --system "$g"
            changed "group $g created"
        fi
    done
    if getent passwd "$SERVICE_USER" >/dev/null; then
        unchanged "user $SERVICE_USER"
    else
        run useradd --system --home-dir "$STATE" --no-create-home --shell /usr/sbin/nologin --user-group \
            --comment "edge-app door kiosk" "$SERVICE_USER"
        changed "system user $SERVICE_USER created"
    fi
    local groups_now=""
    groups_now=$(id -nG "$SERVICE_USER" 2>/dev/null) || groups_now=""
    for g in "${SERVICE_GROUPS[@]}"; do
        if [[ " $groups_now " == *" $g "* ]]; then
            unchanged "$SERVICE_USER is in group $g"
        else
            run usermod -aG "$g" "$SERVICE_USER"
            changed "$SERVICE_USER added to group $g"
        fi
    done
    # Under --dry-run on a fresh system the user does not exist yet: use its name (every owner check then fails).
    EA_UID=$(id -u "$SERVICE_USER" 2>/dev/null) || EA_UID=$SERVICE_USER
    EA_GID=$(getent group "$SERVICE_USER" | cut -d: -f3) || EA_GID=""
    EA_GID=${EA_GID:-$SERVICE_USER}
}

package_version() {  # the version pip would install, or nothing when it cannot be told beforehand
    local base
    if [[ -d $PACKAGE ]]; then
        if [[ -f $PACKAGE/pyproject.toml ]] && ((PYTHON_OK)); then
            pyq "$PYTHON" -c 'import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(tomllib.load(f).get("project", {}).get("version", ""))' "$PACKAGE/pyproject.toml" || true
        fi
    elif [[ $PACKAGE == *.whl ]]; then
        base=$(basename -- "$PACKAGE")
        base=${base#*-}
        printf '%s\n' "${base%%-*}"
    elif [[ $PACKAGE == *==* ]]; then
        printf '%s\n' "${PACKAGE##*==}"
    fi
}

installed_version() {  # edge-app's version in the venv's own site-packages (not the system's), or nothing
    local py=$ROOT$VENV/bin/python
    [[ -x $py ]] || return 0
    pyq "$py" -c 'import importlib.metadata as m, sysconfig
found = [d.version for d in m.distributions(path=[sysconfig.get_path("purelib")])
         if (d.metadata["Name"] or "").lower().replace("_", "-") == "edge-app"]
print(found[0] if found else "")' || true
}

# The venv sees apt's packages (--system-site-packages: python3-picamera2 exists only there). Their C parts
# are built against apt's numpy, so the venv's numpy keeps its major version: numpy<2 on bookworm (apt 1.24),
# numpy 2 on trixie. OpenCV 4.12 and later need numpy 2, hence its cap. docs/arm64.md has the test.
apt_numpy() {  # PYTHON -> version of apt's python3-numpy, or nothing
    pyq "$1" -c 'import importlib.metadata as m, sys
print(next((d.version for d in m.distributions(path=[sys.argv[1]])
            if (d.metadata["Name"] or "").lower() == "numpy"), ""))' "$APT_PYTHON_DIR" || true
}

numpy_pins() {  # PYTHON -> extra pip requirements that keep numpy at apt's major version
    local v
    v=$(apt_numpy "$1")
    if [[ $v == 1.* ]]; then
        printf '%s %s' 'numpy<2' 'opencv-python-headless<4.12'
    fi
}

check_numpy() {  # PYTHON: the venv's numpy (if any) has apt's major version
    local apt venv
    apt=$(apt_numpy "$1")
    venv=$(pyq "$1" -c 'import importlib.metadata as m; print(m.version("numpy"))' 2>/dev/null) || venv=""
    if [[ -n $apt && -n $venv && ${apt%%.*} != "${venv%%.*}" ]]; then
        die "numpy $venv in $VENV but apt's python3-numpy is $apt: apt's python3-picamera2 would not import; pip install 'numpy<${venv%%.*}' into the venv"
    fi
    if [[ -n $venv && -n $apt ]]; then
        printf 'ok: numpy %s in the venv, apt has %s: same major version\n' "$venv" "$apt"
    elif [[ -n $venv ]]; then
        printf 'ok: numpy %s in the venv\n' "$venv"
    fi
}

step_venv() {
    ensure_dir "$PREFIX" 755 0 0
    local venv=$ROOT$VENV
    if [[ -x $venv/bin/python ]]; then
        unchanged "$VENV: virtual environment"
    else
        run "$PYTHON" -m venv --system-site-packages "$venv"
        changed "$VENV: virtual environment created (--system-site-packages)"
    fi
    local want have
    want=$(package_version)
    have=$(installed_version)
    if [[ -n $have && (-z $want || $have == "$want") ]]; then
        unchanged "edge-app $have installed in $VENV"
    else
        local pip=("$venv/bin/python" -m pip install --disable-pip-version-check --no-input --quiet)
        if ((PIP_NO_DEPS)); then
            pip+=(--no-deps)
        else
            local pins
            read -ra pins <<<"$(numpy_pins "$PYTHON")"
            pip+=("${pins[@]}")
        fi
        run "${pip[@]}" "$PACKAGE"
        changed "edge-app ${want:-from $PACKAGE} installed in $VENV (was: ${have:-not installed})"
        RESTART=1
    fi
    if ((!DRY_RUN)); then
        have=$(installed_version)
        [[ -n $have ]] || die "pip finished but edge-app is not installed in $VENV"
        check_numpy "$venv/bin/python"
    fi
    # The models ship inside the package (edge_app/models_tflite); check that the installed one has them.
    if [[ -n $have ]]; then
        local models
        models=$(pyq "$venv/bin/python" -c 'import importlib.metadata as m, sysconfig
d = [d for d in m.distributions(path=[sysconfig.get_path("purelib")])
     if (d.metadata["Name"] or "").lower().replace("_", "-") == "edge-app"]
print(sum(1 for f in (d[0].files or []) if "models_tflite/" in str(f) and str(f).endswith(".tflite")) if d else 0)') \
            || models=0
        if ((models == 0)); then
            die "the installed edge-app carries no models (edge_app/models_tflite/*.tflite): build them first (scripts/build_models.py)"
        fi
        printf 'ok: %d models bundled with the installed package\n' "$models"
    fi
}

toml_str() {  # a TOML basic string (values are checked to hold no control characters)
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

config_text() {
    local c="" keys
    c+="# $CONFIG: the settings of edge-app on this kiosk, written by provisioning/setup.sh."$'\n'
    c+="# setup.sh owns this file: a rerun with other flags replaces it (the old one is kept as config.toml.bak)."$'\n'
    c+="# Every section and key: provisioning/config.example.toml and the README (\"Configuration\")."$'\n'
    c+=$'\n[device]\n'
    c+="id = $(toml_str "$DEVICE_ID")"$'\n'
    if [[ -n $TIMEZONE ]]; then
        c+="timezone = $(toml_str "$TIMEZONE")"$'\n'
    fi
    c+=$'\n[gallery]\n'
    c+="path = $(toml_str "$GALLERY")"$'\n'
    c+=$'\n[camera]\n'
    c+="source = $(toml_str "$CAMERA")"$'\n'
    c+=$'\n[door]\n'
    c+="relay_pin = ${RELAY_PIN:-$DEFAULT_RELAY_PIN}"$'\n'
    c+="lock_type = $(toml_str "$LOCK_TYPE")"$'\n'
    if [[ -n $CONTACT_PIN ]]; then
        c+="contact_pin = $CONTACT_PIN"$'\n'
    fi
    if [[ -n $EXIT_PIN ]]; then
        c+="exit_button_pin = $EXIT_PIN"$'\n'
    fi
    c+=$'\n[mqtt]\n'
    if [[ -z $BROKER ]]; then
        c+=$'enabled = false\n'
        printf '%s' "$c"
        return 0
    fi
    c+=$'enabled = true\n'
    c+="host = $(toml_str "$BROKER_HOST")"$'\n'
    c+="port = $BROKER_PORT"$'\n'
    if ((BROKER_TLS)); then
        c+=$'tls = true\n'
    else
        c+=$'tls = false\n'
    fi
    if [[ -n $CA ]]; then
        c+="ca_file = $(toml_str "$TLS_DIR/ca.pem")"$'\n'
    fi
    if [[ -n $CERT ]]; then
        c+="cert_file = $(toml_str "$TLS_DIR/client.pem")"$'\n'
        c+="key_file = $(toml_str "$TLS_DIR/client.key")"$'\n'
    fi
    if [[ -n $MQTT_USER ]]; then
        c+="username = $(toml_str "$MQTT_USER")"$'\n'
    fi
    if [[ -n $MQTT_PASSWORD_FILE ]]; then
        c+="password_file = $(toml_str "$PASSWORD_TARGET")"$'\n'
    fi
    if [[ -n $FLEET_GROUPS ]]; then
        c+="groups = $(toml_str "$FLEET_GROUPS")"$'\n'
    fi
    if ((${#ADMIN_KEYS[@]})); then
        keys=$(
            IFS=,
            printf '%s' "${ADMIN_KEYS[*]}"
        )
        c+="admin_keys = $(toml_str "$keys")"$'\n'
    fi
    printf '%s' "$c"
}

step_config() {
    ensure_dir "$ETC" 750 0 "$EA_GID"
    if [[ -n $CA || -n $CERT ]]; then
        ensure_dir "$TLS_DIR" 750 0 "$EA_GID"
    fi
    if [[ -n $CA ]]; then
        ensure_file "$TLS_DIR/ca.pem" 640 0 "$EA_GID" file "$CA"
        note_restart
    fi
    if [[ -n $CERT ]]; then
        ensure_file "$TLS_DIR/client.pem" 640 0 "$EA_GID" file "$CERT"
        note_restart
        ensure_file "$TLS_DIR/client.key" 640 0 "$EA_GID" file "$KEY"
        note_restart
    fi
    if [[ -n $MQTT_PASSWORD_FILE ]]; then
        ensure_file "$PASSWORD_TARGET" 640 0 "$EA_GID" file "$MQTT_PASSWORD_FILE"
        note_restart
    fi
    local text
    text=$(config_text)
    ensure_file "$CONFIG" 640 0 "$EA_GID" text "$text"$'\n' backup
    note_restart
}

step_state() {
    # The directory itself only (its parent is root's): what is inside (the gallery, snapshots/) is the daemon's.
    # The service user can replace anything in there, so setup.sh running as root never sets owners or modes
    # inside it; systemd-tmpfiles, which does not follow links, creates snapshots/ (systemd/edge-app.tmpfiles.conf).
    ensure_dir "$STATE" 750 "$EA_UID" "$EA_GID"
}

UNIT_CHANGED=0
TMPFILES_CHANGED=0

step_systemd_files() {
    local unit
    # The unit describes the target system: ExecStart (and ExecStopPost, which de-energises the relay after any
    # stop) is the venv's edge-app under /opt, never under --root.
    unit=$(sed -e "s|^ExecStart=.*|ExecStart=$VENV/bin/edge-app run --config $CONFIG|" \
               -e "s|^ExecStopPost=.*|ExecStopPost=$VENV/bin/edge-app door-off --config $CONFIG|" -- "$UNIT_SOURCE")
    ensure_file "$UNIT_TARGET" 644 0 0 text "$unit"$'\n'
    UNIT_CHANGED=$LAST_CHANGED
    note_restart
    ensure_file "$TMPFILES_TARGET" 644 0 0 file "$TMPFILES_SOURCE"
    TMPFILES_CHANGED=$LAST_CHANGED
}

step_service() {
    if [[ -n $ROOT ]]; then
        printf 'systemd: skipped with --root; on the target: systemctl daemon-reload && systemd-tmpfiles --create %s && systemctl enable --now %s\n' \
            "$TMPFILES_TARGET" "$SERVICE"
        return 0
    fi
    if ((UNIT_CHANGED || TMPFILES_CHANGED)); then
        run systemctl daemon-reload
        changed "systemd: unit files reloaded"
    fi
    if ((TMPFILES_CHANGED)); then
        run systemd-tmpfiles --create "$TMPFILES_TARGET"
        changed "systemd-tmpfiles: $TMPFILES_TARGET applied"
    fi
    if systemctl is-enabled --quiet "$SERVICE" 2>/dev/null; then
        unchanged "$SERVICE enabled"
    else
        run systemctl enable "$SERVICE"
        changed "$SERVICE enabled"
    fi
    if ((NO_START)); then
        if ((RESTART)); then
            printf 'systemd: not restarting %s (--no-start): restart it to apply the new settings\n' "$SERVICE"
        else
            printf 'systemd: not starting %s (--no-start)\n' "$SERVICE"
        fi
        return 0
    fi
    if systemctl is-active --quiet "$SERVICE" 2>/dev/null; then
        if ((RESTART)); then
            run systemctl restart "$SERVICE"
            changed "$SERVICE restarted (its settings or software changed)"
        else
            unchanged "$SERVICE running"
        fi
    else
        run systemctl start "$SERVICE"
        changed "$SERVICE started"
    fi
}

DOCTOR_RC=0

step_doctor() {
    local cmd=("$VENV/bin/edge-app" doctor --config "$CONFIG")
    if [[ -n $ROOT ]]; then
        printf 'doctor: skipped with --root; on the target run: %s\n' "${cmd[*]}"
        return 0
    fi
    show_cmd "${cmd[@]}"
    if ((DRY_RUN)); then
        return 0
    fi
    if "${cmd[@]}"; then
        printf 'doctor: healthy\n'
    else
        DOCTOR_RC=$?
        printf '%s: error: edge-app doctor found a problem (exit %d, above)\n' "$PROG" "$DOCTOR_RC" >&2
    fi
}

main() {
    parse_args "$@"
    validate
    if ((EUID == 0)); then
        CAN_CHOWN=1
    fi
    local note=""
    if ((DRY_RUN)); then
        note=" (dry run: nothing is changed)"
    fi
    if [[ -n $ROOT ]]; then
        printf 'setup: device %s, staging root %s, no apt-get, systemctl or doctor%s\n' "$DEVICE_ID" "$ROOT" "$note"
        if ((!CAN_CHOWN)); then
            printf 'setup: not root: file owners are left as they are\n'
        fi
    else
        printf 'setup: device %s on this machine%s\n' "$DEVICE_ID" "$note"
    fi
    step_apt
    if [[ -n $ROOT ]]; then
        step_accounts_staging
    else
        step_accounts_system
    fi
    step_venv
    step_config
    step_state
    step_systemd_files
    step_service
    step_doctor
    printf 'setup: %d changed, %d unchanged%s\n' "$CHANGED" "$UNCHANGED" "${note/is changed/was done}"
    if ((DOCTOR_RC)); then
        exit 1
    fi
}

main "$@"
