"""Command-line tools: demo, benchmarks, trainer, pod and test runners (importable: ``python -m scripts.X``)."""
