"""What the notebooks and batch experiments use: notebook helpers (`notebook`, `papermill`,
`tables`), the ablation lab of notebook 03 (`lab`), papermill sweeps (`sweep`) and recipe studies
(`study`, `study_report`)."""
