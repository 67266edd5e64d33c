"""`kexie eval`: Q&A datasets, metrics, the runner that compares retrieval configurations, and its report.
The datasets themselves stay in evals/ (data only)."""
