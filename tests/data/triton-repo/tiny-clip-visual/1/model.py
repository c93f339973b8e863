"""A CLIP image tower through onnxruntime: the ONNX file named by the `onnx_path` parameter."""

import json

import onnxruntime as ort
import triton_python_backend_utils as pb_utils

OUTPUTS = ["image_embeds", "logit_scale"]


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        path = config["parameters"]["onnx_path"]["string_value"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        responses = []
        for request in requests:
            pixels = pb_utils.get_input_tensor_by_name(request, "pixel_values").as_numpy()
            values = self.session.run(OUTPUTS, {"pixel_values": pixels})
            tensors = [pb_utils.Tensor(name, value) for name, value in zip(OUTPUTS, values)]
            responses.append(pb_utils.InferenceResponse(tensors))
        return responses
