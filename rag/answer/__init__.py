"""Retrieved passages to a grounded, cited answer (offline or through an LLM)."""
