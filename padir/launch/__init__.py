"""Launchers: the same ``python -m padir.train`` command on a TPU VM pod, a SLURM GPU cluster or
N local processes. Every command is built as an argument list and quoted with ``shlex``;
``--dry_run`` prints the commands instead of running them.

    python -m padir.launch tpu   --name=NAME --zone=ZONE --accelerator_type=v4-32 -- ARGS...
    python -m padir.launch slurm --nodes=2 --gpus_per_node=8 --output_script=job.sh -- ARGS...
    python -m padir.launch local --num_processes=2 -- ARGS...

ARGS are the trainer's own flags (``--gin_file=... --gin.MODEL_DIR="'/x'"``).
"""
