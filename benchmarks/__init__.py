"""Speed and memory harness for FiffDepth inference (not tests): see bench_inference.py."""
