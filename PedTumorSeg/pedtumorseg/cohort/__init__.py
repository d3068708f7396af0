"""Cohorts on a SLURM cluster (``pedtumorseg cohort``): a manifest of cases checked as a whole, a job array whose
tasks run the batch path with the model loaded once, per-case status from the output folder, resubmission of
what did not finish, and one report of the cohort. SLURM does the distribution; this package writes the jobs.

``manifest`` (the CSV), ``state`` (the files under ``<output>/cohort/``), ``slurm`` (script, ``sbatch``,
``squeue``), ``submit``, ``worker`` (one array task), ``status``, ``report``, ``cli``.
"""
