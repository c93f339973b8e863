"""Quantizes an ONNX text encoder's weight products to int8 with calibrated activation scales.

Run by `cargo xtask setup` (asset `minilm-onnx-int8`) and by `cargo xtask bench text` (the
XLM-R and reranker int8 graphs) in the hash-pinned venv of
xtask/requirements/python-onnx.txt, which has onnx, onnxruntime 1.31.1 and tokenizers:

    python quantize_minilm_onnx.py [--pairs] FP32_MODEL TOKENIZER_JSON OUT_MODEL

(`--pairs` for a cross-encoder, which reads two segments.)

Every `MatMul` whose second input is a weight matrix `[K, N]` becomes one
`com.microsoft.MatMulIntegerToFloat` with the bias that follows it fused:

- weights: int8, symmetric, one scale per output column, in [-64, 64];
- activations: uint8, one scale and zero point per tensor, fixed in the graph. They are
  calibrated here: the fp32 graph runs on the texts of `CALIBRATION_TEXTS` (or pairs of
  them, with `--pairs`) tokenized by TOKENIZER_JSON, and each product input's range
  over real (unpadded) tokens becomes its scale.

A text's vector therefore depends on that text only: not on what shares its call, the way
`onnxruntime.quantization.quantize_dynamic`'s per-call scales make it, and with none of the
per-row reductions that cost the earlier per-row graph most of its gain (docs/benchmarks.md,
*int8 MiniLM*). One range per tensor is only accurate once a few channels stop setting it.
Two passes see to that, both exact in real arithmetic:

- an input written by a layer norm is smoothed (SmoothQuant): channel k is divided by
  `s_k = max|x_k|^alpha / max|W_k|^(1 - alpha)` (alpha = `SMOOTHING`; `s` rounded to powers
  of two after dividing by their median, so the division and the weights' rows multiplied
  by `s_k` are exact) through one `Mul` node, which moves the normalized states' outlier
  channels into the weights;
- any other input (the GELU outputs, the attention's context) gives up its outlier
  channels, those above `OUTLIER_RATIO` times the median channel's calibrated magnitude:
  they skip quantization through a small fp32 product of theirs (`Gather` + `MatMul`),
  added to the integer one, and the tensor's range is taken over the other channels.

Before that, two constant shifts move out of the products' inputs into biases (exact, and
checked on a padded batch): a layer norm read only by weight products and residual sums
loses its bias `beta` into theirs, and each value projection's bias moves onto the attention
output product's bias (softmax rows sum to one), so that product's sum node goes.

Why [-64, 64]: x86 CPUs without VNNI multiply uint8 by int8 in pairs summed in saturating
16 bits; 2 x 255 x 64 = 32640 always fits, so every CPU computes the same exact integers.
The attention's products of two activations, the embeddings and the normalizations stay fp32.
Inputs and outputs are those of the fp32 graph, so the same preset and provider run it.

The output is byte-deterministic: the calibration runs single-threaded with ONNX Runtime's
graph rewrites off, and its figures are rounded before they become constants (ranges to
1/16 of their power of two, smoothing factors to powers of two), far coarser than the float
rounding any CPU adds; so the sha256 can be pinned in the spec. At the end the script runs
both graphs on the calibration batch and stops if the integer one strays (a misread graph
stops here, not in a model that quietly computes something else).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: Activation levels (uint8, one zero point per tensor).
ACTIVATION_LEVELS = 255.0
#: The largest weight magnitude (int8): 2 x 255 x 64 fits a signed 16-bit sum.
WEIGHT_LEVELS = 64.0
#: SmoothQuant's alpha for layer-norm outputs: 0.5-0.8 measured within 5e-4 of each other on
#: held-out text (docs/providers.md, *int8 MiniLM*); 0.65 the best of them.
SMOOTHING = 0.65
#: A channel of a non-normalized input is an outlier above this many median channels.
OUTLIER_RATIO = 4.0
#: Calibration truncates texts to this many tokens (MiniLM's and the presets' `max_length`).
MAX_TOKENS = 256
#: Texts per calibration run, sorted by length so that padding stays short.
CALIBRATION_BATCH = 8
#: ONNX Runtime's contrib operators.
CONTRIB = "com.microsoft"

#: What the activation ranges are measured on: varied registers, lengths, languages,
#: numbers, code and emoji. Written for this script; the test and reference sentences
#: (tests/data/reference) are not among them, so the accuracy measured there is held out.
CALIBRATION_TEXTS = [
    "The committee approved the new budget after a long debate.",
    "Please remember to water the plants while I am away.",
    "How many kilometres is it from the station to the harbour?",
    "Quarterly revenue rose 12.5% to $4.3 billion, beating estimates.",
    "She opened the window and let the cold air into the room.",
    "Error 404: the requested page could not be found on this server.",
    "In 1969, astronauts walked on the Moon for the first time.",
    "Heavy traffic delayed the buses on the northern ring road.",
    "Mix the flour, sugar and butter, then bake for twenty minutes.",
    "The museum displays paintings from the seventeenth century.",
    "Why does the printer keep jamming whenever I use thick paper?",
    "Our team will present the results at the conference in May.",
    "A small boat drifted slowly across the calm, silver lake.",
    "He forgot his umbrella, so he got soaked on the way home.",
    "The software update fixes several security vulnerabilities.",
    "Temperatures will drop below freezing overnight in the hills.",
    "Les enfants jouent dans le jardin pendant que leurs parents discutent.",
    "El tren llega a la estación central a las ocho de la mañana.",
    "Der Hund schläft neben dem warmen Ofen in der Küche.",
    "Я люблю читать книги вечером перед сном.",
    "今日はとても暑いので、冷たい飲み物が欲しいです。",
    "这个城市的公园在春天非常漂亮。",
    "WARNING: DO NOT OPEN THIS DOOR WHILE THE MACHINE IS RUNNING",
    "ok",
    "thanks!!!",
    "yes",
    "?",
    "see you at 10:30 tomorrow :)",
    "Version 2.7.1 was released on 2024-03-15 with 37 bug fixes.",
    "Call +1 (555) 010-2030 or email support@example.com for help.",
    "Great job everyone 🎉👏 — let's keep it going!",
    "#include <stdio.h> int main(void) { return 0; }",
    "SELECT name, price FROM products WHERE price > 100 ORDER BY name;",
    "The mitochondria is the powerhouse of the cell, producing ATP through respiration.",
    "Photosynthesis converts light energy into chemical energy stored in glucose molecules.",
    "Investors worried that rising interest rates would slow economic growth across the region, "
    "while analysts pointed to strong employment figures, resilient consumer spending and a "
    "recovering manufacturing sector as reasons for cautious optimism in the months ahead.",
    "The old lighthouse keeper climbed the spiral staircase every evening, lit the great lamp, "
    "and watched the ships pass through the narrow strait until dawn; over forty years he "
    "recorded storms, shipwrecks, rescues and the slow return of the seals to the rocky shore, "
    "filling dozens of notebooks that the town library still keeps in a glass cabinet today.",
    "Machine learning models are trained on large datasets and evaluated on held-out test sets "
    "to estimate how well they generalize; careful practitioners also track calibration, "
    "robustness to distribution shift, fairness across groups, latency, memory use and the "
    "cost of serving predictions, because accuracy alone rarely tells the whole story " * 3,
    "   extra   spaces   between   words   ",
    "a b c d e f g h i j k l m n o p",
]


class GraphIndex:
    """Who writes and who reads each value of a graph, and the questions both passes ask."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.initializers = {i.name: i for i in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in graph.output}

    def private_initializer(self, name: str) -> bool:
        """An initializer one node reads once: changing it changes only that node."""
        return name in self.initializers and len(self.consumers.get(name, [])) == 1

    def array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.initializers[name]).astype(np.float64)

    def weight_of(self, node) -> "np.ndarray | None":
        """A weight product's matrix, if `node` is one."""
        if node.op_type != "MatMul" or node.input[1] not in self.initializers:
            return None
        weight = self.initializers[node.input[1]]
        return self.array(weight.name) if len(weight.dims) == 2 else None

    def bias_after(self, node) -> "str | None":
        """The bias initializer of the `Add` that alone reads `node`'s output, read nowhere
        else (so changing it changes only this sum)."""
        readers = self.consumers.get(node.output[0], [])
        if len(readers) != 1 or node.output[0] in self.outputs:
            return None
        (add,) = readers
        if add.op_type != "Add" or add.input[0] != node.output[0]:
            return None
        bias = add.input[1]
        return bias if self.private_initializer(bias) else None

    def only_reader(self, name: str):
        readers = self.consumers.get(name, [])
        return readers[0] if len(readers) == 1 and name not in self.outputs else None


class ShiftFolder(GraphIndex):
    """Moves constant per-channel shifts out of the weight products' inputs into biases."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        super().__init__(graph)
        self.folded_norms = 0

    def layer_norm_shifts(self) -> dict:
        """`beta` of each layer norm read only by weight products and residual sums."""
        moves: dict = {}
        for norm in self.graph.node:
            if norm.op_type != "LayerNormalization" or len(norm.input) < 3 or not norm.input[2]:
                continue
            out = norm.output[0]
            if out in self.outputs or not self.private_initializer(norm.input[2]):
                continue
            beta = self.array(norm.input[2])
            plan = []
            for reader in self.consumers.get(out, []):
                weight = self.weight_of(reader)
                if weight is not None and reader.input[0] == out and (bias := self.bias_after(reader)):
                    plan.append((bias, beta @ weight))
                    continue
                if reader.op_type == "Add":
                    partner = reader.input[1] if reader.input[0] == out else reader.input[0]
                    sum_node = self.producer.get(partner)
                    if sum_node is not None and sum_node.op_type == "Add" and self.only_reader(partner) is reader:
                        if self.private_initializer(sum_node.input[1]):
                            plan.append((sum_node.input[1], beta))
                            continue
                plan = None
                break
            if plan:
                for bias, shift in plan:
                    moves[bias] = moves.get(bias, 0.0) + shift
                del norm.input[2]
                self.folded_norms += 1
        return moves

    def value_shifts(self, moves: dict) -> int:
        """The value bias of each attention, moved onto its output product's bias."""
        count = 0
        # A copy: the loop removes the value sums it folds from the graph.
        for product in list(self.graph.node):
            probabilities = self.producer.get(product.input[0]) if product.op_type == "MatMul" else None
            if probabilities is None or probabilities.op_type != "Softmax":
                continue
            values = product.input[1]
            while values in self.producer and self.producer[values].op_type in ("Reshape", "Transpose"):
                if self.only_reader(values) is None:
                    break
                values = self.producer[values].input[0]
            value_add = self.producer.get(values)
            if value_add is None or value_add.op_type != "Add" or self.only_reader(values) is None:
                continue
            value_bias = value_add.input[1]
            if not self.private_initializer(value_bias):
                continue
            value_product = self.producer.get(value_add.input[0])
            if value_product is None or self.only_reader(value_add.input[0]) is not value_add:
                continue
            reader = self.only_reader(product.output[0])
            while reader is not None and reader.op_type in ("Reshape", "Transpose"):
                reader = self.only_reader(reader.output[0])
            weight = self.weight_of(reader) if reader is not None else None
            output_bias = self.bias_after(reader) if weight is not None else None
            if output_bias is None:
                continue
            shift = self.array(value_bias) + moves.pop(value_bias, 0.0)
            moves[output_bias] = moves.get(output_bias, 0.0) + shift @ weight
            # The value sum goes: its product writes what the sum wrote.
            value_product.output[0] = value_add.output[0]
            self.graph.node.remove(value_add)
            count += 1
        return count

    def fold(self) -> tuple:
        """Folds every shift it can prove constant; returns (layer norms, attentions) folded."""
        moves = self.layer_norm_shifts()
        attentions = self.value_shifts(moves)
        for name, shift in moves.items():
            old = self.initializers[name]
            new = (self.array(name) + shift).astype(numpy_helper.to_array(old).dtype)
            old.CopyFrom(numpy_helper.from_array(new, name))
        return self.folded_norms, attentions


def check_folding_is_exact(original: bytes, folded: onnx.ModelProto) -> None:
    """Runs both fp32 graphs on one padded batch: the folding must not change what the
    graph computes beyond float rounding (a graph builder whose pattern it misreads stops
    here, not in a model that quietly computes something else)."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    ids = rng.integers(5, 100, (2, 11))
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    feeds = {}
    for value in folded.graph.input:
        name = value.name
        feeds[name] = mask if "mask" in name else np.zeros_like(ids) if "type" in name else ids
    options = ort.SessionOptions()
    options.log_severity_level = 3

    def run(model: bytes) -> list:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]).run(None, feeds)

    for want, got in zip(run(original), run(folded.SerializeToString())):
        diff = float(np.abs(want - got).max())
        if not diff <= 1e-4 * max(1.0, float(np.abs(want).max())):
            sys.exit(f"folding the shifts changed the fp32 graph's output by {diff}: not exact")




def session(model: onnx.ModelProto, exact: bool):
    """An ONNX Runtime session on the CPU; `exact`: one thread, no graph rewrites, so that
    the calibration's sums are taken in one order on every run."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if exact:
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def calibration_batches(graph: onnx.GraphProto, tokenizer_json: Path, pairs: bool) -> list:
    """The graph's feeds for the calibration texts, or for pairs of them (a cross-encoder
    reads two segments; single texts' ranges are narrower, which an embedder gains from),
    in batches of texts of similar length."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.no_padding()
    texts = list(CALIBRATION_TEXTS)
    if pairs:
        # Each text once as a query and once as a document.
        encodings = tokenizer.encode_batch(list(zip(texts, texts[1:] + texts[:1])))
    else:
        encodings = tokenizer.encode_batch(texts)
    encodings.sort(key=lambda e: len(e.ids))
    names = [value.name for value in graph.input]
    batches = []
    for start in range(0, len(encodings), CALIBRATION_BATCH):
        chunk = encodings[start : start + CALIBRATION_BATCH]
        width = max(len(e.ids) for e in chunk)
        fields = {"input_ids": np.zeros((len(chunk), width), np.int64)}
        fields["attention_mask"] = np.zeros_like(fields["input_ids"])
        fields["token_type_ids"] = np.zeros_like(fields["input_ids"])
        for row, e in enumerate(chunk):
            # Padded positions are masked: what their ids are never reaches a real token.
            fields["input_ids"][row, : len(e.ids)] = e.ids
            fields["attention_mask"][row, : len(e.ids)] = 1
            fields["token_type_ids"][row, : len(e.ids)] = e.type_ids
        unknown = [name for name in names if name not in fields]
        if unknown:
            sys.exit(f"the graph's inputs {unknown} are not text inputs this script can feed")
        batches.append({name: fields[name] for name in names})
    return batches


class InputRange:
    """The per-channel minima and maxima of one product input over real tokens."""

    def __init__(self, width: int) -> None:
        self.low = np.full(width, np.inf)
        self.high = np.full(width, -np.inf)

    def add(self, values: np.ndarray, mask: np.ndarray) -> None:
        if values.shape[:-1] == mask.shape:
            rows = values[mask.astype(bool)]
        else:
            # One row per text (a pooler's or a classifier's input): every row is real.
            rows = values.reshape(-1, values.shape[-1])
        rows = rows.astype(np.float64)
        self.low = np.minimum(self.low, rows.min(axis=0))
        self.high = np.maximum(self.high, rows.max(axis=0))

    def magnitude(self) -> np.ndarray:
        return np.maximum(np.abs(self.low), np.abs(self.high))


def coarse(value: float, up: bool) -> float:
    """`value` rounded outwards to 1/16 of its power of two: steps thousands of times
    coarser than the float differences another CPU's kernels make in the calibration."""
    if value == 0.0:
        return 0.0
    step = 2.0 ** (np.floor(np.log2(abs(value))) - 4)
    return float((np.ceil if up else np.floor)(value / step) * step)


class StaticQuantizer(GraphIndex):
    """Rewrites each weight product as an integer one with calibrated activation scales."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        super().__init__(graph)
        self.readers: dict = {}
        for node in graph.node:
            if self.weight_of(node) is not None:
                self.readers.setdefault(node.input[0], []).append(node)
        self.replaced: dict = {}
        self.dropped: set = set()
        self.new_initializers: list = []
        self.smoothed = 0
        self.outliers = 0

    def calibrate(self, model: onnx.ModelProto, batches: list) -> dict:
        """Each product input's range over the calibration batches."""
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        inputs = sorted(self.readers)
        known = {o.name for o in probe.graph.output}
        for name in inputs:
            if name not in known:
                probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
        runner = session(probe, exact=True)
        ranges = {name: InputRange(self.width(name)) for name in inputs}
        for feeds in batches:
            for name, values in zip(inputs, runner.run(inputs, feeds)):
                ranges[name].add(values, feeds["attention_mask"])
        return ranges

    def width(self, name: str) -> int:
        return int(self.initializers[self.readers[name][0].input[1]].dims[0])

    def constant(self, name: str, value) -> str:
        self.new_initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def rewrite(self, ranges: dict) -> int:
        count = 0
        for name, products in self.readers.items():
            count += self.quantize_input(name, products, ranges[name])
        nodes = []
        for node in self.graph.node:
            if node.op_type == "Add" and node.output[0] in self.dropped:
                continue
            nodes.extend(self.replaced.get(node.output[0], [node]))
        del self.graph.node[:]
        self.graph.node.extend(nodes)
        self.graph.initializer.extend(self.new_initializers)
        read = {name for node in self.graph.node for name in node.input}
        kept = [i for i in self.graph.initializer if i.name in read]
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept)
        return count

    def quantize_input(self, x: str, products: list, observed: InputRange) -> int:
        """The products reading `x` (Q, K and V read one), on one shared `QuantizeLinear`:
        smoothed if a layer norm writes `x`, else with its outlier channels in fp32."""
        p = f"q.{x}"
        weights = [self.weight_of(node) for node in products]
        width = weights[0].shape[0]
        magnitude = observed.magnitude()
        scale = np.ones(width)
        outliers = np.zeros(width, bool)
        quantized_input = x
        before = []  # nodes that run before the first product
        writer = self.producer.get(x)
        if writer is not None and writer.op_type == "LayerNormalization":
            reach = np.max([np.abs(w).max(axis=1) for w in weights], axis=0)
            factor = np.maximum(magnitude, 1e-5) ** SMOOTHING / np.maximum(reach, 1e-5) ** (1 - SMOOTHING)
            scale = np.exp2(np.round(np.log2(factor / np.median(factor))))
            quantized_input = f"{p}.smoothed"
            inverse = self.constant(f"{p}.inverse_smoothing", (1.0 / scale).astype(np.float32))
            before.append(helper.make_node("Mul", [x, inverse], [quantized_input]))
            self.smoothed += 1
        else:
            outliers = magnitude > OUTLIER_RATIO * np.median(magnitude)
            if outliers.any():
                columns = self.constant(f"{p}.outlier_channels", np.flatnonzero(outliers).astype(np.int64))
                before.append(helper.make_node("Gather", [x, columns], [f"{p}.outliers"], axis=-1))
                self.outliers += int(outliers.sum())
        kept = ~outliers
        low = coarse(min(float((observed.low[kept] / scale[kept]).min()), 0.0), up=False)
        high = coarse(max(float((observed.high[kept] / scale[kept]).max()), 0.0), up=True)
        step = np.float32((high - low) / ACTIVATION_LEVELS) if high > low else np.float32(1.0)
        zero = np.uint8(np.clip(np.round(-low / step), 0, ACTIVATION_LEVELS))
        step_name = self.constant(f"{p}.scale", step)
        zero_name = self.constant(f"{p}.zero_point", zero)
        u8 = f"{p}.u8"
        before.append(helper.make_node("QuantizeLinear", [quantized_input, step_name, zero_name], [u8]))
        for node, weight in zip(products, weights):
            q = f"q.{node.name or node.output[0]}"
            scaled = weight * scale[:, None]
            scaled[outliers] = 0.0
            column_scale = (np.maximum(np.abs(scaled).max(axis=0), 1e-12) / WEIGHT_LEVELS).astype(np.float32)
            levels = np.clip(np.round(scaled / column_scale), -WEIGHT_LEVELS, WEIGHT_LEVELS).astype(np.int8)
            inputs = [u8, self.constant(f"{q}.weight_i8", levels), step_name,
                      self.constant(f"{q}.weight_scale", column_scale), zero_name]
            bias = self.bias_after(node)
            out = node.output[0]
            if bias is not None:
                (add,) = self.consumers[node.output[0]]
                inputs += ["", bias]
                out = add.output[0]
                # The bias sum goes: the product writes what it wrote.
                self.dropped.add(out)
            emitted = list(before)
            before = []
            if outliers.any():
                side = helper.make_node(
                    "MatMul",
                    [f"{p}.outliers", self.constant(f"{q}.outlier_weight", weight[outliers].astype(np.float32))],
                    [f"{q}.outlier_product"],
                )
                integer = helper.make_node("MatMulIntegerToFloat", inputs, [f"{q}.integer"], domain=CONTRIB)
                emitted += [integer, side, helper.make_node("Add", [f"{q}.integer", f"{q}.outlier_product"], [out])]
            else:
                emitted.append(helper.make_node("MatMulIntegerToFloat", inputs, [out], domain=CONTRIB))
            self.replaced[node.output[0]] = emitted
        return len(products)


def check_quantized_graph(original: onnx.ModelProto, quantized: onnx.ModelProto, batches: list) -> str:
    """Runs both graphs on the calibration batches and stops if the integer one strays
    beyond what quantization does. Token states, mean-pooled: the smallest cosine between
    the two graphs' vectors; other outputs (a cross-encoder's scores): the correlation of
    all their values. Both must stay above 0.98 (measured 0.989 and above here)."""
    want_runner, got_runner = session(original, exact=False), session(quantized, exact=False)
    agreement: dict = {}
    others: dict = {}
    for feeds in batches:
        mask = feeds["attention_mask"][..., None].astype(np.float64)
        outputs = zip(want_runner.get_outputs(), want_runner.run(None, feeds), got_runner.run(None, feeds))
        for meta, want, got in outputs:
            if want.ndim == 3 and want.shape[:2] == mask.shape[:2]:
                a, b = (want * mask).sum(1), (got * mask).sum(1)
                norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
                cosine = float(((a * b).sum(1) / np.maximum(norms, 1e-12)).min())
                agreement[meta.name] = min(agreement.get(meta.name, 1.0), cosine)
            else:
                want_all, got_all = others.setdefault(meta.name, ([], []))
                want_all.append(want.ravel())
                got_all.append(got.ravel())
    for name, (want_all, got_all) in others.items():
        agreement[name] = float(np.corrcoef(np.concatenate(want_all), np.concatenate(got_all))[0, 1])
    text = ", ".join(f"{name} {value:.4f}" for name, value in sorted(agreement.items()))
    if not min(agreement.values()) >= 0.98:
        sys.exit(f"the quantized graph strays from the fp32 one on the calibration texts: {text} (< 0.98)")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", action="store_true", help="calibrate on text pairs (a cross-encoder)")
    parser.add_argument("source", type=Path, metavar="FP32_MODEL")
    parser.add_argument("tokenizer_json", type=Path, metavar="TOKENIZER_JSON")
    parser.add_argument("target", type=Path, metavar="OUT_MODEL")
    args = parser.parse_args()
    source, tokenizer_json, target, pairs = args.source, args.tokenizer_json, args.target, args.pairs
    model = onnx.load(source)
    original = onnx.ModelProto()
    original.CopyFrom(model)
    if not any(o.domain == CONTRIB for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(CONTRIB, 1))
    norms, attentions = ShiftFolder(model.graph).fold()
    check_folding_is_exact(original.SerializeToString(), model)
    batches = calibration_batches(model.graph, tokenizer_json, pairs)
    quantizer = StaticQuantizer(model.graph)
    ranges = quantizer.calibrate(model, batches)
    count = quantizer.rewrite(ranges)
    if count == 0:
        sys.exit(f"{source}: no MatMul with a weight matrix to quantize")
    onnx.checker.check_model(model)
    agreement = check_quantized_graph(original, model, batches)
    onnx.save(model, target)
    print(
        f"{count} weight products quantized; shifts folded: {norms} layer norm biases, {attentions} value biases; "
        f"{quantizer.smoothed} inputs smoothed, {quantizer.outliers} outlier channels in fp32; "
        f"agreement with fp32 on the calibration texts {agreement}"
    )


if __name__ == "__main__":
    main()
