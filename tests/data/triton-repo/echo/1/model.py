"""Echoes each input as <name>_out, unchanged."""

import triton_python_backend_utils as pb_utils

NAMES = ["f32", "f16", "i64", "i32", "u8", "flag", "text"]


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            outputs = [
                pb_utils.Tensor(f"{name}_out", pb_utils.get_input_tensor_by_name(request, name).as_numpy())
                for name in NAMES
            ]
            responses.append(pb_utils.InferenceResponse(outputs))
        return responses
