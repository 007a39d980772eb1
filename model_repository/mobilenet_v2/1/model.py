"""Triton python-backend model: runs ``model.onnx`` (next to this file) with onnxruntime on CPU.

Every ``execute`` call concatenates the inputs of all its requests (each may carry a batch of several images) into
one array, runs onnxruntime once and splits the outputs back per request. A bad request gets its own error response;
it never fails the others or crashes the stub.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """MobileNetV2 classifier: IMAGE uint8 [N,224,224,3] -> LOGITS fp32 [N,1000]."""

    def initialize(self, args):
        """Load the ONNX file with the thread count from the ``onnx.intra_op_threads`` config parameter."""
        config = json.loads(args["model_config"])
        params = config.get("parameters", {})
        threads = int(params.get("onnx.intra_op_threads", {}).get("string_value", "1") or 1)
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.input_dims = tuple(int(d) for d in config["input"][0]["dims"])
        self.output_dtype = pb_utils.triton_string_to_numpy(config["output"][0]["data_type"])

        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(
                f"{path} not found: run `python model_repository/build.py` to generate it"
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.onnx_input = self.session.get_inputs()[0].name
        self.onnx_output = self.session.get_outputs()[0].name

    def _error(self, message):
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message))

    def execute(self, requests):
        """Run all requests as one onnxruntime batch; return one response per request, in order."""
        responses = [None] * len(requests)
        arrays = []
        owners = []  # (index into requests, batch size)
        for i, request in enumerate(requests):
            try:
                tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
                if tensor is None:
                    raise ValueError(f"missing input {self.input_name}")
                array = tensor.as_numpy()
                if array.dtype != np.uint8:
                    raise ValueError(f"{self.input_name} must be UINT8, got {array.dtype}")
                if array.ndim != len(self.input_dims) + 1 or tuple(array.shape[1:]) != self.input_dims:
                    raise ValueError(
                        f"{self.input_name} must have shape [N,{','.join(map(str, self.input_dims))}], "
                        f"got {list(array.shape)}"
                    )
                arrays.append(array)
                owners.append((i, array.shape[0]))
            except Exception as exc:  # one bad request must not fail the others
                responses[i] = self._error(str(exc))

        if arrays:
            try:
                batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
                (outputs,) = self.session.run([self.onnx_output], {self.onnx_input: batch})
                outputs = np.ascontiguousarray(outputs, dtype=self.output_dtype)
                start = 0
                for i, n in owners:
                    out = pb_utils.Tensor(self.output_name, outputs[start : start + n])
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[out])
                    start += n
            except Exception as exc:  # report to every request of the batch instead of crashing
                for i, _ in owners:
                    responses[i] = self._error(f"inference failed: {exc}")
        return responses

    def finalize(self):
        """Release the onnxruntime session."""
        self.session = None
