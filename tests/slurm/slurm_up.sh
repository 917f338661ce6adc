#!/usr/bin/env bash
# slurm_up.sh - bring up a throw-away Slurm cluster on this one machine (needs root).
#
#   SLURMCI_DIR    state/config/log dir               (default ${TMPDIR:-/tmp}/slurmci)
#   SLURMCI_NODES  number of compute nodes            (default 2)
#   SLURMCI_MODE   netns : each node = own netns + veth on a bridge + own hostname
#                  local : all nodes on 127.0.0.1 (one slurmd per node, distinct ports),
#                          own UTS+mount ns so each node has its own hostname
#                  plain : like local but no namespaces at all (node names NOT resolvable:
#                          jobs must export MASTER_ADDR=127.0.0.1)   (default netns)
#   SLURMCI_NET    /24 prefix for netns mode          (default 10.213.47 -> ctld .1, nodes .2..)
#   SLURMCI_PORT   slurmctld port; slurmd uses +1 (+i in local/plain)   (default 36817)
#   SLURMCI_CPUS   CPUs per node                      (default nproc; nodes share the real cores)
#   SLURMCI_TAG    prefix of netns/link names         (default sci)
#   SLURMCI_CRED_EXPIRE  job credential lifetime in s; a requeued job waits this long before it
#                  starts again (Slurm's default 120; tests use a few seconds)
#   SLURMCI_KILL_WAIT  seconds between SIGTERM and SIGKILL when a job step ends (default 5)
#   SLURMCI_SCHED_PARAMS  SchedulerParameters, e.g. sched_interval=1,bf_interval=1 so a requeued job
#                  starts as soon as it may (default: Slurm's 60 s / 30 s scheduling passes)
#
# Afterwards:  source "$SLURMCI_DIR/env.sh"   (exports SLURM_CONF)   then sbatch/srun/squeue.
# Tear down:   slurm_down.sh (same env vars).
set -euo pipefail
D=${SLURMCI_DIR:-${TMPDIR:-/tmp}/slurmci}
N=${SLURMCI_NODES:-2}
MODE=${SLURMCI_MODE:-netns}
NET=${SLURMCI_NET:-10.213.47}
P=${SLURMCI_PORT:-36817}
TAG=${SLURMCI_TAG:-sci}
CPUS=${SLURMCI_CPUS:-$(nproc)}
CRED_EXPIRE=${SLURMCI_CRED_EXPIRE:-120}
T0=$(date +%s.%N)
log() { echo "[slurm_up $(date +%T)] $*"; }
fail() {
  echo "[slurm_up] FAILED: $*" >&2
  for f in "$D"/log/*.log "$D"/munge/munged.log; do [ -f "$f" ] && { echo "== $f" >&2; tail -n 15 "$f" >&2; }; done
  exit 1
}
[ "$(id -u)" = 0 ] || fail "must run as root"
[ -e "$D/cluster.env" ] && fail "$D/cluster.env exists: cluster already up? run slurm_down.sh first"

# 1. packages (Debian bookworm: slurm-wlm 22.05.8, munge 0.5.15)
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  log "installing slurmctld slurmd slurm-client munge"
  export DEBIAN_FRONTEND=noninteractive
  # keep postinst scripts from starting the system-wide munge/slurm services
  prc=0; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; prc=1; }
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge iproute2 >/dev/null
  [ $prc = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

mkdir -p "$D"/{munge,etc,state,log,spool}
chmod 755 "$D" "$D/munge"            # munged: socket dir must be world-executable
CONF=$D/etc/slurm.conf
export SLURM_CONF=$CONF
NODES=(); for i in $(seq 1 "$N"); do NODES+=("n$i"); done
printf 'SLURMCI_DIR=%q\nSLURMCI_MODE=%q\nSLURMCI_NODES=%q\nSLURMCI_TAG=%q\nSLURMCI_NET=%q\n' "$D" "$MODE" "$N" "$TAG" "$NET" > "$D/cluster.env"
echo "export SLURM_CONF=$CONF" > "$D/env.sh"

# 2. munge with a private key and socket (does not touch /etc/munge or /run/munge)
log "starting munged"
[ -s "$D/munge/munge.key" ] || { dd if=/dev/urandom of="$D/munge/munge.key" bs=1024 count=1 status=none; chmod 600 "$D/munge/munge.key"; }
MS=$D/munge/munge.socket
munged --socket="$MS" --key-file="$D/munge/munge.key" --pid-file="$D/munge/munged.pid" \
       --seed-file="$D/munge/munged.seed" --log-file="$D/munge/munged.log" || fail "munged"
munge -S "$MS" -n | unmunge -S "$MS" >/dev/null || fail "munge self-test"

# 3. network + hosts file
if [ "$MODE" = netns ]; then
  log "creating bridge ${TAG}br0 $NET.1/24 and $N netns"
  CTL=$NET.1
  ip link add "${TAG}br0" type bridge
  ip addr add "$CTL/24" dev "${TAG}br0"
  ip link set "${TAG}br0" up
  echo "127.0.0.1 localhost" > "$D/hosts"; echo "$CTL slurmctl" >> "$D/hosts"
  for i in $(seq 1 "$N"); do
    ns=${TAG}n$i; addr=$NET.$((i + 1))
    ip netns add "$ns"
    ip link add "${TAG}v$i" type veth peer name eth0 netns "$ns"
    ip link set "${TAG}v$i" master "${TAG}br0" up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    echo "$addr n$i" >> "$D/hosts"
  done
else
  CTL=127.0.0.1
  echo "127.0.0.1 localhost slurmctl ${NODES[*]}" > "$D/hosts"
fi

# 4. slurm.conf
cat > "$CONF" <<EOF
ClusterName=ci
# "localhost" is accepted by slurmctld whatever the machine's hostname is
SlurmctldHost=localhost($CTL)
SlurmctldPort=$P
SlurmdPort=$((P + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MS,cred_expire=$CRED_EXPIRE
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool/%n
SlurmctldPidFile=$D/log/slurmctld.pid
SlurmdPidFile=$D/log/slurmd-%n.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
KillWait=${SLURMCI_KILL_WAIT:-5}
MinJobAge=30
EOF
for i in $(seq 1 "$N"); do
  if [ "$MODE" = netns ]; then
    echo "NodeName=n$i NodeAddr=$NET.$((i + 1)) NodeHostname=n$i CPUs=$CPUS RealMemory=2000 State=UNKNOWN" >> "$CONF"
  else
    echo "NodeName=n$i NodeAddr=127.0.0.1 NodeHostname=n$i Port=$((P + 1 + i)) CPUs=$CPUS RealMemory=2000 State=UNKNOWN" >> "$CONF"
  fi
  mkdir -p "$D/spool/n$i"
done
[ -n "${SLURMCI_SCHED_PARAMS:-}" ] && echo "SchedulerParameters=$SLURMCI_SCHED_PARAMS" >> "$CONF"
echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP" >> "$CONF"

# 5. daemons
log "starting slurmctld"
slurmctld -f "$CONF" || fail "slurmctld"
for i in $(seq 1 "$N"); do
  log "starting slurmd n$i ($MODE)"
  inner="mount --bind '$D/hosts' /etc/hosts && hostname n$i && exec slurmd -f '$CONF' -N n$i"
  case $MODE in
    # nsenter, not 'ip netns exec': the latter remounts /sys without cgroupfs and slurmd 22.05
    # then dies with "No filesystem mounted on /sys/fs/cgroup"
    netns) unshare --uts --mount --propagation private nsenter --net="/run/netns/${TAG}n$i" sh -c "$inner" ;;
    local) unshare --uts --mount --propagation private sh -c "$inner" ;;
    plain) slurmd -f "$CONF" -N "n$i" ;;
    *) fail "unknown SLURMCI_MODE=$MODE" ;;
  esac || fail "slurmd n$i"
done

# 6. wait until all nodes are idle
for _ in $(seq 1 120); do
  idle=$(sinfo -h -N -t idle -o '%N' 2>/dev/null | sort -u | wc -l || true)
  [ "$idle" -ge "$N" ] && break
  sleep 0.5
done
[ "${idle:-0}" -ge "$N" ] || { sinfo -N >&2 || true; fail "only ${idle:-0}/$N nodes idle after 60 s"; }
sinfo
log "cluster up in $(echo "$(date +%s.%N) - $T0" | bc) s; source $D/env.sh"
