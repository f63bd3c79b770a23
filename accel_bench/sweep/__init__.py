"""Sweeps: many runs of one command, their folder, their jobs packed into tasks, and their tally.

``layout`` is the one place that names a sweep folder's files; ``jobs`` resumes, reports and costs
jobs; ``packing`` groups jobs into tasks; ``tasks`` runs a task's jobs in one process;
``slurm_queue`` reads Slurm's books; ``limits`` says what each numeric launcher setting allows. The Hydra
plugins under ``hydra_plugins/`` drive them.
"""
