"""Repository tooling (not installed with the package): ``python -m scripts.bench``."""
