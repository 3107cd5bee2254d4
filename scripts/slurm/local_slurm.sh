#!/usr/bin/env bash
# Start a one-node SLURM on this machine (for tests and CI), idempotently.
#
#   scripts/slurm/local_slurm.sh          # start (install slurm-wlm + munge with apt when missing)
#   scripts/slurm/local_slurm.sh status   # exit 0 when the local cluster accepts jobs
#
# Debian's slurm-wlm (22.05) and munge, run as root, with the settings that work in a container:
# proctrack/linuxproc, task/none, select/cons_tres, one node with this machine's CPUs and no GPUs.
# Exit status 0: running. Exit status 3: cannot run here (the reason is printed on one line).
set -euo pipefail

SLURM_CONF_DIR=/etc/slurm
NODE=$(hostname -s)
READY_TIMEOUT_S=${LOCAL_SLURM_READY_TIMEOUT_S:-60}

cannot() { echo "local SLURM cannot run here: $*" >&2; exit 3; }

ready() {
  command -v sinfo >/dev/null 2>&1 || return 1
  local state
  state=$(timeout 5 sinfo -h -n "$NODE" -o '%t' 2>/dev/null | head -n1) || return 1
  [[ "$state" =~ ^(idle|mix|alloc|comp) ]]
}

if [[ "${1:-start}" == status ]]; then ready && exit 0 || exit 1; fi
if ready; then echo "local SLURM already running on $NODE"; exit 0; fi

[[ $(id -u) -eq 0 ]] || cannot "not root (munge and slurmd must run as root)"

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || cannot "slurm-wlm is not installed and there is no apt-get"
  echo "installing slurm-wlm and munge with apt-get"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge; } >/dev/null \
    || cannot "apt-get install slurm-wlm munge failed (no network or no package source?)"
fi

# munge: the authentication daemon every SLURM command talks through
if ! pgrep -x munged >/dev/null; then
  [[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged || cannot "munged did not start"
fi

CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p "$SLURM_CONF_DIR" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
cat > "$SLURM_CONF_DIR/slurm.conf.tmp" <<CONF
# written by polaris-dpo scripts/slurm/local_slurm.sh: a one-node test cluster
ClusterName=local
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=30
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
mv "$SLURM_CONF_DIR/slurm.conf.tmp" "$SLURM_CONF_DIR/slurm.conf"

pgrep -x slurmctld >/dev/null || slurmctld || cannot "slurmctld did not start (see /var/log/slurm/slurmctld.log)"
pgrep -x slurmd >/dev/null || slurmd || cannot "slurmd did not start (see /var/log/slurm/slurmd.log)"

for _ in $(seq "$READY_TIMEOUT_S"); do
  if ready; then echo "local SLURM running on $NODE ($CPUS CPUs)"; exit 0; fi
  scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
  sleep 1
done
cannot "node $NODE did not become idle within ${READY_TIMEOUT_S}s: $(sinfo -h -o '%t %E' 2>&1 | head -n1)"
