"""The pieces of bench/run: test images, mounts, workloads and the report."""
