#!/usr/bin/env bash
# launch/torchrun.sh - multi-node training without Slurm: start it once on every node, the same way.
#
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 launch/torchrun.sh --config configs/trainer/multinode.yaml \
#       --config configs/gpt/nano_stdlib.yaml                   # on node0; NODE_RANK=1 on the second node
#
# torchrun (PyTorch's elastic launcher) starts NPROC_PER_NODE processes here and gives each RANK, LOCAL_RANK,
# WORLD_SIZE, MASTER_ADDR and MASTER_PORT; Lightning's TorchElasticEnvironment reads them, so the training
# command is the ordinary `gen-lightning fit` with the layout passed as --trainer.num_nodes/--trainer.devices
# (any trainer config runs unchanged). Arguments are `gen-lightning fit` arguments.
#
#   NNODES          nodes in the job (default 1)
#   NODE_RANK       this node's index, 0..NNODES-1 (default 0); node 0 hosts the rendezvous
#   MASTER_ADDR     address of node 0, reachable from every node (default 127.0.0.1: one machine)
#   MASTER_PORT     a free TCP port on node 0 (default 29500)
#   NPROC_PER_NODE  processes per node (default: the GPUs torch sees, or 1 without GPUs)
#   PYTHON          the interpreter with gen-lightning installed (default: python)
set -euo pipefail

PYTHON=${PYTHON:-python}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
NPROC_PER_NODE=${NPROC_PER_NODE:-$("$PYTHON" -c "import torch; print(torch.cuda.device_count() or 1)")}

echo "[torchrun.sh] node $NODE_RANK of $NNODES, $NPROC_PER_NODE process(es), rendezvous $MASTER_ADDR:$MASTER_PORT"
exec "$PYTHON" -m torch.distributed.run \
  --nnodes "$NNODES" --node_rank "$NODE_RANK" --nproc_per_node "$NPROC_PER_NODE" \
  --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" \
  -m gen_lightning fit "$@" --trainer.num_nodes "$NNODES" --trainer.devices "$NPROC_PER_NODE"
