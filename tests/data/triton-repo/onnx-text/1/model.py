"""Any ONNX text model through onnxruntime: the ONNX file named by the `onnx_path` parameter.

The model's inputs and outputs are the graph's own: `auto_complete_config` declares them in
the model configuration (Triton fills the config from it at load), and `execute` feeds every
graph input from the request and returns every graph output.
"""

import json

import onnxruntime as ort
import triton_python_backend_utils as pb_utils

# onnxruntime's element types and Triton's.
DATA_TYPES = {
    "tensor(int64)": "TYPE_INT64",
    "tensor(int32)": "TYPE_INT32",
    "tensor(float)": "TYPE_FP32",
    "tensor(float16)": "TYPE_FP16",
    "tensor(bool)": "TYPE_BOOL",
}


def open_session(config):
    path = config["parameters"]["onnx_path"]["string_value"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def tensor_config(arg):
    if arg.type not in DATA_TYPES:
        raise pb_utils.TritonModelException(f"{arg.name}: element type {arg.type} not served")
    # A named (symbolic) or unknown axis is dynamic.
    dims = [d if isinstance(d, int) and d > 0 else -1 for d in arg.shape]
    return {"name": arg.name, "data_type": DATA_TYPES[arg.type], "dims": dims}


class TritonPythonModel:
    @staticmethod
    def auto_complete_config(auto_complete_model_config):
        session = open_session(auto_complete_model_config.as_dict())
        for arg in session.get_inputs():
            auto_complete_model_config.add_input(tensor_config(arg))
        for arg in session.get_outputs():
            auto_complete_model_config.add_output(tensor_config(arg))
        return auto_complete_model_config

    def initialize(self, args):
        self.session = open_session(json.loads(args["model_config"]))
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests):
        responses = []
        for request in requests:
            feed = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs}
            values = self.session.run(self.outputs, feed)
            tensors = [pb_utils.Tensor(name, value) for name, value in zip(self.outputs, values)]
            responses.append(pb_utils.InferenceResponse(tensors))
        return responses
