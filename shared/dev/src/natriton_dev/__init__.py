"""Local launchers for real servers (tritonserver, …) used by tests, the demo and benchmarks."""
