"""all-MiniLM-L6-v2 through onnxruntime: the ONNX file named by the `onnx_path` parameter."""

import json

import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        path = config["parameters"]["onnx_path"]["string_value"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = 2
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def execute(self, requests):
        responses = []
        for request in requests:
            feed = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}
            (hidden,) = self.session.run(["last_hidden_state"], feed)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("last_hidden_state", hidden)]))
        return responses
