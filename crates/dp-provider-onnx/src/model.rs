//! A loaded ONNX model: its sessions (one per graph), the check of their real
//! inputs/outputs against the spec, and inference on named tensors.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use dp_spec::{
    NamedTensors, Tensor, TensorDType, TensorData, TensorSpec, WorkerSlot, thread_share_size,
};
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Outlet, TensorElementType, TensorRef, ValueType};

use crate::SessionRecipe;
use crate::error::OnnxError;

/// A model loaded into ONNX Runtime sessions, one per graph (`.onnx` file).
pub(crate) struct OnnxModel {
    /// The model's name, for messages.
    name: String,
    /// The graphs, in `local_artifacts` order.
    graphs: Arc<[Graph]>,
    /// The sessions of the workers that split the threads, on the CPU.
    workers: Option<WorkerGraphs>,
}

/// Sessions of a CPU model's workers (the manager's `num_workers`): one set of graphs per
/// share of the threads, each with that share as its intra-op threads, built when a worker
/// first runs there. A session runs one call at a time, so without them the workers would
/// queue for the first sessions. Each set holds its own copy of the weights (ONNX
/// Runtime's prepacked-weights container, tried, saved 9 of MiniLM's 290 MB for two).
pub(crate) struct WorkerGraphs {
    recipe: SessionRecipe,
    /// By (shares, share).
    made: Mutex<HashMap<(usize, usize), Arc<ShareGraphs>>>,
}

/// One share's graphs, once built (each share has its own lock, so that building one
/// holds up no other).
type ShareGraphs = Mutex<Option<Arc<[Graph]>>>;

impl WorkerGraphs {
    /// The graphs of share `share` of `shares`, built on first use.
    fn share(&self, shares: usize, share: usize) -> Result<Arc<[Graph]>, OnnxError> {
        let slot = {
            let mut made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(made.entry((shares, share)).or_default())
        };
        // Built under the share's own lock: other shares' workers do not wait for it.
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(graphs) = &*slot {
            return Ok(Arc::clone(graphs));
        }
        let threads = thread_share_size(self.recipe.threads(), shares, share);
        let graphs: Arc<[Graph]> = self
            .recipe
            .sessions(Some(threads))?
            .into_iter()
            .map(Graph::new)
            .collect();
        *slot = Some(Arc::clone(&graphs));
        Ok(graphs)
    }
}

/// One graph of a model.
struct Graph {
    /// Its file, for messages.
    file: PathBuf,
    /// ort's `run` takes `&mut self`; ONNX Runtime parallelizes inside one run
    /// (intra-op threads), so runs on one session are serialized here (a model's workers
    /// each have sessions of their own: [`WorkerGraphs`]).
    session: Mutex<Session>,
    /// The graph's input names, in the graph's order.
    inputs: Vec<(String, TensorElementType)>,
}

impl Graph {
    fn new((file, session): (PathBuf, Session)) -> Self {
        let inputs = session
            .inputs()
            .iter()
            .map(|o| {
                let ty = match o.dtype() {
                    ValueType::Tensor { ty, .. } => *ty,
                    _ => TensorElementType::String,
                };
                (o.name().to_owned(), ty)
            })
            .collect();
        Self {
            file,
            session: Mutex::new(session),
            inputs,
        }
    }

    fn input_names(&self) -> Vec<&str> {
        self.inputs.iter().map(|(n, _)| n.as_str()).collect()
    }

    fn takes(&self, name: &str) -> bool {
        self.inputs.iter().any(|(n, _)| n == name)
    }
}

/// The ONNX element type of a spec dtype; `None` for types ONNX Runtime tensors here do
/// not carry (byte strings).
pub(crate) const fn element_type(dtype: TensorDType) -> Option<TensorElementType> {
    Some(match dtype {
        TensorDType::Fp32 => TensorElementType::Float32,
        TensorDType::Fp16 => TensorElementType::Float16,
        TensorDType::Bf16 => TensorElementType::Bfloat16,
        TensorDType::Int64 => TensorElementType::Int64,
        TensorDType::Int32 => TensorElementType::Int32,
        TensorDType::Int8 => TensorElementType::Int8,
        TensorDType::Uint8 => TensorElementType::Uint8,
        TensorDType::Bool => TensorElementType::Bool,
        TensorDType::Bytes => return None,
    })
}

/// Compares the model's real tensors (`actual`) with the spec's (`declared`): every
/// declared tensor must exist with the same element type, rank and fixed dimensions; for
/// inputs, every model input must be declared (the model cannot run without it).
///
/// With several graphs, `actual` holds the tensors of them all: a declared tensor may be
/// any graph's (the first graph having it is checked).
fn check_outlets(
    model: &str,
    kind: &str,
    declared: &[TensorSpec],
    actual: &[&Outlet],
    all_required: bool,
) -> Result<(), OnnxError> {
    let invalid = |msg: String| OnnxError::InvalidSpec(format!("model '{model}': {msg}"));
    for spec in declared {
        let Some(outlet) = actual.iter().find(|o| o.name() == spec.name) else {
            let names: Vec<&str> = actual.iter().map(|o| o.name()).collect();
            return Err(invalid(format!(
                "{kind} tensor '{}' is declared in the spec but the ONNX file has no such \
                 {kind} (it has {names:?}); fix {kind}_schema",
                spec.name
            )));
        };
        let ValueType::Tensor { ty, shape, .. } = outlet.dtype() else {
            return Err(invalid(format!(
                "{kind} '{}' is not a tensor in the ONNX file ({})",
                spec.name,
                outlet.dtype()
            )));
        };
        if element_type(spec.dtype) != Some(*ty) {
            return Err(invalid(format!(
                "{kind} tensor '{}' is {:?} in the spec but {ty} in the ONNX file; fix \
                 {kind}_schema",
                spec.name, spec.dtype
            )));
        }
        let dims: &[i64] = shape;
        let fits = dims.len() == spec.shape.len()
            && dims
                .iter()
                .zip(&spec.shape)
                .all(|(&real, &want)| real < 0 || want < 0 || real == want);
        if !fits {
            return Err(invalid(format!(
                "{kind} tensor '{}' has shape {:?} in the spec but {dims:?} in the ONNX file \
                 (-1 = dynamic); fix {kind}_schema",
                spec.name, spec.shape
            )));
        }
    }
    if all_required
        && !declared.is_empty()
        && let Some(missing) = actual
            .iter()
            .find(|o| !declared.iter().any(|d| d.name == o.name()))
    {
        return Err(invalid(format!(
            "the ONNX file needs {kind} tensor '{}' that {kind}_schema does not declare",
            missing.name()
        )));
    }
    Ok(())
}

impl OnnxModel {
    /// Wraps the sessions (one per graph, with its file) after checking them against the
    /// spec's schemas.
    pub(crate) fn new(
        name: &str,
        sessions: Vec<(PathBuf, Session)>,
        input_schema: &[TensorSpec],
        output_schema: &[TensorSpec],
        workers: Option<SessionRecipe>,
    ) -> Result<Self, OnnxError> {
        let inputs: Vec<&Outlet> = sessions.iter().flat_map(|(_, s)| s.inputs()).collect();
        let outputs: Vec<&Outlet> = sessions.iter().flat_map(|(_, s)| s.outputs()).collect();
        check_outlets(name, "input", input_schema, &inputs, true)?;
        check_outlets(name, "output", output_schema, &outputs, false)?;
        Ok(Self {
            name: name.to_owned(),
            graphs: sessions.into_iter().map(Graph::new).collect(),
            workers: workers.map(|recipe| WorkerGraphs {
                recipe,
                made: Mutex::default(),
            }),
        })
    }

    /// [`Self::infer`] as worker `slot` of the model's pool: on a CPU model with more than
    /// one worker and thread, a call that starts while others run does so on the sessions
    /// of the worker's share of the threads (`threads` split into `min(count, threads)`
    /// shares as evenly as they go, worker `index` on share `index mod shares`), so that
    /// workers run side by side instead of queueing for one session; a call that starts
    /// alone takes the model's own sessions and all their threads.
    pub(crate) fn infer_on(
        &self,
        inputs: &NamedTensors,
        slot: WorkerSlot,
    ) -> Result<NamedTensors, OnnxError> {
        let Some(workers) = &self.workers else {
            return self.infer(inputs);
        };
        let Some((share, shares)) = slot.thread_share(workers.recipe.threads(), 0) else {
            return self.infer(inputs);
        };
        let graphs = workers.share(shares, share)?;
        self.infer_graphs(&graphs, inputs)
    }

    /// Runs the model. Inputs are handed to ONNX Runtime as views of the caller's buffers
    /// (no copy); outputs are copied once out of ONNX Runtime's buffers into owned tensors.
    ///
    /// With several graphs, each graph whose inputs are all given runs, and their outputs
    /// are merged (an output name already returned by an earlier graph is not replaced).
    /// Every given input must be taken by a graph that runs: none is silently ignored.
    pub(crate) fn infer(&self, inputs: &NamedTensors) -> Result<NamedTensors, OnnxError> {
        self.infer_graphs(&self.graphs, inputs)
    }

    /// [`Self::infer`] on `graphs` (the model's own, or a worker's).
    fn infer_graphs(
        &self,
        graphs: &[Graph],
        inputs: &NamedTensors,
    ) -> Result<NamedTensors, OnnxError> {
        let invalid =
            |msg: String| OnnxError::InvalidInput(format!("model '{}': {msg}", self.name));
        if let [graph] = graphs {
            if let Some(extra) = inputs.keys().find(|k| !graph.takes(k)) {
                return Err(invalid(format!(
                    "no input named '{extra}' (the model takes {:?})",
                    graph.input_names()
                )));
            }
            return self.run(graph, inputs);
        }
        let describe = || {
            graphs
                .iter()
                .map(|g| format!("{} takes {:?}", g.file.display(), g.input_names()))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let runnable: Vec<&Graph> = graphs
            .iter()
            .filter(|g| g.inputs.iter().all(|(n, _)| inputs.contains_key(n)))
            .collect();
        if let Some(unused) = inputs.keys().find(|k| !runnable.iter().any(|g| g.takes(k))) {
            let problem = match graphs.iter().find(|g| g.takes(unused)) {
                None => format!("no input named '{unused}'"),
                Some(graph) => {
                    let missing: Vec<&str> = graph
                        .input_names()
                        .into_iter()
                        .filter(|n| !inputs.contains_key(*n))
                        .collect();
                    format!(
                        "input '{unused}' is for {}, which also needs {missing:?}",
                        graph.file.display()
                    )
                }
            };
            return Err(invalid(format!("{problem} ({})", describe())));
        }
        if runnable.is_empty() {
            return Err(invalid(format!(
                "no graph can run on the given inputs {:?} ({})",
                inputs.keys().collect::<Vec<_>>(),
                describe()
            )));
        }
        let mut result = NamedTensors::new();
        for graph in runnable {
            for (name, tensor) in self.run(graph, inputs)? {
                result.entry(name).or_insert(tensor);
            }
        }
        Ok(result)
    }

    /// Runs one graph on its inputs among `inputs` (which holds them all, or the graph's
    /// missing input is named).
    fn run(&self, graph: &Graph, inputs: &NamedTensors) -> Result<NamedTensors, OnnxError> {
        let invalid =
            |msg: String| OnnxError::InvalidInput(format!("model '{}': {msg}", self.name));
        let mut values: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(graph.inputs.len());
        for (name, ty) in &graph.inputs {
            let tensor = inputs
                .get(name)
                .ok_or_else(|| invalid(format!("input '{name}' is missing")))?;
            if element_type(tensor.dtype()) != Some(*ty) {
                return Err(invalid(format!(
                    "input '{name}' must be {ty}, got {:?}",
                    tensor.dtype()
                )));
            }
            values.push((
                Cow::Borrowed(name.as_str()),
                view(tensor).map_err(|e| invalid(format!("input '{name}': {e}")))?,
            ));
        }
        let mut session = graph
            .session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let outputs = session
            .run(values)
            .map_err(|e| OnnxError::Runtime(format!("model '{}': {e}", self.name)))?;
        let mut result = NamedTensors::new();
        for (name, value) in &outputs {
            result.insert(name.to_owned(), owned(name, &value)?);
        }
        Ok(result)
    }
}

/// A borrowed ONNX Runtime view of a tensor's buffer.
fn view(tensor: &Tensor) -> Result<SessionInputValue<'_>, ort::Error> {
    let shape: Vec<i64> = tensor
        .shape()
        .iter()
        .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
        .collect();
    Ok(match tensor.data() {
        TensorData::Fp32(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
        TensorData::Fp16(v) => {
            TensorRef::from_array_view((shape, v.as_slice().reinterpret_cast::<half::f16>()))?
                .into()
        }
        TensorData::Bf16(v) => {
            TensorRef::from_array_view((shape, v.as_slice().reinterpret_cast::<half::bf16>()))?
                .into()
        }
        TensorData::Int64(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
        TensorData::Int32(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
        TensorData::Int8(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
        TensorData::Uint8(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
        TensorData::Bool(v) => TensorRef::from_array_view((shape, v.as_slice()))?.into(),
        TensorData::Bytes(_) => {
            return Err(ort::Error::new(
                "byte-string tensors are not supported by this provider",
            ));
        }
    })
}

/// Copies an output out of ONNX Runtime's buffer.
fn owned(name: &str, value: &DynValue) -> Result<Tensor, OnnxError> {
    let runtime = |e: ort::Error| OnnxError::Runtime(format!("output '{name}': {e}"));
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(OnnxError::Runtime(format!(
            "output '{name}' is a {}, not a tensor",
            value.dtype()
        )));
    };
    macro_rules! extract {
        ($t:ty, $variant:ident, $map:expr) => {{
            let (shape, data) = value.try_extract_tensor::<$t>().map_err(runtime)?;
            (shape.to_vec(), TensorData::$variant($map(data)))
        }};
    }
    let (shape, data) = match ty {
        TensorElementType::Float32 => extract!(f32, Fp32, <[f32]>::to_vec),
        TensorElementType::Float16 => {
            extract!(half::f16, Fp16, |d: &[half::f16]| d
                .reinterpret_cast()
                .to_vec())
        }
        TensorElementType::Bfloat16 => {
            extract!(half::bf16, Bf16, |d: &[half::bf16]| d
                .reinterpret_cast()
                .to_vec())
        }
        TensorElementType::Int64 => extract!(i64, Int64, <[i64]>::to_vec),
        TensorElementType::Int32 => extract!(i32, Int32, <[i32]>::to_vec),
        TensorElementType::Int8 => extract!(i8, Int8, <[i8]>::to_vec),
        TensorElementType::Uint8 => extract!(u8, Uint8, <[u8]>::to_vec),
        TensorElementType::Bool => extract!(bool, Bool, <[bool]>::to_vec),
        other => {
            return Err(OnnxError::Runtime(format!(
                "output '{name}' has element type {other}, which this provider does not return"
            )));
        }
    };
    let shape = shape
        .into_iter()
        .map(|d| {
            usize::try_from(d).map_err(|_| {
                OnnxError::Runtime(format!("output '{name}' has a negative dimension"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Tensor::new(shape, data).map_err(|e| OnnxError::Runtime(e.message))
}
