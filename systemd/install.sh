#!/usr/bin/env bash
# Install, upgrade, roll back or remove the vision appliance as a systemd service.
#
#   sudo systemd/install.sh [install]        install or upgrade to this tree's version (idempotent)
#   sudo systemd/install.sh rollback         switch back to the previous release
#   sudo systemd/install.sh uninstall        remove the program; keep config and state
#   sudo systemd/install.sh uninstall --purge   ...and config, state, cache and the user
#   systemd/install.sh status                what is installed
#
# Layout (docs/install.md): /opt/appliance/releases/<version>/{venv,models,share} with the
# `current` and `previous` symlinks, /etc/appliance/appliance.toml (never overwritten),
# /var/lib/appliance (state, never touched), /etc/systemd/system/appliance.service.
# An upgrade that does not come up healthy is rolled back to the release that ran before.
set -euo pipefail

usage() {
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    cat <<'EOF'
Options:
  --prefix DIR        stage into DIR (an image root): no systemctl, no user creation
  --no-start          do not enable, start or restart the unit
  --version NAME      release name (default: pyproject version + git commit)
  --source DIR        source tree (default: the checkout holding this script)
  --models DIR        model packages to ship (default: SOURCE/models)
  --python PY         interpreter for the virtualenv (default: python3, >= 3.11)
  --wheelhouse DIR    install dependencies from wheels in DIR only (no network)
  --reuse-site-packages DIR
                      do not install dependencies: use those already in DIR (a site-packages
                      folder of the same Python); for CI and images that provide them
  --accelerator KIND  none, nvidia or intel-gpu: allow the GPU's device nodes (kept on
                      upgrade when not given)
  --health-cmd CMD    extra check after switching (sh -c, non-zero = unhealthy -> roll back)
  --settle SECONDS    how long the service must stay up after READY (default 20)
  --keep N            releases to keep (default 3; current and previous always)
  --purge             with uninstall: also remove config, state, cache and the user
EOF
}

log() { printf 'appliance-install: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

ACTION=install
PREFIX=""
NO_START=0
VERSION=""
SOURCE=""
MODELS=""
PYTHON=python3
WHEELHOUSE=""
REUSE_SITE=""
ACCELERATOR=""  # empty: keep the drop-in already installed
HEALTH_CMD=""
SETTLE=20
KEEP=3
PURGE=0

case "${1:-}" in
    install|upgrade|rollback|uninstall|status) ACTION=$1; shift ;;
    -h|--help) usage; exit 0 ;;
esac
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) PREFIX=$(realpath -m "$2"); NO_START=1; shift 2 ;;
        --no-start) NO_START=1; shift ;;
        --version) VERSION=$2; shift 2 ;;
        --source) SOURCE=$(realpath "$2"); shift 2 ;;
        --models) MODELS=$(realpath "$2"); shift 2 ;;
        --python) PYTHON=$2; shift 2 ;;
        --wheelhouse) WHEELHOUSE=$(realpath "$2"); shift 2 ;;
        --reuse-site-packages) REUSE_SITE=$(realpath "$2"); shift 2 ;;
        --accelerator) ACCELERATOR=$2; shift 2 ;;
        --health-cmd) HEALTH_CMD=$2; shift 2 ;;
        --settle) SETTLE=$2; shift 2 ;;
        --keep) KEEP=$2; shift 2 ;;
        --purge) PURGE=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

# Paths on the target system, and where they are written (under PREFIX when staging).
UNIT=appliance.service
OPT=$PREFIX/opt/appliance
ETC=$PREFIX/etc/appliance
UNIT_DIR=$PREFIX/etc/systemd/system
DROPIN_DIR=$UNIT_DIR/$UNIT.d
BIN=$PREFIX/usr/local/bin
SYSUSERS=$PREFIX/etc/sysusers.d
STATE=$PREFIX/var/lib/appliance
CACHE=$PREFIX/var/cache/appliance
SERVICE_USER=appliance

case "$ACCELERATOR" in ""|none|nvidia|intel-gpu) ;; *) die "--accelerator: none, nvidia or intel-gpu" ;; esac
[[ "$KEEP" =~ ^[0-9]+$ ]] || die "--keep: a number"
[[ "$SETTLE" =~ ^[0-9]+$ ]] || die "--settle: whole seconds"
if [ -z "$PREFIX" ] && [ "$ACTION" != status ] && [ "$(id -u)" != 0 ]; then
    die "run as root (or stage into a directory with --prefix)"
fi
systemd_on() { [ "$NO_START" = 0 ] && [ -z "$PREFIX" ]; }

# --- release bookkeeping -------------------------------------------------------------------

release_of() {  # the release name a symlink points at, or nothing
    local link=$OPT/$1
    if [ -L "$link" ]; then basename "$(readlink "$link")"; fi
}

switch_link() {  # switch_link NAME RELEASE: atomic (rename over the old link)
    ln -sfn "releases/$2" "$OPT/.$1.new"
    mv -Tf "$OPT/.$1.new" "$OPT/$1"
}

install_unit_from() {  # the unit (and accelerator drop-in) shipped with a release
    local share=$OPT/releases/$1/share
    mkdir -p "$UNIT_DIR"
    # ExecStart names the release itself, not `current`: a running service then never imports
    # code (Python imports lazily) from a release that was switched in under it.
    sed "s#/opt/appliance/current/venv/#/opt/appliance/releases/$1/venv/#" "$share/systemd/$UNIT" \
        > "$UNIT_DIR/.$UNIT.new"
    chmod 0644 "$UNIT_DIR/.$UNIT.new"
    mv -f "$UNIT_DIR/.$UNIT.new" "$UNIT_DIR/$UNIT"
    if [ -n "$ACCELERATOR" ]; then
        rm -f "$DROPIN_DIR/accelerator.conf"
        if [ "$ACCELERATOR" != none ]; then
            mkdir -p "$DROPIN_DIR"
            install -m 0644 "$share/systemd/accelerators/$ACCELERATOR.conf" "$DROPIN_DIR/accelerator.conf"
        fi
        rmdir "$DROPIN_DIR" 2>/dev/null || true
    fi
    if systemd_on; then systemctl daemon-reload; fi
}

prune_releases() {
    local current previous name kept=0
    current=$(release_of current)
    previous=$(release_of previous)
    # Newest first; current and previous are always kept and count towards KEEP.
    while IFS= read -r name; do
        if [ "$name" = "$current" ] || [ "$name" = "$previous" ]; then
            kept=$((kept + 1)); continue
        fi
        if [ "$kept" -lt "$KEEP" ] && [ -e "$OPT/releases/$name/.complete" ]; then
            kept=$((kept + 1)); continue
        fi
        log "removing old release $name"
        rm -rf "${OPT:?}/releases/$name"
    done < <(ls -1t "$OPT/releases" 2>/dev/null)
}

# --- building a release --------------------------------------------------------------------

project_version() {
    sed -n 's/^version *= *"\(.*\)"/\1/p' "$SOURCE/pyproject.toml" | head -n 1
}

default_version() {
    local version sha=""
    version=$(project_version)
    [ -n "$version" ] || die "no version in $SOURCE/pyproject.toml (use --version)"
    if command -v git >/dev/null && git -C "$SOURCE" rev-parse --git-dir >/dev/null 2>&1; then
        sha=$(git -C "$SOURCE" rev-parse --short HEAD)
        version="$version+g$sha"
        # A tree with uncommitted changes is a new release every time, never mistaken for HEAD.
        git -C "$SOURCE" diff --quiet HEAD -- 2>/dev/null || version="$version.dirty$(date +%s)"
    fi
    printf '%s' "$version"
}

build_release() {  # build_release DIR: virtualenv with the package, models, share/
    local rel=$1 py pyver
    py=$(command -v "$PYTHON") || die "no $PYTHON (install Debian's python3 and python3-venv)"
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PYTHON is older than 3.11"
    log "building release $(basename "$rel") in $rel"
    rm -rf "$rel"
    mkdir -p "$rel/share"
    local venv_args=()
    # Reusing another environment's packages: its pip and setuptools build the package too.
    [ -n "$REUSE_SITE" ] && venv_args=(--without-pip)
    "$py" -m venv "${venv_args[@]}" "$rel/venv" \
        || die "cannot create a virtualenv (Debian: apt-get install python3-venv)"
    pyver=$("$rel/venv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    local pip=("$rel/venv/bin/python" -m pip --disable-pip-version-check --no-input --quiet)
    if [ -n "$WHEELHOUSE" ]; then
        # Everything from wheels built elsewhere (docs/install.md): nothing is built on the box.
        "${pip[@]}" install --no-index --find-links "$WHEELHOUSE" "vision-appliance==$(project_version)"
    else
        # Build from a clean copy so that nothing is written into the source tree.
        WORK=$(mktemp -d)
        cp -a "$SOURCE/pyproject.toml" "$SOURCE/README.md" "$SOURCE/appliance" "$SOURCE/hardware" \
            "$SOURCE/pipelines" "$WORK/"
        if [ -n "$REUSE_SITE" ]; then
            [ -d "$REUSE_SITE" ] || die "--reuse-site-packages: $REUSE_SITE is not a directory"
            echo "$REUSE_SITE" > "$rel/venv/lib/python$pyver/site-packages/appliance-reused-deps.pth"
            "${pip[@]}" install --no-deps --no-build-isolation --no-index --force-reinstall "$WORK"
        else
            "${pip[@]}" install "$WORK"
        fi
        rm -rf "$WORK"
    fi
    mkdir -p "$rel/models"
    if [ -d "$MODELS" ]; then
        cp -a "$MODELS/." "$rel/models/"
    else
        log "warning: no model packages at $MODELS; the release ships none (set models_dir)"
    fi
    cp -a "$SOURCE/systemd" "$rel/share/systemd"
    mkdir -p "$rel/share/docs"
    [ -f "$SOURCE/docs/install.md" ] && cp "$SOURCE/docs/install.md" "$rel/share/docs/"
    basename "$rel" > "$rel/VERSION"
    # The installed release must import and read its own example config before it counts.
    (cd / && "$rel/venv/bin/python" -m appliance check-config "$rel/share/systemd/appliance.toml" >/dev/null) \
        || die "the new release fails its self-check (see above)"
    touch "$rel/.complete"
}

# --- configuration, user, wrapper ----------------------------------------------------------

install_config() {
    local share=$1/share/systemd
    mkdir -p "$ETC"
    install -m 0644 "$share/appliance.toml" "$ETC/appliance.toml.example"
    if [ ! -e "$ETC/appliance.toml" ]; then
        install -m 0640 "$share/appliance.toml" "$ETC/appliance.toml"
        [ -z "$PREFIX" ] && chgrp "$SERVICE_USER" "$ETC/appliance.toml"
        log "installed the example configuration as $ETC/appliance.toml: edit it (docs/install.md)"
    fi
}

install_user() {
    mkdir -p "$SYSUSERS"
    install -m 0644 "$1/share/systemd/appliance.sysusers" "$SYSUSERS/appliance.conf"
    [ -n "$PREFIX" ] && return 0  # systemd-sysusers creates it on the image's first boot
    if id "$SERVICE_USER" >/dev/null 2>&1; then return 0; fi
    if command -v systemd-sysusers >/dev/null; then
        systemd-sysusers "$SYSUSERS/appliance.conf"
    else
        useradd --system --user-group --home-dir /var/lib/appliance --shell /usr/sbin/nologin \
            --comment "Vision appliance" "$SERVICE_USER"
        if getent group video >/dev/null; then usermod -a -G video "$SERVICE_USER"; fi
    fi
}

install_wrapper() {
    mkdir -p "$BIN"
    cat > "$BIN/appliance.new" <<'EOF'
#!/bin/sh
# Installed by the appliance installer: the `appliance` command of the current release, run as
# the service user with the service's configuration and state (users, tokens, check-config).
export APPLIANCE_CONFIG="${APPLIANCE_CONFIG:-/etc/appliance/appliance.toml}"
export APPLIANCE_STATE_DIR="${APPLIANCE_STATE_DIR:-/var/lib/appliance}"
cd / || exit 1
if [ "$(id -u)" = 0 ]; then
    exec runuser -u appliance -- /opt/appliance/current/venv/bin/python -m appliance "$@"
fi
exec /opt/appliance/current/venv/bin/python -m appliance "$@"
EOF
    chmod 0755 "$BIN/appliance.new"
    mv -f "$BIN/appliance.new" "$BIN/appliance"
}

# --- health --------------------------------------------------------------------------------

web_url() {  # the console's health URL from the installed configuration, or nothing
    (cd / && APPLIANCE_CONFIG="$ETC/appliance.toml" "$OPT/current/venv/bin/python" -c '
from appliance.config import load_settings
s = load_settings()
if s.web.enabled and s.web.port:
    host = "127.0.0.1" if s.web.host in ("0.0.0.0", "::", "") else s.web.host
    scheme = "https" if s.web.tls_cert else "http"
    print(f"{scheme}://{host}:{s.web.port}/api/health")
' 2>/dev/null) || true
}

healthy() {  # is the just-switched release up and staying up?
    if systemd_on; then
        local restarts url
        # Type=notify: restart returns once READY=1 came (models and store up) or start failed.
        systemctl restart "$UNIT" || { log "the service did not start"; return 1; }
        restarts=$(systemctl show -p NRestarts --value "$UNIT")
        sleep "$SETTLE"
        systemctl is-active --quiet "$UNIT" || { log "the service stopped after start"; return 1; }
        [ "$(systemctl show -p NRestarts --value "$UNIT")" = "$restarts" ] \
            || { log "the service restarted within $SETTLE s"; return 1; }
        url=$(web_url)
        if [ -n "$url" ] && command -v curl >/dev/null; then
            curl -fsS -k -o /dev/null --max-time 10 "$url" || { log "$url is not healthy"; return 1; }
        fi
    fi
    if [ -n "$HEALTH_CMD" ]; then
        APPLIANCE_RELEASE="$OPT/current" APPLIANCE_CONFIG="$ETC/appliance.toml" \
            APPLIANCE_STATE_DIR="$STATE" sh -c "$HEALTH_CMD" || { log "--health-cmd failed"; return 1; }
    fi
    return 0
}

# --- actions -------------------------------------------------------------------------------

do_install() {
    SOURCE=${SOURCE:-$(realpath "$(dirname "$0")/..")}
    MODELS=${MODELS:-$SOURCE/models}
    [ -f "$SOURCE/pyproject.toml" ] || die "$SOURCE is not the appliance source tree (--source)"
    VERSION=${VERSION:-$(default_version)}
    [[ "$VERSION" =~ ^[A-Za-z0-9][A-Za-z0-9._+-]*$ ]] || die "bad release name: $VERSION"
    local rel=$OPT/releases/$VERSION old old_previous
    mkdir -p "$OPT/releases"
    if [ -e "$rel/.complete" ]; then
        log "release $VERSION is already built"
    else
        build_release "$rel"
    fi
    install_user "$rel"
    install_config "$rel"
    install_wrapper
    old=$(release_of current)
    old_previous=$(release_of previous)
    if [ "$old" = "$VERSION" ]; then
        install_unit_from "$VERSION"
        if systemd_on; then
            systemctl enable --quiet "$UNIT"
            systemctl is-active --quiet "$UNIT" || systemctl start "$UNIT"
        fi
        log "release $VERSION is installed and current; nothing to switch"
        return 0
    fi
    [ -n "$old" ] && switch_link previous "$old"
    switch_link current "$VERSION"
    install_unit_from "$VERSION"
    if systemd_on; then systemctl enable --quiet "$UNIT"; fi
    if healthy; then
        log "release $VERSION is current${old:+ (previous: $old)}"
        prune_releases
        return 0
    fi
    if [ -z "$old" ]; then
        die "release $VERSION is not healthy and there is no previous release (journalctl -u appliance)"
    fi
    log "release $VERSION is not healthy: rolling back to $old (journalctl -u appliance says why)"
    switch_link current "$old"
    if [ -n "$old_previous" ]; then switch_link previous "$old_previous"; else rm -f "$OPT/previous"; fi
    install_unit_from "$old"
    if systemd_on; then systemctl restart "$UNIT" || log "warning: $old did not start either"; fi
    rm -rf "${rel:?}"
    die "upgrade to $VERSION failed; $old is running again"
}

do_rollback() {
    local current previous
    current=$(release_of current)
    previous=$(release_of previous)
    if [ -z "$previous" ] || [ ! -e "$OPT/releases/$previous/.complete" ]; then
        die "no previous release to roll back to"
    fi
    switch_link current "$previous"
    switch_link previous "$current"
    install_unit_from "$previous"
    if systemd_on; then systemctl restart "$UNIT"; fi
    log "rolled back from $current to $previous (\`install.sh rollback\` again goes forward)"
}

do_uninstall() {
    if systemd_on && systemctl cat "$UNIT" >/dev/null 2>&1; then
        systemctl disable --now --quiet "$UNIT" || true
    fi
    rm -f "$UNIT_DIR/$UNIT" "$DROPIN_DIR/accelerator.conf" "$BIN/appliance"
    rmdir "$DROPIN_DIR" 2>/dev/null || true
    if systemd_on; then systemctl daemon-reload; fi
    rm -rf "${OPT:?}"
    if [ "$PURGE" = 1 ]; then
        rm -rf "${ETC:?}" "${STATE:?}" "$PREFIX/var/lib/private/appliance" "${CACHE:?}"
        rm -f "$SYSUSERS/appliance.conf"
        if [ -z "$PREFIX" ] && id "$SERVICE_USER" >/dev/null 2>&1; then userdel "$SERVICE_USER" || true; fi
        log "removed the appliance, its configuration, state and user"
    else
        log "removed the appliance; kept $ETC and $STATE (uninstall --purge removes them)"
    fi
}

do_status() {
    local name
    echo "current:  $(release_of current)"
    echo "previous: $(release_of previous)"
    echo "releases:"
    while IFS= read -r name; do
        if [ -e "$OPT/releases/$name/.complete" ]; then echo "  $name"; else echo "  $name (incomplete)"; fi
    done < <(ls -1t "$OPT/releases" 2>/dev/null)
    if systemd_on; then systemctl --no-pager status "$UNIT" | head -n 5 || true; fi
}

WORK=""
trap 'rm -rf "$WORK"' EXIT
if [ "$ACTION" != status ]; then
    mkdir -p "$OPT"
    exec 9>"$OPT/.lock"
    flock -n 9 || die "another install.sh is running"
fi
case "$ACTION" in
    install|upgrade) do_install ;;
    rollback) do_rollback ;;
    uninstall) do_uninstall ;;
    status) do_status ;;
esac
