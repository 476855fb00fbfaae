"""What the notebooks and batch experiments use: notebook helpers (`notebook`, `papermill`,
`tables`), the ablation lab of notebook 03 (`lab`), papermill sweeps (`sweep`) and recipe studies
(`study`, `study_one`, `study_report`, `study_cli`), and where batch runs go (`executors`: this
machine's processes or SLURM jobs through `submitit_jobs`; one task's process in `task_process`;
their command-line options in `batch_cli`)."""
