//! f32 CPU kernels of the encoders (Whisper's, BERT's): attention computed in blocks of
//! query rows with an in-place softmax, a scaled and masked softmax in place, an in-place
//! exact GELU, and a dense layer's bias (and residual) added in place.
//!
//! Why they exist (measured on whisper-base shapes, 2 threads, `perf record`): with candle's
//! own operations the encoder took ~1.8× PyTorch's time. Its self-attention materialised an
//! `[heads, 1500, 1500]` score tensor (72 MB) per layer and a second one for the softmax's
//! output, both fresh allocations whose page faults and zeroing took ~10 % of the samples;
//! `softmax_last_dim`'s scalar `expf` took another 9–10 % and the scalar `erff` of the exact
//! GELU 5 %. Here the scores exist for one block of queries at a time (a quarter of them)
//! and are normalised where they are, and `exp` and `erf` are branch-free polynomials over
//! plain lanes that the compiler vectorises (no `unsafe`, no intrinsics). The encoder with
//! one decoder step went from 1.54 s to 0.90 s on an idle machine, token ids unchanged.
//! BERT (MiniLM, 32 short texts) spent 14.7 % of its samples in the scalar exact GELU and
//! ~17 % waiting at candle's barriers: each of candle's element-wise operations of 64 Ki
//! elements or more (a bias, a residual, the GELU) runs on candle's own barrier pool, whose
//! workers spin after it and take the cores from `gemm`'s rayon threads. These kernels run
//! on rayon's pool, the one `gemm` uses, and write into the product they follow.

use candle_core::{CpuStorage, DType, InplaceOp1, InplaceOp2, Layout, Tensor};
use rayon::prelude::*;

/// Query rows per block of [`blocked_attention`]. The scores of one block, all heads, are
/// `heads × QUERY_BLOCK × keys` floats (18 MB at 8 heads and 1500 keys). Measured on
/// whisper-base shapes (encoder and one decoder step, 2 threads): 128–300 rows took
/// 1.0 s, 375–500 rows 0.90 s, 750 rows and more 1.15 s; at 384 glibc's allocator keeps
/// reusing the encoder's large buffers instead of mapping them afresh (page faults per
/// call 72 k at 256 rows, 28 k at 384), and each matmul is large enough for both threads.
const QUERY_BLOCK: usize = 384;

/// Lanes of the partial sums and maxima: two SSE registers, so the reductions vectorise.
const LANES: usize = 8;

/// Elements per rayon task of the element-wise kernels.
const CHUNK: usize = 1 << 14;

/// Whether `t` can take the kernels of this module: f32 on the CPU.
pub(crate) fn fits(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// `softmax(q kᵀ) v` for `q` `[batch, heads, q_len, head_dim]` and `k`, `v`
/// `[batch, heads, k_len, head_dim]` (f32, CPU), `QUERY_BLOCK` query rows at a time:
/// `[batch, heads, q_len, head_dim]`.
pub(crate) fn blocked_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
    let q_len = q.dim(2)?;
    let keys_t = k.t()?;
    let mut blocks = Vec::with_capacity(q_len.div_ceil(QUERY_BLOCK));
    for start in (0..q_len).step_by(QUERY_BLOCK) {
        let rows = QUERY_BLOCK.min(q_len - start);
        let scores = q.narrow(2, start, rows)?.matmul(&keys_t)?;
        scores.inplace_op1(&SoftmaxInPlace)?;
        blocks.push(scores.matmul(v)?);
    }
    Tensor::cat(&blocks, 2)
}

/// `weight` `[rows, cols]` as a contiguous `[cols, rows]` tensor: by rayon's threads, a
/// band of output rows per task, on contiguous f32 CPU tensors (candle's strided copy runs
/// on one thread: transposing MiniLM's weights that way added 20 ms to a 65 ms load);
/// with candle's operations otherwise.
pub(crate) fn transposed(weight: &Tensor) -> candle_core::Result<Tensor> {
    /// Output rows per task: each source row is read `BAND` values at a time.
    const BAND: usize = 16;
    if !(fits(weight) && weight.is_contiguous()) {
        return weight.t()?.contiguous();
    }
    let (rows, cols) = weight.dims2()?;
    let mut out = vec![0.0_f32; rows * cols];
    {
        let (storage, layout) = weight.storage_and_layout();
        let candle_core::Storage::Cpu(CpuStorage::F32(values)) = &*storage else {
            candle_core::bail!("transposed takes f32 on the CPU");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("transposed takes a contiguous tensor");
        };
        let source = &values[start..end];
        out.par_chunks_mut((BAND * rows).max(1))
            .enumerate()
            .for_each(|(band, chunk)| {
                let first = band * BAND;
                let width = chunk.len() / rows.max(1);
                for (r, line) in source.chunks_exact(cols.max(1)).enumerate() {
                    for (k, &value) in line[first..first + width].iter().enumerate() {
                        chunk[k * rows + r] = value;
                    }
                }
            });
    }
    Tensor::from_vec(out, (cols, rows), weight.device())
}

/// `softmax(q kᵀ · scale + key_bias) v` for `q`, `k`, `v` `[batch, heads, seq, head_dim]`
/// and `key_bias` `[batch, seq]` (f32, CPU; none: every key is real), each query kept from
/// later keys when `causal` (as [`scaled_softmax_in_place`]), one batch item per rayon
/// task.
///
/// candle multiplies a batch of matrices one after the other, each product split over
/// every thread: on MiniLM with 32 texts of 256 tokens that is 384 products of
/// 256×32×256 per layer, each a wake-up and a wait of the pool, and a `[32, 12, 256, 256]`
/// score tensor (100 MB) written, normalized and read back. Here each task runs one item's
/// heads (its products find the pool busy and run on the task's thread) and its scores
/// (3 MB) are freed before the next item's. Measured there: 22 → 27.5 texts/s; one task
/// per head instead was slower (24.8/s, and 25 % slower on short texts).
pub(crate) fn attention_per_item(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f32,
    key_bias: Option<&[f32]>,
    causal: bool,
) -> candle_core::Result<Tensor> {
    let (batch, _, seq, _) = q.dims4()?;
    if let Some(key_bias) = key_bias
        && key_bias.len() != batch * seq
    {
        candle_core::bail!(
            "key bias of {} values for {batch} rows of {seq} keys",
            key_bias.len()
        );
    }
    let items = (0..batch)
        .into_par_iter()
        .map(|i| {
            let scores = q.get(i)?.matmul(&k.get(i)?.t()?)?.unsqueeze(0)?;
            let bias = key_bias.map(|b| &b[i * seq..(i + 1) * seq]);
            scaled_softmax_in_place(&scores, scale, bias, causal)?;
            scores.squeeze(0)?.matmul(&v.get(i)?)
        })
        .collect::<candle_core::Result<Vec<Tensor>>>()?;
    Tensor::stack(&items, 0)
}

/// Applies the exact (erf) GELU to `t` in place; `t` must be contiguous f32 on the CPU
/// and own its storage (a fresh result, no view of another tensor).
fn gelu_erf_in_place(t: &Tensor) -> candle_core::Result<()> {
    t.inplace_op1(&MapInPlace {
        name: "gelu-erf-in-place",
        f: gelu_erf,
    })
}

/// The exact GELU of `xs`, a fresh result (no other tensor shares its storage): in place by
/// the vectorised kernel on contiguous f32 CPU tensors, else candle's `gelu_erf`.
pub(crate) fn exact_gelu(xs: Tensor) -> candle_core::Result<Tensor> {
    if fits(&xs) && xs.is_contiguous() {
        gelu_erf_in_place(&xs)?;
        Ok(xs)
    } else {
        xs.gelu_erf()
    }
}

/// `softmax(scores · scale + key_bias)` over the last dimension, in place, for `scores`
/// `[batch, heads, q_len, k_len]` (contiguous f32 on the CPU, owning its storage) and
/// `key_bias` `[batch, k_len]` (0 for a real key, a large negative number for padding;
/// none: every key is real): the same arithmetic, in the same order, as scaling, adding
/// and then taking the softmax. When `causal`, query `i` (`q_len == k_len`) is also kept
/// from every key after `i`: such a score becomes `f32::MIN`,
/// the value a decoder's additive mask gives it (set, not added, so that a key both
/// padded and in the future does not overflow to -∞).
pub(crate) fn scaled_softmax_in_place(
    scores: &Tensor,
    scale: f32,
    key_bias: Option<&[f32]>,
    causal: bool,
) -> candle_core::Result<()> {
    let (batch, heads, q_len, k_len) = scores.dims4()?;
    if let Some(key_bias) = key_bias
        && key_bias.len() != batch * k_len
    {
        candle_core::bail!(
            "key bias of {} values for {batch} rows of {k_len} keys",
            key_bias.len()
        );
    }
    if causal && q_len != k_len {
        candle_core::bail!("a causal mask for {q_len} queries of {k_len} keys");
    }
    scores.inplace_op1(&ScaledMaskedSoftmax {
        scale,
        key_bias,
        rows_per_item: heads * q_len,
        q_len: causal.then_some(q_len),
    })
}

/// OpenAI CLIP's `quick_gelu`, `x · sigmoid(1.702 x)`, of `xs`, a fresh result (no other
/// tensor shares its storage): in place by a vectorised kernel on contiguous f32 CPU
/// tensors, else with candle's operations.
pub(crate) fn quick_gelu(xs: Tensor) -> candle_core::Result<Tensor> {
    if fits(&xs) && xs.is_contiguous() {
        xs.inplace_op1(&MapInPlace {
            name: "quick-gelu-in-place",
            f: quick_gelu_value,
        })?;
        Ok(xs)
    } else {
        &xs * candle_nn::ops::sigmoid(&(&xs * QUICK_GELU_SLOPE)?)?
    }
}

/// The slope of `quick_gelu`'s sigmoid.
const QUICK_GELU_SLOPE: f64 = 1.702;

/// The contiguous f32 values of an in-place operation's storage.
fn f32_values<'a>(
    storage: &'a mut CpuStorage,
    layout: &Layout,
    name: &str,
) -> candle_core::Result<&'a mut [f32]> {
    let CpuStorage::F32(values) = storage else {
        candle_core::bail!("{name} takes f32 only");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{name} takes a contiguous tensor");
    };
    Ok(&mut values[start..end])
}

/// Softmax over the last dimension, in place.
struct SoftmaxInPlace;

impl InplaceOp1 for SoftmaxInPlace {
    fn name(&self) -> &'static str {
        "softmax-last-dim-in-place"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let width = layout.dims().last().copied().unwrap_or(1).max(1);
        f32_values(storage, layout, self.name())?
            .par_chunks_mut(width * rows_per_task(width))
            .for_each(|rows| vectorized(SoftmaxRows { width, rows }));
        Ok(())
    }
}

/// `ys[row] += bias` for every row of `ys` (`[.., bias.len()]`, contiguous f32 on the CPU,
/// owning its storage), then `ys += residual` where one is given (contiguous f32 of the
/// same shape): a dense layer's bias and a residual connection with the arithmetic, and
/// its order, of `(ys + bias) + residual`.
pub(crate) fn add_bias_in_place(
    ys: &Tensor,
    bias: &[f32],
    residual: Option<&Tensor>,
) -> candle_core::Result<()> {
    if ys.dims().last() != Some(&bias.len()) {
        candle_core::bail!(
            "a bias of {} values for rows of {:?}",
            bias.len(),
            ys.dims()
        );
    }
    let op = BiasAdd { bias };
    match residual {
        None => ys.inplace_op1(&op),
        Some(residual) => {
            if residual.dims() != ys.dims() {
                candle_core::bail!("a residual of {:?} for {:?}", residual.dims(), ys.dims());
            }
            ys.inplace_op2(residual, &op)
        }
    }
}

/// See [`add_bias_in_place`].
struct BiasAdd<'a> {
    bias: &'a [f32],
}

impl BiasAdd<'_> {
    /// Rows per rayon task: about [`CHUNK`] elements.
    fn rows_per_task(&self) -> usize {
        (CHUNK / self.bias.len().max(1)).max(1)
    }
}

impl InplaceOp1 for BiasAdd<'_> {
    fn name(&self) -> &'static str {
        "bias-add-in-place"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let width = self.bias.len().max(1);
        f32_values(storage, layout, InplaceOp1::name(self))?
            .par_chunks_mut(width * self.rows_per_task())
            .for_each(|rows| {
                vectorized(BiasRows {
                    bias: self.bias,
                    rows,
                    residual: None,
                });
            });
        Ok(())
    }
}

impl InplaceOp2 for BiasAdd<'_> {
    fn name(&self) -> &'static str {
        "bias-residual-add-in-place"
    }

    fn cpu_fwd(
        &self,
        storage: &mut CpuStorage,
        layout: &Layout,
        residual: &CpuStorage,
        residual_layout: &Layout,
    ) -> candle_core::Result<()> {
        let CpuStorage::F32(residual) = residual else {
            candle_core::bail!("{} takes an f32 residual", InplaceOp2::name(self));
        };
        let Some((start, end)) = residual_layout.contiguous_offsets() else {
            candle_core::bail!("{} takes a contiguous residual", InplaceOp2::name(self));
        };
        let residual = &residual[start..end];
        let width = self.bias.len().max(1);
        let task = width * self.rows_per_task();
        let ys = f32_values(storage, layout, InplaceOp2::name(self))?;
        if ys.len() != residual.len() {
            candle_core::bail!("a residual of {} values for {}", residual.len(), ys.len());
        }
        ys.par_chunks_mut(task)
            .zip(residual.par_chunks(task))
            .for_each(|(rows, residual)| {
                vectorized(BiasRows {
                    bias: self.bias,
                    rows,
                    residual: Some(residual),
                });
            });
        Ok(())
    }
}

/// See [`scaled_softmax_in_place`].
struct ScaledMaskedSoftmax<'a> {
    scale: f32,
    key_bias: Option<&'a [f32]>,
    /// Score rows of one batch item: `heads × q_len`.
    rows_per_item: usize,
    /// Queries per head when the mask is causal.
    q_len: Option<usize>,
}

impl InplaceOp1 for ScaledMaskedSoftmax<'_> {
    fn name(&self) -> &'static str {
        "scaled-masked-softmax-in-place"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let width = layout.dims().last().copied().unwrap_or(1).max(1);
        let per_task = rows_per_task(width);
        f32_values(storage, layout, self.name())?
            .par_chunks_mut(width * per_task)
            .enumerate()
            .for_each(|(task, rows)| {
                vectorized(MaskedSoftmaxRows {
                    op: self,
                    first_row: task * per_task,
                    width,
                    rows,
                });
            });
        Ok(())
    }
}

impl ScaledMaskedSoftmax<'_> {
    /// Scales, masks and normalizes score row `row` (of the whole tensor), `values`.
    #[inline(always)]
    fn row(&self, row: usize, values: &mut [f32]) {
        let width = values.len();
        let item = row / self.rows_per_item.max(1);
        match self.key_bias {
            Some(key_bias) => {
                let bias = &key_bias[item * width..(item + 1) * width];
                for (x, b) in values.iter_mut().zip(bias) {
                    *x = *x * self.scale + b;
                }
            }
            None => {
                for x in values.iter_mut() {
                    *x *= self.scale;
                }
            }
        }
        if let Some(q_len) = self.q_len {
            let query = row % q_len.max(1);
            values[query + 1..].fill(f32::MIN);
        }
        softmax_row(values);
    }
}

/// [`QUICK_GELU_SLOPE`] in f32, as PyTorch multiplies an f32 tensor by it.
#[allow(clippy::cast_possible_truncation, reason = "the f32 constant")]
const QUICK_GELU_SLOPE_F32: f32 = QUICK_GELU_SLOPE as f32;

/// `x · sigmoid(1.702 x)`.
#[inline(always)]
fn quick_gelu_value(x: f32) -> f32 {
    x * sigmoid(x * QUICK_GELU_SLOPE_F32)
}

/// `1 / (1 + e⁻ᶻ)`, from `e^-|z|` so the exponential never overflows. Branch-free.
#[inline(always)]
fn sigmoid(z: f32) -> f32 {
    let e = exp_nonpositive(-z.abs());
    let inverse = 1.0 / (1.0 + e);
    if z >= 0.0 { inverse } else { e * inverse }
}

/// An element-wise function applied in place, [`CHUNK`] elements per rayon task (the
/// function is inlined into each instance, so its loop vectorises).
struct MapInPlace<F> {
    name: &'static str,
    f: F,
}

impl<F: Fn(f32) -> f32 + Sync> InplaceOp1 for MapInPlace<F> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        f32_values(storage, layout, self.name)?
            .par_chunks_mut(CHUNK)
            .for_each(|values| vectorized(MapValues { f: &self.f, values }));
        Ok(())
    }
}

/// Score rows per rayon task of the softmax kernels: about [`CHUNK`] elements, so that a
/// task's work outweighs its hand-over.
fn rows_per_task(width: usize) -> usize {
    (CHUNK / width.max(1)).max(1)
}

/// One rayon task's share of a kernel: a loop over plain slices whose `run` (and all it
/// calls) is `#[inline(always)]`, so that [`vectorized`] compiles it whole for the vector
/// instructions it picks. (A closure would not do: LLVM declines to inline a large one into
/// the dispatching function, and it then runs with the baseline's 4-lane SSE.)
trait SimdLoop {
    /// Runs the loop.
    fn run(self);
}

/// Runs `task` compiled for the widest vector instructions the CPU has (AVX-512, or AVX2
/// with FMA, else the x86-64 baseline), chosen at run time by `pulp` as `gemm` chooses its
/// kernels. Every path does the same arithmetic in the same order (Rust never contracts a
/// product and a sum into an FMA), so results do not depend on the CPU.
fn vectorized(task: impl SimdLoop) {
    pulp::Arch::new().dispatch(Dispatch(task));
}

/// [`vectorized`]'s bridge to `pulp`.
struct Dispatch<L>(L);

impl<L: SimdLoop> pulp::WithSimd for Dispatch<L> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        self.0.run();
    }
}

/// Softmax of each row of `rows` (rows of `width` values).
struct SoftmaxRows<'a> {
    width: usize,
    rows: &'a mut [f32],
}

impl SimdLoop for SoftmaxRows<'_> {
    #[inline(always)]
    fn run(self) {
        for row in self.rows.chunks_exact_mut(self.width) {
            softmax_row(row);
        }
    }
}

/// [`ScaledMaskedSoftmax`] of consecutive score rows, the first being `first_row`.
struct MaskedSoftmaxRows<'a, 'b> {
    op: &'a ScaledMaskedSoftmax<'b>,
    first_row: usize,
    width: usize,
    rows: &'a mut [f32],
}

impl SimdLoop for MaskedSoftmaxRows<'_, '_> {
    #[inline(always)]
    fn run(self) {
        for (i, values) in self.rows.chunks_exact_mut(self.width).enumerate() {
            self.op.row(self.first_row + i, values);
        }
    }
}

/// `row += bias` for each row of `rows`, then `+= residual` (the same shape) where given.
struct BiasRows<'a> {
    bias: &'a [f32],
    rows: &'a mut [f32],
    residual: Option<&'a [f32]>,
}

impl SimdLoop for BiasRows<'_> {
    #[inline(always)]
    fn run(self) {
        let width = self.bias.len().max(1);
        match self.residual {
            None => {
                for row in self.rows.chunks_exact_mut(width) {
                    for (y, b) in row.iter_mut().zip(self.bias) {
                        *y += b;
                    }
                }
            }
            Some(residual) => {
                for (row, residual_row) in self
                    .rows
                    .chunks_exact_mut(width)
                    .zip(residual.chunks_exact(width))
                {
                    for ((y, b), r) in row.iter_mut().zip(self.bias).zip(residual_row) {
                        *y = (*y + b) + r;
                    }
                }
            }
        }
    }
}

/// `x = f(x)` for each value.
struct MapValues<'a, F> {
    f: &'a F,
    values: &'a mut [f32],
}

impl<F: Fn(f32) -> f32> SimdLoop for MapValues<'_, F> {
    #[inline(always)]
    fn run(self) {
        for x in self.values {
            *x = (self.f)(*x);
        }
    }
}

/// One row's softmax: `exp(x - max) / Σ exp(x - max)`, as PyTorch's (the reciprocal of
/// the sum multiplies).
#[inline(always)]
fn softmax_row(row: &mut [f32]) {
    let mut maxima = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (m, &x) in maxima.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&maxima)
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    let mut sums = [0.0_f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (s, x) in sums.iter_mut().zip(chunk) {
            *x = exp_nonpositive(*x - max);
            *s += *x;
        }
    }
    let mut sum: f32 = sums.iter().sum();
    for x in chunks.into_remainder() {
        *x = exp_nonpositive(*x - max);
        sum += *x;
    }
    let scale = 1.0 / sum;
    for x in row {
        *x *= scale;
    }
}

/// `eˣ` for `x ≤ 0` within 2 ulp of libm (Cephes' `expf` polynomial on `x - n ln 2`), flushed to 0
/// below -86 (`e⁻⁸⁶ ≈ 4e-38`, nothing beside a softmax's largest term of 1). Branch-free,
/// so a loop over it vectorises.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOWEST: f32 = -86.0;
    // 1.5 · 2²³: adding it rounds to an integer, which its low mantissa bits then hold.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let clamped = if x < LOWEST { LOWEST } else { x };
    let shifted = clamped * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    // |n| ≤ 125 and LN2_HI has 9 significant bits: n · LN2_HI is exact.
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_2e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // 2ⁿ: n added to the exponent field (e_r is in [0.7, 1.5], n ≥ -125: stays normal).
    let two_n = shifted.to_bits().wrapping_sub(ROUND.to_bits()) << 23;
    let value = f32::from_bits(e_r.to_bits().wrapping_add(two_n));
    if x < LOWEST { 0.0 } else { value }
}

/// `x · (1 + erf(x / √2)) / 2`, in f64 and rounded once.
#[inline(always)]
fn gelu_erf(x: f32) -> f32 {
    let x = f64::from(x);
    #[allow(clippy::cast_possible_truncation, reason = "the f32 result")]
    let y = (0.5 * x * (1.0 + erf(x * std::f64::consts::FRAC_1_SQRT_2))) as f32;
    y
}

/// `erf(x)` within 7e-8 absolute: a rational odd/even polynomial fit on [-4, 4] (beyond,
/// erf is ±1 in f32), the one of Eigen's and XLA's vectorised f32 `erf`. Evaluated in f64
/// (still two lanes per SSE register), as in f32 its rounding errors reach 4.5e-7.
/// Branch-free.
#[inline(always)]
fn erf(x: f64) -> f64 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = -2.726_142_258_013_06e-10;
    let p = p * x2 + 2.770_681_424_959_02e-8;
    let p = p * x2 - 2.101_024_020_825_08e-6;
    let p = p * x2 - 5.692_506_394_623_46e-5;
    let p = p * x2 - 7.349_906_303_268_55e-4;
    let p = p * x2 - 2.954_599_808_540_25e-3;
    let p = p * x2 - 1.609_603_332_624_15e-2;
    let q = -1.456_607_184_649_96e-5;
    let q = q * x2 - 2.133_740_552_789_05e-4;
    let q = q * x2 - 1.682_826_974_382_03e-3;
    let q = q * x2 - 7.373_329_167_204_68e-3;
    let q = q * x2 - 1.426_473_905_141_89e-2;
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf in f64 by its Taylor series (|x| ≤ 4: the cancellation leaves ~1e-9 absolute).
    fn erf_reference(x: f64) -> f64 {
        let (mut term, mut sum, mut n) = (x, x, 0_u32);
        while term.abs() > 1e-17 * sum.abs().max(1e-300) || n < 4 {
            n += 1;
            term *= -x * x / f64::from(n);
            sum += term / f64::from(2 * n + 1);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn exp_within_two_ulp_of_libm() {
        let mut worst = 0_u32;
        for i in 0..=860_000 {
            #[allow(clippy::cast_precision_loss, reason = "i ≤ 860000")]
            let x = -(i as f32) * 1e-4;
            let (ours, libm) = (exp_nonpositive(x), x.exp());
            worst = worst.max(ours.to_bits().abs_diff(libm.to_bits()));
        }
        assert!(worst <= 2, "worst error {worst} ulp");
        assert!(exp_nonpositive(-86.5) == 0.0 && exp_nonpositive(-1e30) == 0.0);
        assert!(exp_nonpositive(0.0) == 1.0);
    }

    #[test]
    fn erf_within_1e7_absolute() {
        let mut worst = 0.0_f64;
        for i in -40_000..=40_000 {
            let x = f64::from(i) * 1e-4;
            #[allow(clippy::cast_possible_truncation, reason = "as rounded to f32")]
            let ours = f64::from(erf(x) as f32);
            worst = worst.max((ours - erf_reference(x)).abs());
        }
        assert!(worst <= 1e-7, "worst absolute error {worst}");
        // Past ±4 erf is ±1 in f32 (1 - erf(4) ≈ 1.5e-8).
        assert!((erf(9.0) - 1.0).abs() <= 2e-7 && (erf(-1e30) + 1.0).abs() <= 2e-7);
    }

    #[test]
    fn softmax_and_attention_match_candle() -> candle_core::Result<()> {
        let device = candle_core::Device::Cpu;
        // Two whole blocks of queries and a partial third, so the blocks are joined.
        let q_len = 2 * QUERY_BLOCK + 37;
        let q = Tensor::randn(0_f32, 1.0, (2, 3, q_len, 16), &device)?;
        let k = Tensor::randn(0_f32, 1.0, (2, 3, 290, 16), &device)?;
        let v = Tensor::randn(0_f32, 1.0, (2, 3, 290, 16), &device)?;
        let expected = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?.matmul(&v)?;
        let ours = blocked_attention(&q, &k, &v)?;
        let diff = (ours - expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "largest difference {diff}");
        Ok(())
    }

    #[test]
    fn scaled_masked_softmax_matches_candle() -> candle_core::Result<()> {
        let device = candle_core::Device::Cpu;
        let (batch, heads, len) = (3, 4, 19);
        let scores = Tensor::randn(0_f32, 4.0, (batch, heads, len, len), &device)?;
        // Item 0 keeps every key, item 1 its first 7, item 2 none (a row of padding only).
        let key_bias: Vec<f32> = (0..batch * len)
            .map(|i| match (i / len, i % len) {
                (0, _) => 0.0,
                (1, key) if key < 7 => 0.0,
                _ => f32::MIN,
            })
            .collect();
        let scale = 0.125_f32 + 0.05;
        let bias = Tensor::from_slice(&key_bias, (batch, 1, 1, len), &device)?;
        let expected = candle_nn::ops::softmax_last_dim(
            &scores.affine(f64::from(scale), 0.0)?.broadcast_add(&bias)?,
        )?;
        let ours = scores.copy()?;
        scaled_softmax_in_place(&ours, scale, Some(&key_bias), false)?;
        let diff = (&ours - expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "largest difference {diff}");
        // Padded keys get nothing wherever a real key exists.
        let masked = ours.get(1)?.narrow(2, 7, len - 7)?.abs()?.max_all()?;
        assert!(masked.to_scalar::<f32>()? == 0.0);
        let wrong = scaled_softmax_in_place(&ours, scale, Some(&key_bias[..len]), false);
        assert!(wrong.is_err());
        Ok(())
    }

    #[test]
    fn bias_and_residual_add_as_candle() -> candle_core::Result<()> {
        let device = candle_core::Device::Cpu;
        // More rows than one rayon task takes, and a width that is not a power of two.
        let (rows, width) = (4 * CHUNK / 300 + 3, 300);
        let ys = Tensor::randn(0_f32, 1.0, (rows, width), &device)?;
        let residual = Tensor::randn(0_f32, 1.0, (rows, width), &device)?;
        let bias_values: Vec<f32> = (0..width).map(|i| i as f32 * 0.01 - 1.0).collect();
        let bias = Tensor::from_slice(&bias_values, width, &device)?;

        let expected = ys.broadcast_add(&bias)?;
        let ours = ys.copy()?;
        add_bias_in_place(&ours, &bias_values, None)?;
        assert_eq!(
            ours.flatten_all()?.to_vec1::<f32>()?,
            expected.flatten_all()?.to_vec1::<f32>()?
        );

        let expected = (ys.broadcast_add(&bias)? + &residual)?;
        let ours = ys.copy()?;
        add_bias_in_place(&ours, &bias_values, Some(&residual))?;
        assert_eq!(
            ours.flatten_all()?.to_vec1::<f32>()?,
            expected.flatten_all()?.to_vec1::<f32>()?
        );

        assert!(add_bias_in_place(&ours, &bias_values[1..], None).is_err());
        assert!(add_bias_in_place(&ours, &bias_values, Some(&residual.narrow(0, 1, 2)?)).is_err());
        Ok(())
    }

    #[test]
    fn causal_softmax_matches_candle_with_both_masks() -> candle_core::Result<()> {
        let device = candle_core::Device::Cpu;
        let (batch, heads, len) = (2, 3, 11);
        let scores = Tensor::randn(0_f32, 4.0, (batch, heads, len, len), &device)?;
        // Item 1's last 4 keys are padding.
        let key_bias: Vec<f32> = (0..batch * len)
            .map(|i| {
                if i / len == 1 && i % len >= 7 {
                    f32::MIN
                } else {
                    0.0
                }
            })
            .collect();
        // The reference: one additive mask, future and padded keys at f32::MIN.
        let mut mask = vec![0.0_f32; batch * len * len];
        for b in 0..batch {
            for q in 0..len {
                for k in 0..len {
                    if k > q || key_bias[b * len + k] != 0.0 {
                        mask[(b * len + q) * len + k] = f32::MIN;
                    }
                }
            }
        }
        let mask = Tensor::from_slice(&mask, (batch, 1, len, len), &device)?;
        let scale = 0.3_f32;
        let expected = candle_nn::ops::softmax_last_dim(
            &scores.affine(f64::from(scale), 0.0)?.broadcast_add(&mask)?,
        )?;
        let ours = scores.copy()?;
        scaled_softmax_in_place(&ours, scale, Some(&key_bias), true)?;
        let diff = (&ours - &expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "largest difference {diff}");
        // Query 0 sees key 0 alone; no future key gets anything.
        let first = ours.get(0)?.get(0)?.get(0)?.to_vec1::<f32>()?;
        assert!(
            first[0] == 1.0 && first[1..].iter().all(|&p| p == 0.0),
            "{first:?}"
        );
        // Without a key bias or causality, a plain scaled softmax.
        let ours = scores.copy()?;
        scaled_softmax_in_place(&ours, scale, None, false)?;
        let expected = candle_nn::ops::softmax_last_dim(&scores.affine(f64::from(scale), 0.0)?)?;
        let diff = (&ours - &expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "largest difference {diff}");
        let keys = Tensor::zeros((1, 1, 3, 4), DType::F32, &device)?;
        assert!(scaled_softmax_in_place(&keys, 1.0, None, true).is_err());
        Ok(())
    }

    #[test]
    fn attention_per_item_matches_candle() -> candle_core::Result<()> {
        let device = candle_core::Device::Cpu;
        let (batch, heads, seq, head_dim) = (3, 4, 9, 8);
        let [q, k, v] = [0, 1, 2]
            .map(|_| Tensor::randn(0_f32, 1.0, (batch, heads, seq, head_dim), &device).unwrap());
        // Item 1 has 4 padded keys.
        let key_bias: Vec<f32> = (0..batch * seq)
            .map(|i| {
                if i / seq == 1 && i % seq >= 5 {
                    f32::MIN
                } else {
                    0.0
                }
            })
            .collect();
        let bias = Tensor::from_slice(&key_bias, (batch, 1, 1, seq), &device)?;
        let scale = 0.35_f32;
        let probs = candle_nn::ops::softmax_last_dim(
            &q.matmul(&k.t()?)?
                .affine(f64::from(scale), 0.0)?
                .broadcast_add(&bias)?,
        )?;
        let expected = probs.matmul(&v)?;
        let ours = attention_per_item(&q, &k, &v, scale, Some(&key_bias), false)?;
        assert_eq!(ours.dims(), expected.dims());
        let diff = (&ours - &expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "largest difference {diff}");
        assert!(attention_per_item(&q, &k, &v, scale, Some(&key_bias[1..]), false).is_err());
        // Causal, without padding: each query's softmax over the keys up to it.
        let mut mask = vec![0.0_f32; seq * seq];
        for (i, m) in mask.iter_mut().enumerate() {
            if i % seq > i / seq {
                *m = f32::MIN;
            }
        }
        let mask = Tensor::from_slice(&mask, (1, 1, seq, seq), &device)?;
        let probs = candle_nn::ops::softmax_last_dim(
            &q.matmul(&k.t()?)?
                .affine(f64::from(scale), 0.0)?
                .broadcast_add(&mask)?,
        )?;
        let expected = probs.matmul(&v)?;
        let ours = attention_per_item(&q, &k, &v, scale, None, true)?;
        let diff = (&ours - &expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "largest difference {diff}");
        Ok(())
    }

    #[test]
    fn transposed_matches_candle() -> candle_core::Result<()> {
        let device = candle_core::Device::Cpu;
        // Columns not a multiple of the band; a single row; a single column.
        for (rows, cols) in [(37, 53), (1, 40), (40, 1), (384, 1536)] {
            let w = Tensor::randn(0_f32, 1.0, (rows, cols), &device)?;
            let ours = transposed(&w)?;
            assert_eq!(ours.dims(), [cols, rows]);
            assert!(ours.is_contiguous());
            assert_eq!(
                ours.flatten_all()?.to_vec1::<f32>()?,
                w.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?
            );
        }
        // Not f32: candle's path.
        let w = Tensor::randn(0_f32, 1.0, (5, 7), &device)?.to_dtype(DType::F16)?;
        assert_eq!(transposed(&w)?.dims(), [7, 5]);
        Ok(())
    }

    #[test]
    fn quick_gelu_matches_candle() -> candle_core::Result<()> {
        // Wide enough to reach both tails (sigmoid 0 and 1) and every rayon chunk shape.
        let xs = Tensor::randn(0_f32, 30.0, (3, CHUNK + 17), &candle_core::Device::Cpu)?;
        let expected = (&xs * candle_nn::ops::sigmoid(&(&xs * 1.702)?)?)?;
        let ours = quick_gelu(xs.copy()?)?;
        let diff = (&ours - &expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "largest difference {diff}");
        let relative = ((&ours - &expected)?.abs()? / (expected.abs()? + 1e-3)?)?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(relative < 1e-5, "largest relative difference {relative}");
        // A view of another tensor takes candle's path and leaves the source alone.
        let strided = xs.t()?;
        let before = xs.flatten_all()?.to_vec1::<f32>()?;
        let viewed = quick_gelu(strided)?;
        assert_eq!(xs.flatten_all()?.to_vec1::<f32>()?, before);
        let diff = (viewed.t()? - &expected)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "largest difference {diff}");
        Ok(())
    }

    #[test]
    fn gelu_matches_candle() -> candle_core::Result<()> {
        let xs = Tensor::randn(0_f32, 3.0, (7, 1001), &candle_core::Device::Cpu)?;
        let expected = xs.gelu_erf()?;
        let ours = xs.copy()?;
        gelu_erf_in_place(&ours)?;
        let diff = (ours - expected)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "largest difference {diff}");
        Ok(())
    }
}
