"""Triton python-backend model: runs ``model.onnx`` (next to this file) with onnxruntime.

The execution provider follows the instance: a ``KIND_GPU`` instance (``configs/gpu_python.pbtxt``) runs on
onnxruntime's CUDA provider on the instance's GPU when onnxruntime offers it (``onnxruntime-gpu`` installed), anything
else on the CPU provider (``config.pbtxt``, ``KIND_CPU``: local development and CI). The provider in use is logged.

Inputs and outputs are taken from ``config.pbtxt`` (their names are also the ONNX graph's names). Every ``execute``
call concatenates the inputs of all its requests (each may carry a batch of several items) into one array per input,
runs onnxruntime once and splits the outputs back per request. Inputs with variable dims (``-1``, e.g. token
sequences) are padded with zeros to the longest request of the call; a ``natriton.max_tokens`` parameter caps those
dims. A bad request gets its own error response; it never fails the others or crashes the stub.

The same file serves every ONNX model here: each `<model>/1/model.py` is a symlink to it.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def execution_providers(args, available):
    """onnxruntime providers for this instance: CUDA on the instance's GPU (CPU as fallback for unsupported nodes)
    when the instance is ``KIND_GPU`` and onnxruntime offers ``CUDAExecutionProvider``; else CPU only."""
    if args.get("model_instance_kind") == "GPU" and "CUDAExecutionProvider" in available:
        device = int(args.get("model_instance_device_id") or 0)
        return [("CUDAExecutionProvider", {"device_id": device}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def describe(provider):
    """A provider as logged: its name, with the device for CUDA."""
    if isinstance(provider, tuple):
        name, options = provider
        return f"{name}(device_id={options.get('device_id', 0)})" if "device_id" in options else name
    return provider


class TritonPythonModel:
    """Generic onnxruntime model: config inputs -> one batched session.run -> config outputs."""

    def initialize(self, args):
        """Load the ONNX file with the thread count from the ``onnx.intra_op_threads`` config parameter."""
        config = json.loads(args["model_config"])
        params = config.get("parameters", {})
        threads = int(params.get("onnx.intra_op_threads", {}).get("string_value", "1") or 1)
        max_tokens = params.get("natriton.max_tokens", {}).get("string_value", "")
        self.max_variable = int(max_tokens) if max_tokens else None
        # (name, numpy dtype, dims without the batch dim)
        self.inputs = [
            (i["name"], pb_utils.triton_string_to_numpy(i["data_type"]), tuple(int(d) for d in i["dims"]))
            for i in config["input"]
        ]
        self.outputs = [(o["name"], pb_utils.triton_string_to_numpy(o["data_type"])) for o in config["output"]]

        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(
                f"{path} not found: run `python model_repository/build.py` to generate it"
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        providers = execution_providers(args, ort.get_available_providers())
        self.session = ort.InferenceSession(path, opts, providers=providers)
        pb_utils.Logger.log_info(
            f"{args['model_name']} instance {args.get('model_instance_name', '')}: onnxruntime "
            f"{ort.__version__} runs {path} on {', '.join(describe(p) for p in self.session.get_providers())} "
            f"(requested {', '.join(describe(p) for p in providers)})"
        )
        onnx_inputs = {i.name for i in self.session.get_inputs()}
        onnx_outputs = {o.name for o in self.session.get_outputs()}
        missing = [n for n, _, _ in self.inputs if n not in onnx_inputs]
        missing += [n for n, _ in self.outputs if n not in onnx_outputs]
        if missing or len(onnx_inputs) != len(self.inputs):
            raise pb_utils.TritonModelException(
                f"config.pbtxt and {path} disagree: ONNX inputs {sorted(onnx_inputs)}, outputs {sorted(onnx_outputs)}"
            )
        self.output_names = [n for n, _ in self.outputs]

    def _error(self, message):
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))

    def _read(self, request):
        """The request's input arrays (in config order) and their batch size; raise ValueError when invalid."""
        arrays = []
        variable = None  # extents of the -1 dims, which must agree across the inputs of one request
        for name, dtype, dims in self.inputs:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"missing input {name}")
            array = tensor.as_numpy()
            if array.dtype != dtype:
                raise ValueError(f"{name} must be {np.dtype(dtype).name}, got {array.dtype}")
            shape = array.shape[1:]
            if array.ndim != len(dims) + 1 or any(d != -1 and d != s for d, s in zip(dims, shape, strict=True)):
                raise ValueError(f"{name} must have shape [N,{','.join(map(str, dims))}], got {list(array.shape)}")
            extents = tuple(s for d, s in zip(dims, shape, strict=True) if d == -1)
            if variable is not None and extents != variable:
                raise ValueError(f"inputs of one request disagree on their variable dims: {variable} vs {extents}")
            if self.max_variable is not None and any(e > self.max_variable for e in extents):
                raise ValueError(f"{name}: at most {self.max_variable} along variable dims, got {list(array.shape)}")
            variable = extents
            arrays.append(array)
        sizes = {a.shape[0] for a in arrays}
        if len(sizes) != 1:
            raise ValueError(f"inputs have different batch sizes {sorted(sizes)}")
        return arrays, sizes.pop()

    @staticmethod
    def _stack(parts):
        """Concatenate along the batch axis, zero-padding every other axis to the largest extent."""
        if len(parts) == 1:
            return parts[0]
        target = np.max([p.shape for p in parts], axis=0)
        padded = [
            p
            if tuple(p.shape[1:]) == tuple(target[1:])
            else np.pad(p, [(0, 0)] + [(0, t - s) for s, t in zip(p.shape[1:], target[1:], strict=True)])
            for p in parts
        ]
        return np.concatenate(padded, axis=0)

    def execute(self, requests):
        """Run all requests as one onnxruntime batch; return one response per request, in order."""
        responses = [None] * len(requests)
        batches = []  # per valid request: list of input arrays
        owners = []  # (index into requests, batch size)
        for i, request in enumerate(requests):
            try:
                arrays, n = self._read(request)
                batches.append(arrays)
                owners.append((i, n))
            except Exception as exc:  # one bad request must not fail the others
                responses[i] = self._error(str(exc))

        if batches:
            try:
                feed = {
                    name: self._stack([arrays[k] for arrays in batches]) for k, (name, _, _) in enumerate(self.inputs)
                }
                results = self.session.run(self.output_names, feed)
                results = [np.ascontiguousarray(r, dtype=dt) for r, (_, dt) in zip(results, self.outputs, strict=True)]
                start = 0
                for i, n in owners:
                    tensors = [
                        pb_utils.Tensor(name, r[start : start + n])
                        for name, r in zip(self.output_names, results, strict=True)
                    ]
                    responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                    start += n
            except Exception as exc:  # report to every request of the batch instead of crashing
                for i, _ in owners:
                    responses[i] = self._error(f"inference failed: {exc}")
        return responses

    def finalize(self):
        """Release the onnxruntime session."""
        self.session = None
