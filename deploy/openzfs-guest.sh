#!/usr/bin/env bash
# The OpenZFS guest tier: a Debian bookworm virtual machine with the real
# OpenZFS kernel module, in which the e2e tests run against kernel ZFS (the
# host's kernel cannot load modules; its tests run on zfs-fuse).
#
#   deploy/openzfs-guest.sh deps            # host packages: qemu-system-x86, mmdebstrap
#   deploy/openzfs-guest.sh build           # build the guest image once (cached; prints its dir)
#   deploy/openzfs-guest.sh run -- CMD...   # boot it, run CMD inside, power off; exits with CMD's status
#   deploy/openzfs-guest.sh test [ARGS...]  # build the binaries and the e2e tests on the host, run
#                                           # them in the guest (ARGS go to the test executable,
#                                           # e.g. a test name; --test-threads=1 is added)
#   deploy/openzfs-guest.sh bench [MIB]     # deploy/bench-replication.sh in the guest (release
#                                           # binaries built on the host; default 256 MiB)
#   deploy/openzfs-guest.sh bench-streams MODE [ARGS]  # deploy/bench-streams.sh in the guest
#   deploy/openzfs-guest.sh info            # which image `run` would boot
#
# Environment:
#   NASFLEET_OPENZFS=2.3|2.1   OpenZFS to build and boot (default 2.3: zfs-dkms from
#                              bookworm-backports on the backports kernel; 2.1: 2.1.11 from
#                              bookworm contrib on bookworm's kernel)
#   NASFLEET_GUEST_DIR=DIR     image cache, outside the checkout (default /var/tmp/nasfleet-openzfs-guest)
#   NASFLEET_GUEST_TIMEOUT=S   `run` kills the guest after S seconds (default 3600)
#   NASFLEET_GUEST_MEM, NASFLEET_GUEST_CPUS   guest size (default 4G, 2)
#   NASFLEET_GUEST_SHARE=D1:D2 host dirs shared read-only, each at its own path in the
#                              guest (default: this checkout, and CARGO_TARGET_DIR if elsewhere)
#   NASFLEET_GUEST_TEST=NAME   `test` runs this test target of nasfleet-tests (default e2e;
#                              also harness_smoke)
#   NASFLEET_GUEST_PROFILE=P   `test` builds with cargo profile release (default) or debug
#
# How `run` works: QEMU boots the cached image with software emulation (TCG:
# /dev/kvm on these machines is nested PVM and a stock kernel dies under it),
# no network at all (-nic none) and a throwaway disk overlay (-snapshot). The
# kernel starts deploy/openzfs-guest/init as PID 1 instead of systemd; it
# mounts the 9p shares, loads zfs, runs CMD from the checkout's path with
# NASFLEET_ZFS=openzfs, writes its output and status to a per-run host dir
# and powers off. CMD's output is streamed here as it is written.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CHECKOUT=$(cd "$HERE/.." && pwd)
HOOKDIR=$HERE/openzfs-guest

VERSION=${NASFLEET_OPENZFS:-2.3}
W=${NASFLEET_GUEST_DIR:-/var/tmp/nasfleet-openzfs-guest}
TIMEOUT=${NASFLEET_GUEST_TIMEOUT:-3600}
MEM=${NASFLEET_GUEST_MEM:-4G}
CPUS=${NASFLEET_GUEST_CPUS:-2}

# mkfs.ext4, chroot, depmod live in /usr/sbin.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

log() { printf '[openzfs-guest %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

case $VERSION in
2.3 | 2.1) ;;
*) die "NASFLEET_OPENZFS=$VERSION: supported are 2.3 (bookworm-backports) and 2.1 (bookworm)" ;;
esac

# The Debian mirror this machine's apt already uses; the guest image comes
# from the same place as every other package here.
debian_uri() { # debian_uri security|main
    local f=/etc/apt/sources.list.d/debian.sources uri=
    if [[ -f $f ]]; then
        if [[ $1 == security ]]; then
            uri=$(sed -n 's/^URIs: *//p' "$f" | grep security | head -n1 || true)
        else
            uri=$(sed -n 's/^URIs: *//p' "$f" | grep -v security | head -n1 || true)
        fi
    fi
    if [[ -z $uri ]]; then
        [[ $1 == security ]] && uri=http://deb.debian.org/debian-security || uri=http://deb.debian.org/debian
    fi
    echo "$uri"
}
MIRROR=$(debian_uri main)
SECURITY=$(debian_uri security)

# Host apt runs with a private source list, list dir and cache under $W: the
# host's own sources (which lack backports and contrib) stay untouched.
APT_DIR=$W/apt
APT_OPTS=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$APT_DIR/sources.list.d"
    -o "Dir::State::Lists=$APT_DIR/lists" -o "Dir::Cache=$APT_DIR/cache"
    -o "Dir::Etc::Preferences=$APT_DIR/none.pref" -o "Dir::Etc::PreferencesParts=$APT_DIR/none.d"
    -o "Acquire::Languages=none")

need_root() { [[ $(id -u) -eq 0 ]] || die "$1 must run as root"; }

apt_update() {
    mkdir -p "$APT_DIR"/{sources.list.d,lists/partial,cache/archives/partial,none.d,bpo.d}
    cat > "$APT_DIR/sources.list.d/nasfleet-guest.sources" << EOF
Types: deb
URIs: $MIRROR
Suites: bookworm bookworm-updates bookworm-backports
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY
Suites: bookworm-security
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    cp "$HOOKDIR/backports.pref" "$APT_DIR/bpo.d/backports.pref"
    apt-get "${APT_OPTS[@]}" update -q > "$APT_DIR/update.log" 2>&1 ||
        { cat "$APT_DIR/update.log" >&2; die "apt-get update (private lists under $APT_DIR) failed"; }
}

cmd_deps() {
    if command -v qemu-system-x86_64 > /dev/null && command -v mmdebstrap > /dev/null &&
        command -v qemu-img > /dev/null && command -v mkfs.ext4 > /dev/null && command -v rsync > /dev/null; then
        return 0
    fi
    need_root "installing qemu-system-x86 and mmdebstrap"
    log "installing host packages: qemu-system-x86, mmdebstrap (from bookworm-backports)"
    apt_update
    # qemu-system-x86 must come from backports: the image's qemu-utils is
    # the backports 10.0, which Breaks bookworm's qemu-system-common. Pinned
    # per package (pkg/release): `-t bookworm-backports` would also upgrade
    # unrelated installed packages. apt takes none of the versioned
    # dependencies from backports on its own, hence the explicit list.
    DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y -q --no-install-recommends \
        qemu-system-x86/bookworm-backports qemu-system-common/bookworm-backports \
        qemu-system-data/bookworm-backports seabios/bookworm-backports \
        mmdebstrap/bookworm-backports ||
        die "installing qemu-system-x86 and mmdebstrap failed"
    local c
    for c in qemu-system-x86_64 qemu-img mmdebstrap mkfs.ext4 rsync; do
        command -v "$c" > /dev/null || die "'$c' still missing after installing the host packages"
    done
}

# Candidate version of a package in the guest root: for 2.3 with the guest's
# backports pins applied, for 2.1 bookworm's (backports is never chosen on
# its own: its priority is 100).
candidate() {
    local prefs=$APT_DIR/none.d
    [[ $VERSION == 2.3 ]] && prefs=$APT_DIR/bpo.d
    apt-cache "${APT_OPTS[@]}" -o "Dir::Etc::PreferencesParts=$prefs" policy "$1" |
        awk '/Candidate:/ { print $2; exit }'
}

# The cache key: the versions that define the guest (kernel, OpenZFS) plus
# a hash of the recipe files, so that editing them rebuilds the image.
cache_key() {
    local kernel zfs recipe
    kernel=$(candidate linux-image-amd64)
    zfs=$(candidate zfs-dkms)
    [[ -n $kernel && $kernel != "(none)" ]] || die "no linux-image-amd64 candidate for OpenZFS $VERSION"
    [[ -n $zfs && $zfs != "(none)" ]] || die "no zfs-dkms candidate for OpenZFS $VERSION"
    case $VERSION in
    2.3) [[ $zfs == 2.3.* ]] || die "zfs-dkms candidate is $zfs, not 2.3.x (backports)" ;;
    2.1) [[ $zfs == 2.1.* ]] || die "zfs-dkms candidate is $zfs, not 2.1.x (bookworm)" ;;
    esac
    recipe=$(cd "$HOOKDIR" && cat init customize.sh packages backports.pref | sha256sum | cut -c1-10)
    # '~' and '+' are legal in paths but awkward in shells; keep it plain.
    echo "zfs-${zfs}_linux-${kernel}_${recipe}" | tr '~+:' '--.'
}

# Never rm -rf a guest root while mmdebstrap's /proc, /sys or /dev mounts
# may still be inside (a crashed build): that would walk into the host's.
safe_remove() {
    local dir=$1
    [[ -e $dir ]] || return 0
    if findmnt -rn -o TARGET | grep -qF "$dir"; then
        die "mounts left under $dir (a crashed build?): umount them, then retry"
    fi
    rm -rf --one-file-system "$dir"
}

cmd_build() {
    need_root "building the guest image"
    cmd_deps
    mkdir -p "$W"
    # One build at a time (deploy/test.sh starts one in the background): a
    # second waits, then finds the image the first one made.
    exec 8> "$W/build.lock"
    if ! flock -n 8; then
        log "another build of a guest image runs; waiting for it"
        flock -w 3600 8 || die "another build still runs after an hour"
    fi
    apt_update
    local key
    key=$(cache_key)
    local out=$W/$key
    if [[ -f $out/root.qcow2 ]]; then
        ln -sfn "$key" "$W/current-$VERSION"
        log "image cached: $out"
        echo "$out"
        return 0
    fi
    log "building the OpenZFS $VERSION guest image $key (about 6-10 minutes on 2 cores)"
    local t0=$SECONDS b=$W/build
    safe_remove "$b"
    mkdir -p "$b/out"
    local suites=("deb $MIRROR bookworm main contrib" "deb $MIRROR bookworm-updates main contrib"
        "deb $SECURITY bookworm-security main contrib")
    local setup=()
    if [[ $VERSION == 2.3 ]]; then
        suites+=("deb $MIRROR bookworm-backports main contrib")
        setup=(--setup-hook="mkdir -p \"\$1/etc/apt/preferences.d\" && cp $(printf '%q' "$HOOKDIR/backports.pref") \"\$1/etc/apt/preferences.d/nasfleet-backports.pref\"")
    fi
    local include
    include=$(sed 's/#.*//' "$HOOKDIR/packages" | tr -s ' \n' ',' | sed 's/^,//; s/,$//')
    if ! mmdebstrap --mode=root --variant=minbase \
        --aptopt='Acquire::Languages "none"' \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        "${setup[@]}" \
        --include="$include" \
        --customize-hook="$(printf '%q' "$HOOKDIR/customize.sh") \"\$1\" $(printf '%q' "$HOOKDIR")" \
        bookworm "$b/root" "${suites[@]}" > "$b/out/build.log" 2>&1; then
        tail -n 40 "$b/out/build.log" >&2
        die "mmdebstrap failed (whole log: $b/out/build.log)"
    fi
    log "root built in $((SECONDS - t0)) s"
    local kv
    kv=$(basename "$(echo "$b"/root/lib/modules/*)")
    cp "$b/root/boot/vmlinuz-$kv" "$b/out/vmlinuz"
    cp "$b/root/boot/initrd.img-$kv" "$b/out/initrd.img"
    chroot "$b/root" dpkg-query -W -f '${Package}=${Version}\n' > "$b/out/packages.txt"
    echo "$kv" > "$b/out/kernel-version"
    # The image leaves out what only building the module needed (compiler,
    # headers, DKMS tree) and drivers for hardware a VM does not have: about
    # 150 MB instead of 600.
    rsync -aHAX --delete \
        --exclude=/usr/src/ --exclude=/usr/lib/gcc/ --exclude=/usr/include/ --exclude=/boot/ \
        --exclude=/var/lib/dkms/ \
        --exclude='/usr/lib/modules/*/kernel/drivers/'{gpu,media,net/wireless,net/ethernet,infiniband,staging,iio,usb,bluetooth,scsi,mtd,platform,hid,input}/ \
        --exclude='/usr/lib/modules/*/kernel/sound/' \
        "$b/root/" "$b/slim/"
    chroot "$b/slim" depmod -a "$kv"
    # 8 GB of sparse ext4: room for the tests' pool files, which live on the
    # guest's disk (written into a -snapshot overlay, never into the image).
    mkfs.ext4 -q -F -L nasfleet-guest -d "$b/slim" "$b/root.raw" 8G
    qemu-img convert -c -O qcow2 "$b/root.raw" "$b/out/root.qcow2"
    rm -f "$b/root.raw"
    safe_remove "$b/slim"
    safe_remove "$b/root"
    safe_remove "$out"
    mv "$b/out" "$out"
    ln -sfn "$key" "$W/current-$VERSION"
    log "image built in $((SECONDS - t0)) s: $out ($(du -sh "$out/root.qcow2" | cut -f1))"
    echo "$out"
}

image_dir() {
    local img=$W/current-$VERSION
    [[ -f $img/root.qcow2 ]] || return 1
    readlink -f "$img"
}

cmd_info() {
    local img
    img=$(image_dir) || die "no OpenZFS $VERSION image under $W: run '$0 build'"
    echo "$img"
    grep -E '^(zfs-dkms|zfsutils-linux|linux-image-[0-9])' "$img/packages.txt" || true
}

QEMU_PID=
TAIL_PID=
stop_guest() {
    # Only ever our own QEMU, by the pid we started.
    if [[ -n $QEMU_PID ]] && kill -0 "$QEMU_PID" 2> /dev/null; then
        kill "$QEMU_PID" 2> /dev/null || true
        local i
        for i in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$QEMU_PID" 2> /dev/null || break
            sleep 0.5
        done
        kill -9 "$QEMU_PID" 2> /dev/null || true
    fi
    if [[ -n $TAIL_PID ]]; then
        kill "$TAIL_PID" 2> /dev/null || true
    fi
}

cmd_run() {
    [[ ${1:-} == -- ]] && shift
    (($#)) || die "usage: $0 run -- CMD..."
    command -v qemu-system-x86_64 > /dev/null ||
        die "qemu-system-x86_64 missing: run '$0 deps' (or build) as root"
    local img
    img=$(image_dir) || die "no OpenZFS $VERSION image under $W: run '$0 build' first"

    # One guest at a time on this machine: two TCG guests on 2 cores would
    # each take twice as long and hit the tests' deadlines.
    mkdir -p "$W/runs"
    exec 9> "$W/runs/lock"
    if ! flock -n 9; then
        log "another guest runs; waiting for it (up to $TIMEOUT s)"
        flock -w "$TIMEOUT" 9 || die "another guest still runs after $TIMEOUT s"
    fi

    local run
    run=$(mktemp -d "$W/runs/run-XXXXXX")
    # Shared read-only at their own paths: the checkout (binaries, test
    # executables under target/) and a target dir kept elsewhere.
    local shares=() d
    if [[ -n ${NASFLEET_GUEST_SHARE:-} ]]; then
        IFS=: read -r -a shares <<< "$NASFLEET_GUEST_SHARE"
    else
        shares=("$CHECKOUT")
        if [[ -n ${CARGO_TARGET_DIR:-} ]]; then
            d=$(readlink -f "$CARGO_TARGET_DIR")
            [[ $d == "$CHECKOUT"/* ]] || shares+=("$d")
        fi
    fi
    local virtfs=() n=0
    : > "$run/mounts"
    for d in "${shares[@]}"; do
        d=$(readlink -f "$d")
        [[ -d $d ]] || die "share $d is not a directory"
        virtfs+=(-virtfs "local,path=$d,mount_tag=nfro$n,security_model=none,readonly=on,id=nfro$n")
        echo "nfro$n $d" >> "$run/mounts"
        n=$((n + 1))
    done

    # The command, run by bash in the guest from the same directory (when it
    # is shared), with the variables that steer the tests.
    {
        # What runs in the guest, every 20 s, for a look from the host at a
        # run that seems stuck (the guest has no network to log in over).
        printf '(while sleep 20; do ps -eo pid,ppid,etime,time,args > /mnt/run/ps.tmp 2>&1 && mv /mnt/run/ps.tmp /mnt/run/ps.txt; done) &\n'
        echo 'export NASFLEET_ZFS=openzfs'
        local v
        while IFS= read -r v; do
            case $v in
            NASFLEET_ZFS | NASFLEET_GUEST_*) ;;
            NASFLEET_* | RUST_* | CI | NO_COLOR | CARGO_TERM_COLOR)
                printf 'export %s=%q\n' "$v" "${!v}"
                ;;
            esac
        done < <(compgen -e)
        printf 'cd %q 2>/dev/null || cd /\n' "$PWD"
        printf 'exec'
        printf ' %q' "$@"
        echo
    } > "$run/cmd"
    : > "$run/output"
    log "run dir $run: output, ps.txt (the guest's processes, every 20 s), console.log"

    # mitigations=off: a throwaway guest with no network runs only our own
    # code, and under TCG every retpoline and barrier is emulated (300
    # process spawns: 6.0 s with the mitigations, 4.3 s without).
    local append="console=ttyS0 root=/dev/vda rw init=/usr/local/sbin/nasfleet-guest-init panic=-1 quiet mitigations=off"
    log "booting OpenZFS $VERSION guest ($(basename "$img")), deadline ${TIMEOUT}s; run dir $run"
    local t0=$SECONDS
    trap stop_guest EXIT
    trap 'stop_guest; exit 130' INT TERM
    # -snapshot: the cached image is never written; the guest's writes go
    # to a temporary overlay that QEMU deletes on exit.
    qemu-system-x86_64 -accel tcg,thread=multi -cpu max -m "$MEM" -smp "$CPUS" \
        -nographic -no-reboot -nic none -snapshot \
        -drive "file=$img/root.qcow2,if=virtio,format=qcow2" \
        -device virtio-rng-pci \
        -virtfs "local,path=$run,mount_tag=nfrun,security_model=none,id=nfrun" \
        "${virtfs[@]}" \
        -kernel "$img/vmlinuz" -initrd "$img/initrd.img" -append "$append" \
        < /dev/null > "$run/console.log" 2>&1 &
    QEMU_PID=$!
    tail -n +1 -f --pid="$QEMU_PID" "$run/output" &
    TAIL_PID=$!
    local timed_out=0
    while kill -0 "$QEMU_PID" 2> /dev/null; do
        if ((SECONDS - t0 >= TIMEOUT)); then
            timed_out=1
            log "guest still running after $TIMEOUT s: killing it (pid $QEMU_PID)"
            stop_guest
            break
        fi
        sleep 1
    done
    wait "$QEMU_PID" 2> /dev/null || true
    QEMU_PID=
    wait "$TAIL_PID" 2> /dev/null || true
    TAIL_PID=
    trap - EXIT INT TERM

    local rc
    if [[ -s $run/rc ]]; then
        rc=$(< "$run/rc")
        log "guest finished in $((SECONDS - t0)) s; command exited $rc"
    else
        rc=125
        ((timed_out)) && rc=124
        log "the guest never reported the command's status (see the console log below, $run/console.log)"
        tail -n 30 "$run/console.log" >&2 || true
    fi
    # Keep the last few runs' logs for a look afterwards, not every run's.
    find "$W/runs" -mindepth 1 -maxdepth 1 -name 'run-*' -type d -print0 |
        xargs -0 -r ls -1dt | tail -n +6 | while IFS= read -r d; do rm -rf --one-file-system "$d"; done
    return "$rc"
}

# `test`: the host builds (same glibc as the guest: both are bookworm), the
# guest only runs. The test executable and the binaries it starts are read
# from the shared checkout at the same paths as on the host.
cmd_test() {
    local target=${NASFLEET_GUEST_TEST:-e2e} locked=() exe profile=()
    [[ -f $CHECKOUT/Cargo.lock ]] && locked=(--locked)
    # Release by default: under TCG every instruction is emulated, and
    # unoptimised Rust (TLS handshakes of every CLI call, the agents'
    # relays) made the suite several times slower.
    case ${NASFLEET_GUEST_PROFILE:-release} in
    release) profile=(--release) ;;
    debug) ;;
    *) die "NASFLEET_GUEST_PROFILE=$NASFLEET_GUEST_PROFILE: expected release or debug" ;;
    esac
    (cd "$CHECKOUT" && cargo build --workspace --bins "${profile[@]}" "${locked[@]}") ||
        die "cargo build --workspace --bins failed"
    exe=$(cd "$CHECKOUT" && cargo test -p nasfleet-tests --test "$target" --no-run "${profile[@]}" "${locked[@]}" \
        --message-format=json | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
    [[ -n $exe && -x $exe ]] || die "no test executable for nasfleet-tests --test $target"
    # The binaries sit two levels up from target/debug/deps/e2e-HASH.
    local bins
    bins=$(dirname "$(dirname "$exe")")
    log "running $(basename "$exe") in the OpenZFS $VERSION guest"
    export NASFLEET_BIN_DIR=$bins
    cmd_run -- "$exe" --test-threads=1 "$@"
}

# `bench`: the replication benchmark on kernel ZFS. Under TCG absolute
# times mean little; the ratio of nasfleet to the raw pipeline does.
cmd_bench() {
    local mib=${1:-256} locked=()
    [[ -f $CHECKOUT/Cargo.lock ]] && locked=(--locked)
    (cd "$CHECKOUT" && cargo build --workspace --bins --release "${locked[@]}") ||
        die "cargo build --release failed"
    export NASFLEET_BENCH_PREBUILT=1
    cmd_run -- "$CHECKOUT/deploy/bench-replication.sh" "$mib"
}

cmd_bench_streams() {
    (($#)) || die "usage: $0 bench-streams snapshots [N] | compression [MIB] | bandwidth [MIB] [RATE]"
    local locked=()
    [[ -f $CHECKOUT/Cargo.lock ]] && locked=(--locked)
    (cd "$CHECKOUT" && cargo build --workspace --bins --release "${locked[@]}") ||
        die "cargo build --release failed"
    export NASFLEET_BENCH_PREBUILT=1
    cmd_run -- "$CHECKOUT/deploy/bench-streams.sh" "$@"
}

sub=${1:-}
(($#)) && shift
case $sub in
deps) cmd_deps ;;
build) cmd_build ;;
run) cmd_run "$@" ;;
test) cmd_test "$@" ;;
bench) cmd_bench "$@" ;;
bench-streams) cmd_bench_streams "$@" ;;
info) cmd_info ;;
*)
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
