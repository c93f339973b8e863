//! What every generator's decoding session (T5, Whisper) checks and does alike: the
//! tokens of a step, and rebuilding the rows of its key/value caches for a search.

use candle_core::{Device, Tensor as CandleTensor};

use crate::error::CandleError;

/// One attention layer's keys and values, `[rows, heads, positions, head_dim]` each.
pub(crate) type KeysValues = (CandleTensor, CandleTensor);

/// Checks that a step feeds one token per row, each inside the vocabulary.
pub(crate) fn check_step(rows: usize, tokens: &[u32], vocab: usize) -> Result<(), CandleError> {
    if tokens.len() != rows {
        return Err(CandleError::InvalidInput(format!(
            "a decoding step takes one token per row: {rows} rows, {} tokens",
            tokens.len()
        )));
    }
    if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(CandleError::InvalidInput(format!(
            "token {bad} is outside the model's vocabulary of {vocab}"
        )));
    }
    Ok(())
}

/// The index tensor that makes row `i` a copy of current row `rows[i]`; `None` when the
/// rows stay as they are.
pub(crate) fn row_index(
    rows: &[usize],
    current: usize,
    device: &Device,
) -> Result<Option<CandleTensor>, CandleError> {
    if let Some(&bad) = rows.iter().find(|&&r| r >= current) {
        return Err(CandleError::InvalidInput(format!(
            "row {bad} does not exist: the session has {current} rows"
        )));
    }
    if rows.iter().copied().eq(0..current) {
        return Ok(None);
    }
    let index: Vec<u32> = rows
        .iter()
        .map(|&r| u32::try_from(r).unwrap_or(u32::MAX))
        .collect();
    Ok(Some(CandleTensor::from_vec(index, rows.len(), device)?))
}

/// Rebuilds every cache's rows by `index` (see [`row_index`]).
pub(crate) fn select_cache_rows(
    index: &CandleTensor,
    cross: &mut [KeysValues],
    own: &mut [Option<KeysValues>],
) -> Result<(), CandleError> {
    let pick = |t: &CandleTensor| t.index_select(index, 0);
    for (k, v) in cross {
        (*k, *v) = (pick(k)?, pick(v)?);
    }
    for kv in own.iter_mut().flatten() {
        *kv = (pick(&kv.0)?, pick(&kv.1)?);
    }
    Ok(())
}
