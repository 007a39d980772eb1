"""The video scenario of the benchmark: cameras through the mesh vs the same detector in one process.

``loadtests/scenarios/video.toml`` (kind ``video``) runs as part of ``python -m loadtests.bench``:

- :mod:`.media` decodes the sample clips as a camera keeps their frames, and builds the static scene of the change
  gate from real footage (``vtest.avi``'s median background with a real face crop pasted in at a known frame);
- :mod:`.runner` adds cameras (looping ``Megamind.avi`` files) through the stream registry, ramps them per mode,
  reads every ``FrameResult`` and the router's batch sizes, and runs the in-process baseline;
- :mod:`.baseline` is that baseline: PyAV decode, the mesh's own preprocess and postprocess functions, and
  onnxruntime on the ONNX file Triton serves, with the same threads;
- :mod:`.analysis` turns the results into rates, latency percentiles, drops, lag and batch sizes (pure);
- :mod:`.report` gives the summary keys, the targets, the section of ``docs/benchmarks.md`` and the plot.
"""
