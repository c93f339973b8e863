//! Which inputs run together: texts grouped by length so that a model call pads little.
//!
//! A text model's call costs about its batch size times its longest sequence, padding
//! included. Thirty-two short sentences of 7 to 14 tokens padded to 14 are 448 tokens of
//! work for 287 real ones; run as 25 texts of at most 9 tokens and 7 of at most 14, they are
//! 323. Splitting is not free either: every call has a fixed cost (a runtime's dispatch,
//! a round trip to a server), expressed here in padded tokens. [`length_ordered_batches`]
//! picks, among the groupings of the texts sorted by length, the one of least total cost
//! within the [`CallLimits`]: at most so many inputs, and at most so many padded tokens
//! (what bounds a call's activations: 32 texts of 512 tokens hold 16 times the memory of
//! 32 of 32).

/// How large one model call may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    /// Inputs per call (0 is taken as 1).
    pub max_inputs: usize,
    /// Padded tokens per call: its inputs times the longest one's tokens. An input longer
    /// than this alone runs alone. `None`: no bound.
    pub max_tokens: Option<usize>,
}

impl CallLimits {
    /// At most `max_inputs` inputs per call, of any length.
    #[must_use]
    pub const fn inputs(max_inputs: usize) -> Self {
        Self {
            max_inputs,
            max_tokens: None,
        }
    }

    /// Whether `inputs` inputs of at most `longest` tokens may run as one call (one input
    /// always may).
    #[must_use]
    pub fn allow(&self, inputs: usize, longest: usize) -> bool {
        inputs <= self.max_inputs.max(1)
            && (inputs <= 1 || self.max_tokens.is_none_or(|max| inputs * longest <= max))
    }
}

/// Groups of input indices, each run as one model call: the inputs sorted by `lengths`
/// (tokens each takes) and cut into runs within `limits` so that the sum over the calls of
/// `len × longest + call_overhead` is least.
///
/// Every index appears once. When one call is cheapest and the inputs fit in it, the single
/// group keeps the inputs' own order (the call is the one an unplanned run makes).
///
/// ```
/// use dp_preset::batch_plan::{CallLimits, length_ordered_batches};
///
/// // Long and short texts interleaved: two calls, each padding little.
/// let groups = length_ordered_batches(&[100, 5, 100, 5], CallLimits::inputs(4), 8);
/// assert_eq!(groups, vec![vec![1, 3], vec![0, 2]]);
/// // Close lengths: one call, in input order.
/// assert_eq!(length_ordered_batches(&[9, 8, 10], CallLimits::inputs(4), 8), vec![vec![0, 1, 2]]);
/// // At most 19 padded tokens a call: 8 and 9 together (18), 10 alone.
/// let limits = CallLimits { max_inputs: 4, max_tokens: Some(19) };
/// assert_eq!(length_ordered_batches(&[9, 8, 10], limits, 8), vec![vec![1, 0], vec![2]]);
/// ```
#[must_use]
pub fn length_ordered_batches(
    lengths: &[usize],
    limits: CallLimits,
    call_overhead: usize,
) -> Vec<Vec<usize>> {
    let n = lengths.len();
    let mut order: Vec<usize> = (0..n).collect();
    // Stable: equal lengths keep their input order.
    order.sort_by_key(|&i| lengths[i]);
    // best[j]: least cost of the first j sorted inputs; cut[j]: where its last call starts.
    // In u128: far from overflowing for any number of inputs that fits in memory, even
    // with a call overhead of usize::MAX.
    let mut best = vec![0_u128; n + 1];
    let mut cut = vec![0_usize; n + 1];
    for j in 1..=n {
        let longest = lengths[order[j - 1]];
        best[j] = u128::MAX;
        // The calls ending at j: the longer they are, the more they pad, so the first
        // start past the limits ends the search.
        for i in (0..j).rev() {
            if !limits.allow(j - i, longest) {
                break;
            }
            let cost = best[i] + (j - i) as u128 * longest as u128 + call_overhead as u128;
            if cost <= best[j] {
                best[j] = cost;
                cut[j] = i;
            }
        }
    }
    if cut[n] == 0 {
        return if n == 0 {
            Vec::new()
        } else {
            vec![(0..n).collect()]
        };
    }
    let mut groups = Vec::new();
    let mut end = n;
    while end > 0 {
        let start = cut[end];
        groups.push(order[start..end].to_vec());
        end = start;
    }
    groups.reverse();
    groups
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The cost the plan minimizes.
    fn cost(lengths: &[usize], groups: &[Vec<usize>], overhead: usize) -> usize {
        groups
            .iter()
            .map(|g| g.len() * g.iter().map(|&i| lengths[i]).max().unwrap_or(0) + overhead)
            .sum()
    }

    #[test]
    fn short_sentences_of_mixed_lengths_pad_less() {
        // The bench's 32 short sentences (MiniLM tokens).
        let mut lengths = vec![8; 15];
        lengths.extend([7, 11, 14, 14]);
        lengths.extend([9; 9]);
        lengths.extend([10; 4]);
        let groups = length_ordered_batches(&lengths, CallLimits::inputs(32), 64);
        let planned = cost(&lengths, &groups, 64);
        let one_call = 32 * 14 + 64;
        assert!(groups.len() > 1, "{groups:?}");
        assert!(planned < one_call, "{planned} vs {one_call}");
    }

    #[test]
    fn a_large_overhead_keeps_one_call_in_input_order() {
        let lengths = [30, 2, 17, 5];
        assert_eq!(
            length_ordered_batches(&lengths, CallLimits::inputs(8), 10_000),
            vec![vec![0, 1, 2, 3]]
        );
    }

    #[test]
    fn the_batch_size_bounds_every_call() {
        let lengths = [4; 10];
        let groups = length_ordered_batches(&lengths, CallLimits::inputs(3), 0);
        assert!(groups.iter().all(|g| g.len() <= 3), "{groups:?}");
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 10);
    }

    #[test]
    fn the_token_budget_bounds_every_call_but_a_lone_longer_input() {
        // 16 texts of 256 tokens and one of 600, at most 1024 padded tokens a call.
        let mut lengths = vec![256; 16];
        lengths.push(600);
        let limits = CallLimits {
            max_inputs: 32,
            max_tokens: Some(1024),
        };
        let groups = length_ordered_batches(&lengths, limits, 64);
        let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
        assert_eq!(sizes, [4, 4, 4, 4, 1], "{groups:?}");
        assert_eq!(groups[4], [16]);
        // Without the budget: one call of 17 padded to 600 tokens costs less than five.
        assert_eq!(
            length_ordered_batches(&lengths, CallLimits::inputs(32), 64).len(),
            2
        );
    }

    #[test]
    fn nothing_to_run_is_no_call() {
        assert!(length_ordered_batches(&[], CallLimits::inputs(8), 64).is_empty());
    }

    proptest! {
        /// Every input runs exactly once, every call is within the limits (or one input
        /// alone), and without a token budget the plan never costs more than running the
        /// inputs in order in full batches.
        #[test]
        fn plans_cover_every_input_once_within_the_limits(
            lengths in proptest::collection::vec(1_usize..300, 0..80),
            batch_size in 1_usize..40,
            max_tokens in proptest::option::of(1_usize..3000),
            overhead in 0_usize..200,
        ) {
            let limits = CallLimits { max_inputs: batch_size, max_tokens };
            let groups = length_ordered_batches(&lengths, limits, overhead);
            let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
            for group in &groups {
                let longest = group.iter().map(|&i| lengths[i]).max().unwrap_or(0);
                prop_assert!(!group.is_empty() && limits.allow(group.len(), longest));
            }
            if max_tokens.is_none() {
                let in_order: Vec<Vec<usize>> = (0..lengths.len())
                    .collect::<Vec<_>>()
                    .chunks(batch_size)
                    .map(<[usize]>::to_vec)
                    .collect();
                prop_assert!(
                    cost(&lengths, &groups, overhead) <= cost(&lengths, &in_order, overhead)
                );
            }
        }
    }
}
