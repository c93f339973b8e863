//! A BERT-family encoder (embeddings and transformer layers) on candle tensors, returning
//! the last hidden state or, for cross-encoders, a sequence-classification head's logits.
//!
//! BERT and (XLM-)RoBERTa share the encoder; they differ only in how positions are numbered
//! ([`Positions`]), the tensor prefix of task checkpoints (`bert.` / `roberta.`) and the
//! classification head ([`Family`]).
//!
//! Written here rather than taken from `candle-transformers` so that every weight is
//! checked against `config.json` with an error naming the file (instead of a panic or a
//! generic shape error), token type ids and the attention mask are honoured, and the
//! dependency tree stays small.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use safetensors::SafeTensors;

use crate::artifacts::{BertConfig, Family, Head, Positions, check_tensor};
use crate::error::CandleError;
use crate::layers::{
    Activation, AttentionMask, LayerNorm, Linear, WeightSource, in_row_groups, self_attention,
};

/// One transformer layer.
struct Layer {
    qkv: Linear,
    attention_out: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// A sequence-classification head: `out_proj(tanh(dense(h[:, 0])))` on the first token's
/// hidden state. BERT's is its pooler (`pooler.dense`) followed by `classifier`;
/// RoBERTa's is `classifier.dense` followed by `classifier.out_proj`: the same computation
/// under other names.
struct Classifier {
    /// `[hidden, hidden]`, followed by tanh.
    dense: Linear,
    /// `[num_labels, hidden]`.
    out_proj: Linear,
    /// Logits per row.
    num_labels: usize,
}

impl Classifier {
    /// `x`: the last hidden state `[batch * seq, hidden]` → logits `[batch, num_labels]`.
    fn forward(&self, x: &Tensor, b: usize, s: usize, h: usize) -> Result<Tensor, CandleError> {
        let first = x.reshape((b, s, h))?.narrow(1, 0, 1)?.reshape((b, h))?;
        let pooled = self.dense.forward(&first)?.tanh()?;
        self.out_proj.forward(&pooled)
    }
}

/// The encoder, with its classification head if the checkpoint has one.
pub(crate) struct Bert {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    token_type_embeddings: Tensor,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    positions: Positions,
    classifier: Option<Classifier>,
    activation: Activation,
    heads: usize,
    hidden: usize,
    dtype: DType,
    device: Device,
    vocab_size: usize,
    type_vocab_size: usize,
    max_positions: usize,
}

/// The inputs of one forward pass, already checked against the model's limits.
pub(crate) struct EncoderInput {
    /// `[batch, seq]` word-piece ids.
    pub(crate) input_ids: Vec<u32>,
    /// `[batch, seq]` segment ids.
    pub(crate) token_type_ids: Vec<u32>,
    /// `[batch, seq]`, true where a real token is.
    pub(crate) attention_mask: Vec<bool>,
    /// Rows.
    pub(crate) batch: usize,
    /// Columns.
    pub(crate) seq: usize,
}

impl EncoderInput {
    /// How many columns row `row` needs: up to its last real token (padding after it is
    /// never attended to, so cutting it changes no real token's state); at least one, so
    /// that a row of padding alone still has a shape.
    fn used_len(&self, row: usize) -> usize {
        self.attention_mask[row * self.seq..(row + 1) * self.seq]
            .iter()
            .rposition(|&real| real)
            .map_or(1, |last| last + 1)
    }

    /// The rows `rows` (by index, in that order), each cut to its first `seq` columns.
    fn select(&self, rows: &[usize], seq: usize) -> Self {
        /// Those rows' first `seq` cells of a `[batch, width]` table.
        fn cut<T: Copy>(cells: &[T], width: usize, rows: &[usize], seq: usize) -> Vec<T> {
            rows.iter()
                .flat_map(|&r| &cells[r * width..r * width + seq])
                .copied()
                .collect()
        }
        Self {
            input_ids: cut(&self.input_ids, self.seq, rows, seq),
            token_type_ids: cut(&self.token_type_ids, self.seq, rows, seq),
            attention_mask: cut(&self.attention_mask, self.seq, rows, seq),
            batch: rows.len(),
            seq,
        }
    }
}

impl Bert {
    /// Builds the encoder from validated weights, checking every tensor's shape.
    pub(crate) fn load(
        config: &BertConfig,
        config_path: &Path,
        tensors: &SafeTensors<'_>,
        weights_path: &Path,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, CandleError> {
        // Check everything first, so a broken file fails before any weight is copied.
        check_tensors(config, tensors, weights_path)?;
        let prefix = tensor_prefix(config, tensors);
        let src = WeightSource {
            tensors,
            file: weights_path,
            prefix,
            dtype,
            rounding: None,
            device,
        };
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        let word_embeddings =
            src.get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let position_embeddings = src.get(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, h],
        )?;
        let token_type_embeddings = src.get(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?;
        let embeddings_norm = LayerNorm::load(&src, "embeddings.LayerNorm", h, eps)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let q = Linear::load(&src, &format!("{p}.attention.self.query"), h, h)?;
            let k = Linear::load(&src, &format!("{p}.attention.self.key"), h, h)?;
            let v = Linear::load(&src, &format!("{p}.attention.self.value"), h, h)?;
            layers.push(Layer {
                qkv: Linear::fuse(&[q, k, v])?,
                attention_out: Linear::load(&src, &format!("{p}.attention.output.dense"), h, h)?,
                attention_norm: LayerNorm::load(
                    &src,
                    &format!("{p}.attention.output.LayerNorm"),
                    h,
                    eps,
                )?,
                intermediate: Linear::load(
                    &src,
                    &format!("{p}.intermediate.dense"),
                    config.intermediate_size,
                    h,
                )?,
                output: Linear::load(
                    &src,
                    &format!("{p}.output.dense"),
                    h,
                    config.intermediate_size,
                )?,
                output_norm: LayerNorm::load(&src, &format!("{p}.output.LayerNorm"), h, eps)?,
            });
        }
        let classifier = match config.head() {
            Head::Encoder => None,
            Head::SequenceClassification { num_labels } => {
                // The head's own tensors carry no prefix; BERT's pooler is the encoder's.
                let head = WeightSource { prefix: "", ..src };
                let [dense, out] = head_names(config.family(), prefix);
                Some(Classifier {
                    dense: Linear::load(&head, &dense, h, h)?,
                    out_proj: Linear::load(&head, &out, num_labels, h)?,
                    num_labels,
                })
            }
        };
        Ok(Self {
            word_embeddings,
            position_embeddings,
            token_type_embeddings,
            embeddings_norm,
            layers,
            positions: config.positions(),
            classifier,
            activation: config.activation(config_path)?,
            heads: config.num_attention_heads,
            hidden: h,
            dtype,
            device: device.clone(),
            vocab_size: config.vocab_size,
            type_vocab_size: config.type_vocab_size,
            max_positions: config.max_sequence(),
        })
    }

    /// Rows of the word embedding table.
    pub(crate) const fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Rows of the token type table.
    pub(crate) const fn type_vocab_size(&self) -> usize {
        self.type_vocab_size
    }

    /// The longest sequence the model takes (for RoBERTa, fewer than its position table's
    /// rows: the first `pad_token_id + 1` are never a real token's).
    pub(crate) const fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// Logits per row when the model has a sequence-classification head.
    pub(crate) fn num_labels(&self) -> Option<usize> {
        self.classifier.as_ref().map(|c| c.num_labels)
    }

    /// The shape of [`Self::forward`]'s output for `batch` rows of `seq` tokens:
    /// `[batch, seq, hidden]` for the encoder, `[batch, num_labels]` for a classifier.
    pub(crate) fn output_shape(&self, batch: usize, seq: usize) -> Vec<usize> {
        match self.num_labels() {
            None => vec![batch, seq, self.hidden],
            Some(labels) => vec![batch, labels],
        }
    }

    /// Runs the model; returns the last hidden state `[batch, seq, hidden]`, or the
    /// classifier's logits `[batch, num_labels]`, as f32 (see [`Self::output_shape`]).
    ///
    /// Rows run shortest first, in groups (see [`in_row_groups`]) each cut to its own
    /// longest row: a batch's padding costs only where rows of one group differ. The
    /// hidden states of padding are therefore zeros, whatever rows share the batch (every
    /// pooling skips them; transformers leaves values there that no one reads).
    /// 32 reranker pairs (two calls of 23 and 9 pairs, 22 and 27 tokens on average): 380
    /// → 410 pairs/s at 2 threads.
    pub(crate) fn forward(&self, input: &EncoderInput) -> Result<Vec<f32>, CandleError> {
        let cpu_f32 = self.device.is_cpu() && self.dtype == DType::F32;
        let lengths: Vec<usize> = (0..input.batch).map(|row| input.used_len(row)).collect();
        let mut order: Vec<usize> = (0..input.batch).collect();
        // Stable: rows of one length keep their order.
        order.sort_by_key(|&row| lengths[row]);
        let mean_len = lengths.iter().sum::<usize>().div_ceil(input.batch.max(1));
        let (seq, hidden) = (input.seq, self.hidden);
        let per_row = self.num_labels().unwrap_or(seq * hidden);
        let sorted = in_row_groups(input.batch, mean_len, cpu_f32, |group| {
            let rows = &order[group];
            let used = rows.iter().map(|&row| lengths[row]).max().unwrap_or(1);
            let out = self.forward_rows(&input.select(rows, used))?;
            if self.classifier.is_some() {
                return Ok(out);
            }
            // Back to the batch's columns, padding (cut or not) as zeros.
            let mut padded = vec![0.0; rows.len() * per_row];
            for ((&row, to), from) in rows
                .iter()
                .zip(padded.chunks_exact_mut(per_row))
                .zip(out.chunks_exact(used * hidden))
            {
                let mask = &input.attention_mask[row * seq..row * seq + used];
                for ((&real, to), from) in mask
                    .iter()
                    .zip(to.chunks_exact_mut(hidden))
                    .zip(from.chunks_exact(hidden))
                {
                    if real {
                        to.copy_from_slice(from);
                    }
                }
            }
            Ok(padded)
        })?;
        // Back to the input's order.
        let mut out = vec![0.0; sorted.len()];
        for (&row, values) in order.iter().zip(sorted.chunks_exact(per_row.max(1))) {
            out[row * per_row..(row + 1) * per_row].copy_from_slice(values);
        }
        Ok(out)
    }

    /// [`Self::forward`] on one group of rows.
    fn forward_rows(&self, input: &EncoderInput) -> Result<Vec<f32>, CandleError> {
        let (b, s, h) = (input.batch, input.seq, self.hidden);
        let x = self.encode(input)?;
        let out = match &self.classifier {
            None => x,
            Some(classifier) => classifier.forward(&x, b, s, h)?,
        };
        Ok(out.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    }

    /// The last hidden state `[batch * seq, hidden]`, at the model's dtype.
    fn encode(&self, input: &EncoderInput) -> Result<Tensor, CandleError> {
        let (b, s, h) = (input.batch, input.seq, self.hidden);
        let dev = &self.device;
        let ids = Tensor::from_slice(&input.input_ids, b * s, dev)?;
        let types = Tensor::from_slice(&input.token_type_ids, b * s, dev)?;
        let words = self.word_embeddings.index_select(&ids, 0)?;
        let segments = self.token_type_embeddings.index_select(&types, 0)?;
        let tokens = (words + segments)?;
        let embedded = match self.positions {
            // Every row has the same positions: one broadcast add.
            Positions::Absolute => tokens
                .reshape((b, s, h))?
                .broadcast_add(&self.position_embeddings.narrow(0, 0, s)?)?
                .reshape((b * s, h))?,
            Positions::Roberta { padding_idx } => {
                let positions = roberta_position_ids(&input.input_ids, s, padding_idx);
                let positions = Tensor::from_vec(positions, b * s, dev)?;
                (tokens + self.position_embeddings.index_select(&positions, 0)?)?
            }
        };
        let mut x = self.embeddings_norm.forward(&embedded)?;

        let mask = AttentionMask::new(Some(&input.attention_mask), false, (b, s), self.dtype, dev)?;
        for layer in &self.layers {
            x = self.layer_forward(layer, &x, &mask, b, s)?;
        }
        Ok(x)
    }

    fn layer_forward(
        &self,
        layer: &Layer,
        x: &Tensor,
        mask: &AttentionMask,
        b: usize,
        s: usize,
    ) -> Result<Tensor, CandleError> {
        let qkv = layer.qkv.forward(x)?;
        let context = self_attention(&qkv, (b, s), self.heads, mask)?;
        let attended = layer
            .attention_out
            .forward_with_residual(&context, Some(x))?;
        let attended = layer.attention_norm.forward(&attended)?;
        let inner = layer.intermediate.forward(&attended)?;
        let inner = self.activation.apply(inner)?;
        let out = layer
            .output
            .forward_with_residual(&inner, Some(&attended))?;
        layer.output_norm.forward(&out)
    }
}

/// RoBERTa's position ids for `[batch, seq]` token ids, as Hugging Face's
/// `create_position_ids_from_input_ids` computes them: `padding_idx + cumsum(id !=
/// padding_idx) * (id != padding_idx)` along each row. Real tokens are numbered from
/// `padding_idx + 1` wherever padding sits, so a text gets the same positions alone or
/// padded in a batch; padding tokens all get `padding_idx`.
pub(crate) fn roberta_position_ids(input_ids: &[u32], seq: usize, padding_idx: u32) -> Vec<u32> {
    let mut out = Vec::with_capacity(input_ids.len());
    for row in input_ids.chunks(seq.max(1)) {
        let mut real = 0;
        for &id in row {
            if id == padding_idx {
                out.push(padding_idx);
            } else {
                real += 1;
                // At most padding_idx + seq, below the position table's rows (checked
                // against max_sequence before a forward pass).
                out.push(padding_idx.saturating_add(real));
            }
        }
    }
    out
}

/// The name prefix of the encoder's tensors: `""` (the bare model, as sentence-transformers
/// saves it) or the family's task-head prefix, `"bert."` or `"roberta."`.
fn tensor_prefix(config: &BertConfig, tensors: &SafeTensors<'_>) -> &'static str {
    if tensors.tensor("embeddings.word_embeddings.weight").is_ok() {
        ""
    } else {
        match config.family() {
            Family::Bert => "bert.",
            Family::Roberta => "roberta.",
        }
    }
}

/// The full names of a classification head's two dense layers (without `.weight`/`.bias`):
/// the tanh layer, then the output projection.
fn head_names(family: Family, prefix: &str) -> [String; 2] {
    match family {
        Family::Bert => [format!("{prefix}pooler.dense"), "classifier".to_owned()],
        Family::Roberta => [
            "classifier.dense".to_owned(),
            "classifier.out_proj".to_owned(),
        ],
    }
}

/// Every tensor the model reads, with its full name and the shape `config.json` implies.
fn expected_tensors(config: &BertConfig, prefix: &str) -> Vec<(String, Vec<usize>)> {
    let h = config.hidden_size;
    let i = config.intermediate_size;
    let mut out = vec![
        (
            "embeddings.word_embeddings.weight".to_owned(),
            vec![config.vocab_size, h],
        ),
        (
            "embeddings.position_embeddings.weight".to_owned(),
            vec![config.max_position_embeddings, h],
        ),
        (
            "embeddings.token_type_embeddings.weight".to_owned(),
            vec![config.type_vocab_size, h],
        ),
        ("embeddings.LayerNorm.weight".to_owned(), vec![h]),
        ("embeddings.LayerNorm.bias".to_owned(), vec![h]),
    ];
    for layer in 0..config.num_hidden_layers {
        let p = format!("encoder.layer.{layer}");
        for (name, shape) in [
            ("attention.self.query", [h, h]),
            ("attention.self.key", [h, h]),
            ("attention.self.value", [h, h]),
            ("attention.output.dense", [h, h]),
            ("intermediate.dense", [i, h]),
            ("output.dense", [h, i]),
        ] {
            out.push((format!("{p}.{name}.weight"), shape.to_vec()));
            out.push((format!("{p}.{name}.bias"), vec![shape[0]]));
        }
        for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
            out.push((format!("{p}.{norm}.weight"), vec![h]));
            out.push((format!("{p}.{norm}.bias"), vec![h]));
        }
    }
    for (name, _) in &mut out {
        name.insert_str(0, prefix);
    }
    if let Head::SequenceClassification { num_labels } = config.head() {
        let [dense, out_proj] = head_names(config.family(), prefix);
        out.push((format!("{dense}.weight"), vec![h, h]));
        out.push((format!("{dense}.bias"), vec![h]));
        out.push((format!("{out_proj}.weight"), vec![num_labels, h]));
        out.push((format!("{out_proj}.bias"), vec![num_labels]));
    }
    out
}

/// Checks that every tensor the model reads is present with the right shape and a float
/// dtype, without copying any of them.
pub(crate) fn check_tensors(
    config: &BertConfig,
    tensors: &SafeTensors<'_>,
    file: &Path,
) -> Result<(), CandleError> {
    let prefix = tensor_prefix(config, tensors);
    for (name, shape) in expected_tensors(config, prefix) {
        check_tensor(tensors, &name, &shape, file)?;
    }
    Ok(())
}
