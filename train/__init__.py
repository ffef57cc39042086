"""FiffDepth training and evaluation scripts (run from the repository root; not installed as a package)."""
