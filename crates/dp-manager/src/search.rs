//! The decoding searches over a [`DecodingSession`]: greedy and beam search, with the stop
//! rules and logits processors of transformers' `generate`, so the same options give the
//! same token ids.
//!
//! Beam search follows transformers' vectorized implementation (`_beam_search`, 4.5x–5.x)
//! step for step and in its arithmetic (f32 scores, `-1e9` penalties added as floats, the
//! length penalty's divisor computed in f64 and rounded to f32): per input, the top
//! `2 × num_beams` continuations over all beams; the best `num_beams` that did not stop keep
//! running; of the best `num_beams` candidates, those that stopped (end of sequence, or the
//! length limit) compete with the finished hypotheses, scored `sum(log p) / len^penalty`;
//! an input is done when its running beams can no longer beat its worst finished one
//! (`early_stopping: false`, the default, estimates that at the current length), when all
//! its hypotheses finished (`true`), or at the length limit. An input that is done leaves
//! the batch (its rows are dropped), which cannot change its result.

use dp_spec::{DecoderInfo, DecodingSession, ModelError};

/// transformers' stand-in for "minus infinity" in beam scores.
const PENALTY: f32 = -1.0e9;

/// When beam search stops for an input (transformers' `early_stopping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyStopping {
    /// Stop when the running beams cannot, by a heuristic at the current length, beat the
    /// worst finished hypothesis (transformers' default, `False`).
    Heuristic,
    /// Stop as soon as `num_beams` hypotheses finished (`True`).
    WhenFull,
    /// Stop only when no running beam can beat a finished one at any length (`"never"`).
    Never,
}

/// The search options, already validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SearchOptions {
    pub(crate) max_new_tokens: usize,
    pub(crate) min_new_tokens: usize,
    pub(crate) num_beams: usize,
    pub(crate) length_penalty: f32,
    pub(crate) no_repeat_ngram_size: usize,
    pub(crate) early_stopping: EarlyStopping,
}

/// One input's result: the generated ids (without the decoder start, with the end of
/// sequence token when one was produced).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Generated {
    pub(crate) tokens: Vec<u32>,
    /// The beam score (`sum(log p) / len^penalty`), for beam search.
    pub(crate) score: Option<f32>,
}

/// Receives tokens as greedy search fixes them: (input index, token).
pub(crate) type OnToken<'a> = dyn FnMut(usize, u32) + 'a;

/// How each input's decoding starts, and the tokens a model never or not first emits.
///
/// A T5 row starts from the decoder start token alone; a Whisper row from a forced prompt
/// (start of transcript, language, task, no timestamps) that transformers feeds as the
/// decoder's input ids, so its generated tokens, `min_new_tokens` and the beam length
/// penalty all count from after the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SearchStart {
    /// Per input, the decoder prompt (decoder start first); all of one length, at least 1.
    pub(crate) prompts: Vec<Vec<u32>>,
    /// How many prompt tokens the session has already been fed (each row the same).
    pub(crate) fed: usize,
    /// Tokens never chosen (transformers' `SuppressTokensLogitsProcessor`).
    pub(crate) suppress: Vec<u32>,
    /// Tokens not chosen first (`SuppressTokensAtBeginLogitsProcessor`).
    pub(crate) begin_suppress: Vec<u32>,
}

impl SearchStart {
    /// `inputs` rows starting from the decoder start token, nothing suppressed.
    pub(crate) fn decoder_start(info: &DecoderInfo, inputs: usize) -> Self {
        Self {
            prompts: vec![vec![info.decoder_start_token_id]; inputs],
            fed: 0,
            suppress: Vec::new(),
            begin_suppress: Vec::new(),
        }
    }

    fn prompt_len(&self) -> usize {
        self.prompts.first().map_or(1, Vec::len)
    }

    /// Feeds every prompt token but the last (the search feeds that one) the session has
    /// not had yet.
    fn feed(&self, session: &mut dyn DecodingSession, kv_peak: &mut u64) -> Result<(), ModelError> {
        for position in self.fed..self.prompt_len().saturating_sub(1) {
            let tokens: Vec<u32> = self.prompts.iter().map(|p| p[position]).collect();
            session.step(&tokens)?;
            *kv_peak = (*kv_peak).max(session.kv_cache_bytes());
        }
        Ok(())
    }

    /// The token each input's first search step feeds.
    fn last_tokens(&self) -> Vec<u32> {
        self.prompts
            .iter()
            .map(|p| p.last().copied().unwrap_or_default())
            .collect()
    }
}

/// Runs the search for every row of `session` (one per input).
///
/// # Errors
/// A prompt set that does not fit the session; as the session's steps.
pub(crate) fn search(
    session: &mut dyn DecodingSession,
    info: &DecoderInfo,
    options: &SearchOptions,
    start: &SearchStart,
    on_token: &mut OnToken<'_>,
    kv_peak: &mut u64,
) -> Result<Vec<Generated>, ModelError> {
    let len = start.prompt_len();
    if start.prompts.len() != session.rows()
        || len == 0
        || start.fed >= len
        || start.prompts.iter().any(|p| p.len() != len)
    {
        return Err(ModelError::new(
            dp_spec::ErrorCode::InvalidInput,
            format!(
                "a search over {} rows was given {} prompts of lengths {:?}, {} already fed",
                session.rows(),
                start.prompts.len(),
                start.prompts.iter().map(Vec::len).collect::<Vec<_>>(),
                start.fed
            ),
        ));
    }
    start.feed(session, kv_peak)?;
    if options.num_beams <= 1 {
        greedy(session, info, options, start, on_token, kv_peak)
    } else {
        beam_search(session, info, options, start, kv_peak)
    }
}

/// Sets the logits of tokens forbidden at this point of `sequence` (prompt included) to
/// minus infinity: suppressed tokens, the first-token suppressions before any token was
/// generated, the end of sequence before `min_new_tokens`, and any token that would
/// repeat an n-gram of `no_repeat_ngram_size`.
fn forbid(
    scores: &mut [f32],
    sequence: &[u32],
    info: &DecoderInfo,
    options: &SearchOptions,
    start: &SearchStart,
) {
    let generated = sequence.len().saturating_sub(start.prompt_len());
    let mut ban = |token: u32| {
        if let Some(score) = scores.get_mut(token as usize) {
            *score = f32::NEG_INFINITY;
        }
    };
    start.suppress.iter().copied().for_each(&mut ban);
    if generated == 0 {
        start.begin_suppress.iter().copied().for_each(&mut ban);
    }
    if generated < options.min_new_tokens {
        info.eos_token_ids.iter().copied().for_each(&mut ban);
    }
    banned_by_ngrams(sequence, options.no_repeat_ngram_size)
        .into_iter()
        .for_each(ban);
}

/// The tokens that would complete an n-gram already in `sequence` (transformers'
/// `NoRepeatNGramLogitsProcessor`): those that followed an earlier occurrence of the last
/// `n - 1` tokens.
fn banned_by_ngrams(sequence: &[u32], n: usize) -> Vec<u32> {
    if n == 0 || sequence.len() + 1 < n {
        return Vec::new();
    }
    let context = &sequence[sequence.len() + 1 - n..];
    sequence
        .windows(n)
        .filter(|window| &window[..n - 1] == context)
        .map(|window| window[n - 1])
        .collect()
}

/// The index of the largest score (the first one on ties, as `torch.argmax`).
fn argmax(scores: &[f32]) -> usize {
    let mut best = 0;
    for (i, &s) in scores.iter().enumerate() {
        if s > scores[best] {
            best = i;
        }
    }
    best
}

fn greedy(
    session: &mut dyn DecodingSession,
    info: &DecoderInfo,
    options: &SearchOptions,
    start: &SearchStart,
    on_token: &mut OnToken<'_>,
    kv_peak: &mut u64,
) -> Result<Vec<Generated>, ModelError> {
    let inputs = session.rows();
    let vocab = info.vocab_size;
    let prompt_len = start.prompt_len();
    let mut sequences: Vec<Vec<u32>> = start.prompts.clone();
    // Session row → input, for the inputs still running.
    let mut running: Vec<usize> = (0..inputs).collect();
    let mut tokens = start.last_tokens();
    for _ in 0..options.max_new_tokens {
        let logits = session.step(&tokens)?;
        *kv_peak = (*kv_peak).max(session.kv_cache_bytes());
        let mut keep = Vec::with_capacity(running.len());
        for (row, &input) in running.iter().enumerate() {
            let mut scores = logits[row * vocab..(row + 1) * vocab].to_vec();
            forbid(&mut scores, &sequences[input], info, options, start);
            let token = u32::try_from(argmax(&scores)).unwrap_or(u32::MAX);
            sequences[input].push(token);
            on_token(input, token);
            if !info.eos_token_ids.contains(&token) {
                keep.push(row);
            }
        }
        if keep.is_empty() {
            break;
        }
        if keep.len() < running.len() {
            session.select_rows(&keep)?;
            running = keep.iter().map(|&row| running[row]).collect();
        }
        tokens = running
            .iter()
            .map(|&input| *sequences[input].last().unwrap_or(&0))
            .collect();
    }
    Ok(sequences
        .into_iter()
        .map(|s| Generated {
            tokens: s[prompt_len..].to_vec(),
            score: None,
        })
        .collect())
}

/// `log_softmax` of one row, in f32 as torch computes it.
fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
    let log_sum = sum.ln();
    row.iter().map(|&x| x - max - log_sum).collect()
}

/// The `k` best `(score, index)` of `scores`, best first (lower index first on ties).
fn top_k(scores: &[f32], k: usize) -> Vec<(f32, usize)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    let by_score = |a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
    let k = k.min(order.len());
    if k < order.len() && k > 0 {
        order.select_nth_unstable_by(k - 1, by_score);
        order.truncate(k);
    }
    order.sort_by(by_score);
    order.into_iter().map(|i| (scores[i], i)).collect()
}

/// `len^penalty`, computed as Python computes `int ** float`, then used as torch divides a
/// float32 tensor by it.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    reason = "transformers' arithmetic is replicated"
)]
fn length_divisor(len: usize, penalty: f32) -> f32 {
    (len as f64).powf(f64::from(penalty)) as f32
}

/// One hypothesis: a sequence (decoder start included) and its score.
#[derive(Debug, Clone)]
struct Hypothesis {
    sequence: Vec<u32>,
    score: f32,
    finished: bool,
}

/// The beam-search state of one input.
#[derive(Debug)]
struct BeamInput {
    running: Vec<Hypothesis>,
    finished: Vec<Hypothesis>,
    improvable: bool,
    done: bool,
}

fn beam_search(
    session: &mut dyn DecodingSession,
    info: &DecoderInfo,
    options: &SearchOptions,
    start: &SearchStart,
    kv_peak: &mut u64,
) -> Result<Vec<Generated>, ModelError> {
    let beams = options.num_beams;
    let vocab = info.vocab_size;
    let inputs = session.rows();
    let keep = 2.max(1 + info.eos_token_ids.len()) * beams;
    let prompt_len = start.prompt_len();
    let placeholder = |input: usize, score| Hypothesis {
        sequence: start.prompts[input].clone(),
        score,
        finished: false,
    };
    let mut states: Vec<BeamInput> = (0..inputs)
        .map(|input| BeamInput {
            // Only the first beam is live at first: the others start at -1e9.
            running: (0..beams)
                .map(|b| placeholder(input, if b == 0 { 0.0 } else { PENALTY }))
                .collect(),
            finished: (0..beams).map(|_| placeholder(input, PENALTY)).collect(),
            improvable: true,
            done: false,
        })
        .collect();
    // Expand each input into its beams: rows are input-major.
    let rows: Vec<usize> = (0..inputs)
        .flat_map(|i| std::iter::repeat_n(i, beams))
        .collect();
    session.select_rows(&rows)?;
    // Session block → input, for the inputs still running.
    let mut active: Vec<usize> = (0..inputs).collect();
    let max_length = prompt_len + options.max_new_tokens;
    let mut cur_len = prompt_len;
    let mut tokens: Vec<u32> = start
        .last_tokens()
        .into_iter()
        .flat_map(|t| std::iter::repeat_n(t, beams))
        .collect();
    while !active.is_empty() {
        let logits = session.step(&tokens)?;
        *kv_peak = (*kv_peak).max(session.kv_cache_bytes());
        let mut next_rows = Vec::with_capacity(active.len() * beams);
        let mut next_tokens = Vec::with_capacity(active.len() * beams);
        let mut still_active = Vec::with_capacity(active.len());
        for (block, &input) in active.iter().enumerate() {
            let state = &mut states[input];
            let mut accumulated = Vec::with_capacity(beams * vocab);
            for (beam, hypothesis) in state.running.iter().enumerate() {
                let row = block * beams + beam;
                let mut scores = log_softmax(&logits[row * vocab..(row + 1) * vocab]);
                forbid(&mut scores, &hypothesis.sequence, info, options, start);
                accumulated.extend(scores.iter().map(|&s| s + hypothesis.score));
            }
            // The top 2 × beams continuations over all beams.
            let candidates: Vec<(f32, Hypothesis, bool, usize)> = top_k(&accumulated, keep)
                .into_iter()
                .map(|(score, index)| {
                    let (beam, token) = (index / vocab, index % vocab);
                    let token = u32::try_from(token).unwrap_or(u32::MAX);
                    let mut sequence = state.running[beam].sequence.clone();
                    sequence.push(token);
                    let stops = info.eos_token_ids.contains(&token) || cur_len + 1 >= max_length;
                    let hypothesis = Hypothesis {
                        sequence,
                        score,
                        finished: false,
                    };
                    (score, hypothesis, stops, beam)
                })
                .collect();
            // The best beams that did not stop keep running.
            let penalized: Vec<f32> = candidates
                .iter()
                .map(|(score, _, stops, _)| score + if *stops { PENALTY } else { 0.0 })
                .collect();
            let next: Vec<(f32, usize)> = top_k(&penalized, beams);
            // Of the best `beams` candidates, those that stopped may join the finished.
            let divisor = length_divisor(cur_len + 1 - prompt_len, options.length_penalty);
            let all_finished = state.finished.iter().all(|h| h.finished);
            let mut merged: Vec<Hypothesis> = state.finished.clone();
            for (position, (score, hypothesis, stops, _)) in candidates.iter().enumerate() {
                let just_finished = *stops && position < beams;
                let mut s = score / divisor;
                if all_finished && options.early_stopping == EarlyStopping::WhenFull {
                    s += PENALTY;
                }
                if !state.improvable {
                    s += PENALTY;
                }
                if !just_finished {
                    s += PENALTY;
                }
                merged.push(Hypothesis {
                    sequence: hypothesis.sequence.clone(),
                    score: s,
                    finished: just_finished,
                });
            }
            let merged_scores: Vec<f32> = merged.iter().map(|h| h.score).collect();
            state.finished = top_k(&merged_scores, beams)
                .into_iter()
                .map(|(_, i)| merged[i].clone())
                .collect();
            state.running = next
                .iter()
                .map(|&(score, i)| Hypothesis {
                    sequence: candidates[i].1.sequence.clone(),
                    score,
                    finished: false,
                })
                .collect();
            // Can the running beams still beat the worst finished hypothesis?
            let best_length =
                if options.early_stopping == EarlyStopping::Never && options.length_penalty > 0.0 {
                    max_length - prompt_len
                } else {
                    cur_len + 1 - prompt_len
                };
            let best_running =
                state.running[0].score / length_divisor(best_length, options.length_penalty);
            let worst_finished = state
                .finished
                .iter()
                .map(|h| h.score)
                .fold(f32::INFINITY, f32::min);
            state.improvable = state.improvable
                && state.finished.iter().any(|h| {
                    let worst = if h.finished { worst_finished } else { PENALTY };
                    best_running > worst
                });
            let full = options.early_stopping == EarlyStopping::WhenFull
                && state.finished.iter().all(|h| h.finished);
            let all_stopped = candidates.iter().all(|(_, _, stops, _)| *stops);
            state.done = !state.improvable || full || all_stopped;
            if !state.done {
                still_active.push(input);
                for &(_, i) in &next {
                    next_rows.push(block * beams + candidates[i].3);
                    next_tokens.push(*candidates[i].1.sequence.last().unwrap_or(&0));
                }
            }
        }
        cur_len += 1;
        if still_active.is_empty() {
            break;
        }
        session.select_rows(&next_rows)?;
        active = still_active;
        tokens = next_tokens;
    }
    Ok(states
        .into_iter()
        .map(|state| {
            let best = &state.finished[0];
            Generated {
                tokens: best.sequence[prompt_len..].to_vec(),
                score: Some(best.score),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ngrams_ban_what_followed_the_context() {
        // 2-grams: the context is the last token (5); 5 was followed by 6 and 7 before.
        assert_eq!(banned_by_ngrams(&[0, 5, 6, 5, 7, 5], 2), [6, 7]);
        // 3-grams need two tokens of context that occurred before.
        assert_eq!(banned_by_ngrams(&[0, 1, 2, 9, 1, 2], 3), [9]);
        assert!(banned_by_ngrams(&[0, 1], 3).is_empty());
        assert!(banned_by_ngrams(&[0, 1, 1], 0).is_empty());
        // n = 1 bans every token seen.
        assert_eq!(banned_by_ngrams(&[0, 4], 1), [0, 4]);
    }

    #[test]
    fn top_k_is_sorted_and_breaks_ties_by_index() {
        let scores = [0.5, 2.0, f32::NEG_INFINITY, 2.0, -1.0];
        assert_eq!(top_k(&scores, 3), [(2.0, 1), (2.0, 3), (0.5, 0)]);
        assert_eq!(top_k(&scores, 10).len(), 5);
        assert_eq!(argmax(&scores), 1);
    }

    #[test]
    fn log_softmax_sums_to_one() {
        let out = log_softmax(&[1.0, 2.0, 3.0]);
        let total: f32 = out.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-6, "{total}");
        assert!(out[2] > out[1] && out[1] > out[0]);
    }

    #[test]
    fn length_divisor_matches_python() {
        assert_eq!(length_divisor(4, 1.0), 4.0);
        assert_eq!(length_divisor(9, 0.5), 3.0);
        assert_eq!(length_divisor(7, 0.0), 1.0);
    }
}
