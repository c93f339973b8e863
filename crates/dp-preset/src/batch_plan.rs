//! Which inputs run together: texts grouped by length so that a model call pads little.
//!
//! A text model's call costs about its batch size times its longest sequence, padding
//! included. Thirty-two short sentences of 7 to 14 tokens padded to 14 are 448 tokens of
//! work for 287 real ones; run as 25 texts of at most 9 tokens and 7 of at most 14, they are
//! 323. Splitting is not free either: every call has a fixed cost (a runtime's dispatch,
//! a round trip to a server), expressed here in padded tokens. [`length_ordered_batches`]
//! picks, among the groupings of the texts sorted by length, the one of least total cost.

/// Groups of input indices, each run as one model call: the inputs sorted by `lengths`
/// (tokens each takes) and cut into runs of at most `batch_size` so that the sum over the
/// calls of `len × longest + call_overhead` is least.
///
/// Every index appears once. When one call is cheapest and the inputs fit in it, the single
/// group keeps the inputs' own order (the call is the one an unplanned run makes).
///
/// ```
/// use dp_preset::batch_plan::length_ordered_batches;
///
/// // Long and short texts interleaved: two calls, each padding little.
/// let groups = length_ordered_batches(&[100, 5, 100, 5], 4, 8);
/// assert_eq!(groups, vec![vec![1, 3], vec![0, 2]]);
/// // Close lengths: one call, in input order.
/// assert_eq!(length_ordered_batches(&[9, 8, 10], 4, 8), vec![vec![0, 1, 2]]);
/// ```
#[must_use]
pub fn length_ordered_batches(
    lengths: &[usize],
    batch_size: usize,
    call_overhead: usize,
) -> Vec<Vec<usize>> {
    let n = lengths.len();
    let batch_size = batch_size.max(1);
    let mut order: Vec<usize> = (0..n).collect();
    // Stable: equal lengths keep their input order.
    order.sort_by_key(|&i| lengths[i]);
    // best[j]: least cost of the first j sorted inputs; cut[j]: where its last call starts.
    // In u128: far from overflowing for any number of inputs that fits in memory.
    let mut best = vec![0_u128; n + 1];
    let mut cut = vec![0_usize; n + 1];
    for j in 1..=n {
        let longest = lengths[order[j - 1]] as u128;
        best[j] = u128::MAX;
        for i in j.saturating_sub(batch_size)..j {
            let cost = best[i] + (j - i) as u128 * longest + call_overhead as u128;
            if cost < best[j] {
                best[j] = cost;
                cut[j] = i;
            }
        }
    }
    if n <= batch_size && cut[n] == 0 {
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
        let groups = length_ordered_batches(&lengths, 32, 64);
        let planned = cost(&lengths, &groups, 64);
        let one_call = 32 * 14 + 64;
        assert!(groups.len() > 1, "{groups:?}");
        assert!(planned < one_call, "{planned} vs {one_call}");
    }

    #[test]
    fn a_large_overhead_keeps_one_call_in_input_order() {
        let lengths = [30, 2, 17, 5];
        assert_eq!(
            length_ordered_batches(&lengths, 8, 10_000),
            vec![vec![0, 1, 2, 3]]
        );
    }

    #[test]
    fn the_batch_size_bounds_every_call() {
        let lengths = [4; 10];
        let groups = length_ordered_batches(&lengths, 3, 0);
        assert!(groups.iter().all(|g| g.len() <= 3), "{groups:?}");
        assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 10);
    }

    #[test]
    fn nothing_to_run_is_no_call() {
        assert!(length_ordered_batches(&[], 8, 64).is_empty());
    }

    proptest! {
        /// Every input runs exactly once, no call is larger than the batch size, and the
        /// plan never costs more than running the inputs in order in full batches.
        #[test]
        fn plans_cover_every_input_once_and_never_cost_more(
            lengths in proptest::collection::vec(1_usize..300, 0..80),
            batch_size in 1_usize..40,
            overhead in 0_usize..200,
        ) {
            let groups = length_ordered_batches(&lengths, batch_size, overhead);
            let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
            prop_assert!(groups.iter().all(|g| !g.is_empty() && g.len() <= batch_size));
            let in_order: Vec<Vec<usize>> = (0..lengths.len())
                .collect::<Vec<_>>()
                .chunks(batch_size)
                .map(<[usize]>::to_vec)
                .collect();
            prop_assert!(cost(&lengths, &groups, overhead) <= cost(&lengths, &in_order, overhead));
        }
    }
}
