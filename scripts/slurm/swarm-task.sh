#!/usr/bin/env bash
# One task of a Slurm swarm (run by swarm.sbatch through srun): makes this task's node key, puts its
# peers-file entry in OUT/peers.d/, waits until every task's entry is there, then runs `swarmlab node`
# with the peers file they make together. Reads SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID; the
# node listens on its host's first address (override with SWARM_HOST) at port SWARM_PORT_BASE (default
# 4100) + SLURM_LOCALID. Waits at most SWARM_WAIT_S seconds (default 300) for the other tasks.
# With SWARM_BOOTSTRAP set to a relay's address (`swarmlab relay` prints it), the nodes join through that
# relay instead of dialling each other (machines behind NAT, e.g. across sites).
set -euo pipefail
protocol=${1:?usage: swarm-task.sh PROTOCOL CONFIG OUT}
config=${2:?usage: swarm-task.sh PROTOCOL CONFIG OUT}
out=${3:?usage: swarm-task.sh PROTOCOL CONFIG OUT}
rank=${SLURM_PROCID:?not a Slurm task}
tasks=${SLURM_NTASKS:?not a Slurm task}
local_id=${SLURM_LOCALID:-0}
swarmlab=${SWARMLAB:-target/release/swarmlab}
host=${SWARM_HOST:-$(hostname -I | awk '{print $1}')}
port=$(( ${SWARM_PORT_BASE:-4100} + local_id ))
wait_s=${SWARM_WAIT_S:-300}

dir="$out/task-$rank"
entries="$out/peers.d"
mkdir -p "$dir" "$entries"
"$swarmlab" keygen --addr "$host:$port" --out "$dir/node.key" > "$dir/keygen.txt"
# The [[peer]] entry, published whole: written aside, then renamed into place.
sed -n '/^\[\[peer\]\]/,$p' "$dir/keygen.txt" > "$entries/.$rank.toml"
mv "$entries/.$rank.toml" "$entries/$rank.toml"

waited=0
while [ "$(find "$entries" -maxdepth 1 -name '[0-9]*.toml' | wc -l)" -lt "$tasks" ]; do
    if [ "$waited" -ge "$wait_s" ]; then
        echo "task $rank: only $(find "$entries" -maxdepth 1 -name '[0-9]*.toml' | wc -l) of $tasks peers after ${wait_s} s" >&2
        exit 1
    fi
    sleep 1
    waited=$((waited + 1))
done
for i in $(seq 0 $((tasks - 1))); do
    cat "$entries/$i.toml"
    echo
done > "$dir/peers.toml"

join=()
if [ -n "${SWARM_BOOTSTRAP:-}" ]; then join=(--bootstrap "$SWARM_BOOTSTRAP"); fi
exec "$swarmlab" node --protocol "$protocol" --config "$config" --key "$dir/node.key" \
    --peers "$dir/peers.toml" --out "$dir" "${join[@]}"
