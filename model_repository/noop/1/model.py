"""Triton python-backend model that does nothing: ``DATA`` uint8 [N, L] -> ``SIZE`` int32 [N, 1] = L.

Kept as cheap as possible for transport benchmarks: no validation beyond what Triton does from config.pbtxt (dtype,
rank, batch size), no copy of the payload (``as_numpy`` is a view of the shared-memory input), one small output per
request. Every request of an ``execute`` call is answered in the same call.
"""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """DATA uint8 [N,-1] -> SIZE int32 [N,1] (bytes per item)."""

    def execute(self, requests):
        """One response per request, in order."""
        responses = []
        for request in requests:
            shape = pb_utils.get_input_tensor_by_name(request, "DATA").as_numpy().shape
            size = np.full((shape[0], 1), shape[1] if len(shape) > 1 else 0, dtype=np.int32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("SIZE", size)]))
        return responses
