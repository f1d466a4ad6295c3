#!/usr/bin/env bash
# A local demo fleet on this machine: one controller (embedded sled store)
# and two agents, "nas1" and "nas2", each owning a file-backed zfs-fuse pool
# and reachable through its own sshd on a loopback address. Ends by printing
# the web console's URL and a sign-in link; everything keeps running until
# `deploy/demo.sh stop`.
#
#   deploy/demo.sh          # set up (again) and start the demo fleet
#   deploy/demo.sh stop     # stop it and destroy the demo pools
#
# Needs root (zfs pools, sshd). NASFLEET_DEMO_DIR overrides /tmp/nasfleet-demo.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
FLEET=${NASFLEET_DEMO_DIR:-/tmp/nasfleet-demo}
PORT=${NASFLEET_DEMO_PORT:-7443}
BIN=$REPO/target/debug
FLEET_LOG_TAG=demo
POOLS=(demo-nas1 demo-nas2)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
# shellcheck source=deploy/fleet-lib.sh
source deploy/fleet-lib.sh

stop_demo() {
    [[ -d $FLEET ]] && fleet_forget_keys
    fleet_stop "${POOLS[@]}"
}

if [[ ${1:-} == stop ]]; then
    stop_demo
    log "demo stopped"
    exit 0
fi
[[ $# -eq 0 ]] || die "usage: deploy/demo.sh [stop]"
[[ $(id -u) -eq 0 ]] || die "run as root: the demo creates zfs pools and starts sshd"

log "installing dependencies and starting zfs-fuse"
deploy/install-deps.sh

log "building nasfleet"
cargo build --workspace --bins --locked

stop_demo
fleet_controller
fleet_host nas1 demo-nas1 127.0.0.2 256M
fleet_host nas2 demo-nas2 127.0.0.3 256M
for system in nas1 nas2; do
    pool=demo-$system
    fleet_mounting zfs create "$pool/data"
    echo "hello from $system" >"$FLEET/mnt/$pool/data/hello.txt"
    zfs snapshot "$pool/data@manual-$(date +%Y-%m-%d_%H-%M)"
done
fleet_wait_online 2
CLI=(fleet_cli)

echo
echo "\$ nasfleet system list"
"${CLI[@]}" system list
echo
# A periodic snapshot task on nas1 (hourly, two weeks' retention), run once
# now and watched, then the snapshots of the demo dataset.
echo "\$ nasfleet snapshot-task create --system nas1 --dataset demo-nas1/data --schedule hourly --lifetime 2w"
task_id=$("${CLI[@]}" -o json snapshot-task create --system nas1 --dataset demo-nas1/data --schedule hourly --lifetime 2w |
    sed -n 's/^  "id": \([0-9]*\),*$/\1/p')
[[ -n $task_id ]] || die "snapshot task was not created"
echo "\$ nasfleet snapshot-task run $task_id --watch"
"${CLI[@]}" snapshot-task run "$task_id" --watch
echo
echo "\$ nasfleet snapshot-task list"
"${CLI[@]}" snapshot-task list
echo
echo "\$ nasfleet snapshot list nas1 demo-nas1/data --refresh"
"${CLI[@]}" snapshot list nas1 demo-nas1/data --refresh
echo

# Fan-in: both systems' data into one backup dataset on nas2 (nas1 over SSH
# with trust set up by the controller, nas2 locally). --create-snapshot-task
# adds snapshot tasks where none cover a source and snapshots right before
# each run.
replicate=(replication create fanin --source nas1:demo-nas1/data --source nas2:demo-nas2/data
    --target nas2:demo-nas2/backup --create-snapshot-task --yes)
echo "\$ nasfleet ${replicate[*]}"
"${CLI[@]}" "${replicate[@]}"
echo
echo "\$ nasfleet replication run fanin --watch"
"${CLI[@]}" replication run fanin --watch
echo
echo "\$ nasfleet ssh-connection list"
"${CLI[@]}" ssh-connection list
echo
echo "\$ nasfleet replication list"
"${CLI[@]}" replication list
echo
# People: an operator of nas1 and a viewer of every system beside the
# admin, each logged in with a key made in their own directory (as on their
# own machine), and one call the viewer's role refuses.
people_login() {
    local name=$1 json
    shift
    json=$("${CLI[@]}" -o json user create "$name" "$@")
    "$BIN/nasfleet" --config "$FLEET/people/$name/config.toml" login --force \
        --controller "$(json_field "$json" controller)" \
        --token "$(json_field "$json" token)" \
        --ca-fingerprint "$(json_field "$json" ca_fingerprint)"
}
json_field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
mkdir -p "$FLEET/people"
echo "\$ nasfleet user create ann --role operator --system nas1   (and ann logs in)"
people_login ann --role operator --system nas1
echo "\$ nasfleet user create vic --role viewer --all-systems      (and vic logs in)"
people_login vic --role viewer --all-systems
echo
echo "\$ nasfleet user list"
"${CLI[@]}" user list
echo
echo "\$ nasfleet --config $FLEET/people/ann/config.toml system list     # ann sees nas1 only"
"$BIN/nasfleet" --config "$FLEET/people/ann/config.toml" system list
echo
echo "\$ nasfleet --config $FLEET/people/vic/config.toml replication run fanin   # a viewer may not"
if "$BIN/nasfleet" --config "$FLEET/people/vic/config.toml" replication run fanin; then
    die "the viewer's run was not refused"
fi
echo
echo "\$ nasfleet audit list --limit 8"
"${CLI[@]}" audit list --limit 8
echo
cat <<EOF
The demo fleet is running. Try:
  export NASFLEET_CONFIG=$FLEET/controller/admin.toml
  $BIN/nasfleet system show nas1
  $BIN/nasfleet system services nas2
  $BIN/nasfleet dataset list nas1
  $BIN/nasfleet run list
  $BIN/nasfleet replication show fanin
  $BIN/nasfleet snapshot list nas2 demo-nas2/backup --recursive --refresh
  $BIN/nasfleet --config $FLEET/people/ann/config.toml snapshot-task list    # as ann, operator of nas1
  $BIN/nasfleet audit list --user vic
Logs are in $FLEET/logs. Stop everything with: deploy/demo.sh stop
EOF
echo
echo "\$ nasfleet ui"
link=$("${CLI[@]}" ui 2>/dev/null)
echo "$link"
echo
cat <<EOF
The web console is at ${link%%/signin*} (its certificate is signed by the
controller's own CA, so the browser asks once to accept it). The link above
signs you in as admin; it works once, within 2 minutes (\`nasfleet ui\` makes
a new one). For password sign-in: nasfleet user set-password admin
EOF
