#!/usr/bin/env bash
# A MocoSFL deployment on this machine, secure as on several (README, "Clients on other
# machines"): a SuperLink with TLS and SuperNode authentication, N SuperNodes each with its
# client process (python -m mocosfl.deploy.client), and the run submitted with `flwr run`.
#
#   bash deploy/loopback.sh N [overrides ...]     (make deploy-loopback CLIENTS=N ARGS="...")
#
# N clients (sfl.num_clients=N); the overrides are mocosfl.train's. Everything goes to
# $DEPLOY_DIR (default logs/deploy/<date>_<time>): credentials/, *.log, and the run in run/.
# $POLL: seconds between the server's pulls of the clients' replies (default 0.1).
set -euo pipefail
N=${1:?usage: bash deploy/loopback.sh N [overrides ...]}
shift
PY=${PY:-.venv/bin/python}
BIN=$(cd "$(dirname "$PY")" && pwd)
DIR=${DEPLOY_DIR:-logs/deploy/$(date +%Y-%m-%d_%H-%M-%S)}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
OVERRIDES="sfl.num_clients=$N $*"
export FLWR_HOME="$DIR/flwr" PATH="$BIN:$PATH"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() {  # wait_for FILE TEXT: until FILE says TEXT (a minute at most)
    for _ in $(seq 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.2; done
    echo "error: $1 did not say '$2' within a minute:" >&2; tail -5 "$1" >&2; exit 1
}

"$PY" -m mocosfl.deploy.credentials "$DIR/credentials" --nodes "$N"
C=$DIR/credentials
PORT=$(free_port)
mkdir -p "$FLWR_HOME"
printf '[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\naddress = "127.0.0.1:%s"\nroot-certificates = "%s"\n' \
    "$PORT" "$C/ca.crt" > "$FLWR_HOME/config.toml"

flower-superlink --ssl-ca-certfile "$C/ca.crt" --ssl-certfile "$C/server.pem" --ssl-keyfile "$C/server.key" \
    --enable-supernode-auth --disable-runtime-dependency-installation --port "$PORT" > "$DIR/superlink.log" 2>&1 &
wait_for "$DIR/superlink.log" "Uvicorn running"
for k in $(seq 0 $((N - 1))); do
    flwr supernode register "$C/node$k.pub" > "$DIR/register$k.log"
    # shellcheck disable=SC2086  # the overrides are separate words
    "$PY" -m mocosfl.deploy.client --partition-id "$k" --socket "$DIR/client$k.sock" $OVERRIDES > "$DIR/client$k.log" 2>&1 &
done
for k in $(seq 0 $((N - 1))); do
    wait_for "$DIR/client$k.log" "serving on"
    flower-supernode --superlink "127.0.0.1:$PORT" --root-certificates "$C/ca.crt" \
        --auth-supernode-private-key "$C/node$k" --port "$(free_port)" \
        --node-config "partition-id=$k mocosfl-socket=\"$DIR/client$k.sock\"" > "$DIR/supernode$k.log" 2>&1 &
done
"$PY" -c 'import json, sys; print(f"overrides = {json.dumps(sys.argv[1])}\noutput-dir = {json.dumps(sys.argv[2])}\npoll-interval = {float(sys.argv[3])}")' \
    "$OVERRIDES" "$DIR/run" "${POLL:-0.1}" > "$DIR/run.toml"
echo "deploy: $N clients, SuperLink at 127.0.0.1:$PORT; logs in $DIR"
flwr run deploy/flower loopback --stream --run-config "$DIR/run.toml" > "$DIR/flwr-run.log" 2>&1 || true
if [ ! -f "$DIR/run/checkpoints/final.ckpt" ]; then
    echo "error: the run did not finish; see $DIR/flwr-run.log" >&2
    tail -20 "$DIR/flwr-run.log" >&2
    exit 1
fi
grep -A12 "train: done" "$DIR/flwr-run.log" || true
echo "deploy: done; the run is in $DIR/run"
