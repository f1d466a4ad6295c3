#!/usr/bin/env bash
# Installs (as root, on Debian) what the nasfleet tests and demo need, and
# makes sure the zfs-fuse daemon answers. Idempotent: a second run installs
# nothing and leaves a running daemon alone. Exits non-zero if anything is
# still missing afterwards.
set -euo pipefail

# Debian packages, and a command each must provide (checked afterwards).
PACKAGES=(
    zfs-fuse        # zfs-fuse, zpool, zfs: real ZFS through FUSE
    openssh-server  # sshd: one per test "host"
    openssh-client  # ssh, ssh-keygen
    rsync           # rsync tasks, and the rsync daemon in tests
    attr            # getfattr, setfattr: the rsync xattr tests
    procps          # pgrep, used by the harness
    iproute2        # ss, for diagnosing listeners
    coreutils       # truncate, timeout
    ca-certificates # apt over https mirrors
    chromium        # the web console's tests drive a real headless browser
    chromium-driver # chromedriver, the WebDriver server the tests talk to
    fonts-liberation # readable text in the screenshots (only recommended by chromium)
    prometheus      # promtool: the metrics and the example alerting rules are checked with it
    python3-aiosmtpd # a real SMTP server that receives the notification tests' mail
    curl            # the metrics test scrapes /metrics over mutual TLS with it
)
COMMANDS=(zfs-fuse zpool zfs sshd ssh ssh-keygen rsync getfattr setfattr pgrep ss truncate timeout chromium chromedriver promtool curl)

log() { printf '[install-deps] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts zfs-fuse)"
command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian only"

# zpool and sshd live in /usr/sbin, which a non-login PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

missing=()
for pkg in "${PACKAGES[@]}"; do
    # Only "install ok installed" counts; half-configured packages are missing.
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed'; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    # Keep package scripts from starting services (a system-wide sshd on
    # port 22, zfs-fuse through an init script): the harness starts what it
    # needs itself. Only add the policy file if the image has none.
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
else
    log "packages already installed"
fi

for cmd in "${COMMANDS[@]}"; do
    command -v "$cmd" >/dev/null || die "command '$cmd' is still missing after installing packages"
done

# Debian's python3, which python3-aiosmtpd installs for (another python3 may
# come first on PATH).
/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null ||
    die "python3-aiosmtpd is installed but /usr/bin/python3 cannot import aiosmtpd"

# sshd refuses to start without its privilege-separation dir.
mkdir -p /run/sshd
chmod 755 /run/sshd

[[ -e /dev/fuse ]] || modprobe fuse 2>/dev/null || true
[[ -e /dev/fuse ]] || die "/dev/fuse is missing: zfs-fuse cannot run on this machine"

if pgrep -x zfs-fuse >/dev/null; then
    log "zfs-fuse already running"
else
    log "starting zfs-fuse"
    # It forks into the background. Its output goes to a file: a daemon that
    # inherits our stdout would hold a CI log pipe open forever. A failure
    # here is judged by `zpool list` below.
    zfs-fuse </dev/null >>/var/log/nasfleet-zfs-fuse.log 2>&1 ||
        log "zfs-fuse exited with $? (see /var/log/nasfleet-zfs-fuse.log)"
fi

# Bounded wait: 30 s for the daemon to answer.
for _ in $(seq 1 60); do
    if zpool list >/dev/null 2>&1; then
        log "zfs-fuse answers; pools: $(zpool list -H -o name | tr '\n' ' ')"
        exit 0
    fi
    sleep 0.5
done
die "zfs-fuse does not answer 'zpool list' after 30 s"
