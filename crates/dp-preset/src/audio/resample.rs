//! Streaming mono resampling to a model's sample rate with rubato's synchronous FFT
//! resampler.
//!
//! # Why the FFT resampler
//!
//! The rates are fixed for a whole input (the file's rate and the model's), so the
//! synchronous [`rubato::Fft`] resampler applies; rubato documents it as matching the quality
//! of its cubic-interpolated asynchronous sinc resampler while being far faster, which
//! matters for hours of audio. It is an exact (not table-interpolated) windowed-sinc
//! low-pass applied by FFT convolution, followed by band-limited (spectral) resampling:
//!
//! - block: the FFT works on blocks of `fft_size_in` input frames, the smallest *even*
//!   multiple of `source / gcd(source, target)` that is at least [`MIN_FILTER_LEN`] (2048)
//!   frames (44.1 kHz → 16 kHz: 2646 in, 960 out; 48 kHz → 16 kHz: 2052 in, 684 out);
//! - filter: a windowed sinc of `fft_size_in` taps at the input rate (2646 taps, 60 ms for
//!   44.1 kHz), window Blackman-Harris (rubato's `BlackmanHarris2`, the sinc window squared),
//!   so no oversampling table and no interpolation between table entries;
//! - cutoff: rubato's `calculate_cutoff(fft_size_out, BlackmanHarris2)`, scaled to the lower
//!   of the two Nyquist frequencies (≈ 0.96 × the output's Nyquist for 44.1 → 16 kHz), which
//!   places the whole transition band below the lower Nyquist frequency: no aliasing.
//!
//! # Delay and length
//!
//! The filter is centred on tap `fft_size_in / 2`, so the output lags the input by
//! `fft_size_in / 2` input frames = `fft_size_out / 2` output frames, which is rubato's
//! `output_delay()`. Both blocks are even, so this delay is a whole number of output frames
//! (with an odd block rubato's integer `output_delay()` would be off by a fraction of a frame,
//! a time shift of up to half an input frame); those first frames are dropped, so output
//! sample `n` is the input's value at time `n / target_rate` (no shift, measured on sines). At the end the tail is flushed with silence and the
//! output is cut to exactly `round(input_frames × target / source)` samples
//! ([`output_len`]). When the two rates are equal, samples pass through untouched
//! (bit-exact).

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler, WindowFunction};

use crate::error::PresetError;

/// The shortest anti-aliasing filter (and FFT block), in input frames.
pub const MIN_FILTER_LEN: usize = 2048;

/// The highest sample rate accepted, in Hz (768 kHz, the highest rate in common use).
pub const MAX_SAMPLE_RATE: u32 = 768_000;

/// The number of output samples `input_frames` at `source_rate` make at `target_rate`:
/// `round(input_frames × target_rate / source_rate)`, halves rounded up.
///
/// ```
/// use dp_preset::audio::resample::output_len;
/// assert_eq!(output_len(44_100, 44_100, 16_000), 16_000);
/// assert_eq!(output_len(3, 48_000, 16_000), 1);
/// ```
#[must_use]
pub fn output_len(input_frames: u64, source_rate: u32, target_rate: u32) -> u64 {
    if source_rate == 0 {
        return 0;
    }
    let num = u128::from(input_frames) * u128::from(target_rate) + u128::from(source_rate / 2);
    u64::try_from(num / u128::from(source_rate)).unwrap_or(u64::MAX)
}

/// Checks a sample rate is one we can resample from or to: `invalid_input`
/// (`audio_bad_sample_rate`) for 0 Hz or above [`MAX_SAMPLE_RATE`].
///
/// # Errors
///
/// As above; `what` names the rate in the message ("the file's sample rate", …).
pub fn check_rate(rate: u32, what: &str) -> Result<(), PresetError> {
    if rate == 0 {
        return Err(PresetError::input(
            "audio_bad_sample_rate",
            format!("{what} is 0 Hz; the audio header is broken — re-encode the audio"),
        ));
    }
    if rate > MAX_SAMPLE_RATE {
        return Err(PresetError::input(
            "audio_bad_sample_rate",
            format!(
                "{what} is {rate} Hz, above the {MAX_SAMPLE_RATE} Hz accepted; resample the \
                 audio to a usual rate (16–48 kHz) first"
            ),
        ));
    }
    Ok(())
}

/// A streaming mono resampler from one fixed rate to another; see the module docs for the
/// filter and the delay handling.
///
/// Feed samples with [`Self::push`] in pieces of any size, then call [`Self::finish`] once:
/// the samples handed to `out` over all calls are the whole resampled signal.
///
/// ```
/// use dp_preset::audio::resample::MonoResampler;
/// let mut resampler = MonoResampler::new(48_000, 16_000)?;
/// let mut out = Vec::new();
/// let mut sink = |s: &[f32]| { out.extend_from_slice(s); Ok(()) };
/// resampler.push(&vec![0.25; 4_800], &mut sink)?;
/// resampler.finish(&mut sink)?;
/// assert_eq!(out.len(), 1_600);
/// # Ok::<(), dp_preset::PresetError>(())
/// ```
pub struct MonoResampler {
    source_rate: u32,
    target_rate: u32,
    /// `None` when the rates are equal (samples pass through).
    fft: Option<FftStage>,
    /// Input frames pushed so far.
    input_frames: u64,
    /// Output frames handed out so far.
    emitted: u64,
}

struct FftStage {
    resampler: Fft<f32>,
    /// Input frames per block.
    chunk_in: usize,
    /// Input frames waiting for a full block.
    pending: Vec<f32>,
    /// The output of one block.
    out_buf: Vec<f32>,
    /// Leading output frames (the delay) still to drop.
    skip: usize,
}

impl std::fmt::Debug for MonoResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MonoResampler")
            .field("source_rate", &self.source_rate)
            .field("target_rate", &self.target_rate)
            .field("input_frames", &self.input_frames)
            .field("emitted", &self.emitted)
            .finish_non_exhaustive()
    }
}

/// The FFT block (and filter) length in input frames: the smallest even multiple of
/// `source / gcd(source, target)` that is at least [`MIN_FILTER_LEN`]. Even multiples make
/// both blocks even, so the filter's centre (`block / 2`, rubato's sinc is centred on
/// `len / 2`) falls on a whole output frame and the delay is compensated exactly.
fn block_len(source: usize, target: usize) -> usize {
    let (mut a, mut b) = (source, target);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    let min_in = source / a.max(1);
    let mut blocks = MIN_FILTER_LEN.div_ceil(min_in).max(1);
    blocks += blocks % 2;
    blocks * min_in
}

fn resample_error(source: u32, target: u32, err: &dyn std::fmt::Display) -> PresetError {
    PresetError::input(
        "audio_bad_sample_rate",
        format!("cannot resample {source} Hz to {target} Hz: {err}"),
    )
}

impl MonoResampler {
    /// A resampler from `source_rate` to `target_rate` (Hz).
    ///
    /// # Errors
    ///
    /// `invalid_input` (`audio_bad_sample_rate`) when either rate is 0 or above
    /// [`MAX_SAMPLE_RATE`].
    pub fn new(source_rate: u32, target_rate: u32) -> Result<Self, PresetError> {
        check_rate(source_rate, "the audio's sample rate")?;
        check_rate(target_rate, "the model's sample rate")?;
        let fft = if source_rate == target_rate {
            None
        } else {
            let (src, dst) = (source_rate as usize, target_rate as usize);
            let block_in = block_len(src, dst);
            let resampler = Fft::<f32>::new_custom(
                src,
                dst,
                block_in,
                1,
                1,
                WindowFunction::BlackmanHarris2,
                FixedSync::Both,
            )
            .map_err(|e| resample_error(source_rate, target_rate, &e))?;
            // With even blocks the filter's delay (`fft_size_in / 2` input frames) is
            // exactly `output_delay()` output frames: no fractional shift is left.
            if resampler.fft_size_in() != block_in || resampler.fft_size_out() % 2 != 0 {
                return Err(resample_error(
                    source_rate,
                    target_rate,
                    &"rubato chose an odd FFT block",
                ));
            }
            let chunk_in = resampler.input_frames_max();
            let out_len = resampler.output_frames_max();
            let skip = resampler.output_delay();
            Some(FftStage {
                resampler,
                chunk_in,
                pending: Vec::with_capacity(chunk_in),
                out_buf: vec![0.0; out_len],
                skip,
            })
        };
        Ok(Self {
            source_rate,
            target_rate,
            fft,
            input_frames: 0,
            emitted: 0,
        })
    }

    /// The rate samples are pushed at, in Hz.
    #[must_use]
    pub const fn source_rate(&self) -> u32 {
        self.source_rate
    }

    /// The rate samples come out at, in Hz.
    #[must_use]
    pub const fn target_rate(&self) -> u32 {
        self.target_rate
    }

    /// Resamples `input` (the next mono samples at the source rate) and hands the output
    /// samples ready so far to `out` (possibly none, possibly in several pieces).
    ///
    /// # Errors
    ///
    /// What `out` returns; `invalid_input` (`audio_bad_sample_rate`) if rubato fails, which
    /// the buffer sizes used here rule out.
    pub fn push(
        &mut self,
        input: &[f32],
        out: &mut dyn FnMut(&[f32]) -> Result<(), PresetError>,
    ) -> Result<(), PresetError> {
        self.input_frames = self.input_frames.saturating_add(input.len() as u64);
        if self.fft.is_none() {
            self.emitted = self.input_frames;
            return if input.is_empty() { Ok(()) } else { out(input) };
        }
        let (source, target) = (self.source_rate, self.target_rate);
        let mut rest = input;
        while !rest.is_empty() {
            let Some(stage) = self.fft.as_mut() else {
                break;
            };
            let take = (stage.chunk_in - stage.pending.len()).min(rest.len());
            stage.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if stage.pending.len() == stage.chunk_in {
                let produced = stage.run(None, source, target)?;
                self.emit(produced, u64::MAX, out)?;
            }
        }
        Ok(())
    }

    /// Flushes the resampler: hands `out` the last samples so that the total output is
    /// exactly [`output_len`] of the input pushed. Call once, after the last [`Self::push`].
    ///
    /// # Errors
    ///
    /// As [`Self::push`].
    pub fn finish(
        &mut self,
        out: &mut dyn FnMut(&[f32]) -> Result<(), PresetError>,
    ) -> Result<(), PresetError> {
        let total = output_len(self.input_frames, self.source_rate, self.target_rate);
        if self.fft.is_none() {
            return Ok(());
        }
        let mut first = true;
        while self.emitted < total {
            let Some(stage) = self.fft.as_mut() else {
                break;
            };
            // The partial block of real input first, then blocks of silence until the
            // delayed tail has come out.
            let partial = if first { stage.pending.len() } else { 0 };
            first = false;
            let produced = stage.run(Some(partial), self.source_rate, self.target_rate)?;
            stage.pending.clear();
            if produced == 0 {
                break;
            }
            self.emit(produced, total, out)?;
        }
        Ok(())
    }

    /// Hands out the first `produced` samples of the stage's output buffer, less the delay
    /// still to drop, up to `total` samples overall.
    fn emit(
        &mut self,
        produced: usize,
        total: u64,
        out: &mut dyn FnMut(&[f32]) -> Result<(), PresetError>,
    ) -> Result<(), PresetError> {
        let Some(stage) = self.fft.as_mut() else {
            return Ok(());
        };
        let drop = stage.skip.min(produced);
        stage.skip -= drop;
        let room = usize::try_from(total.saturating_sub(self.emitted)).unwrap_or(usize::MAX);
        let ready = &stage.out_buf[drop..produced];
        let ready = &ready[..ready.len().min(room)];
        if ready.is_empty() {
            return Ok(());
        }
        self.emitted += ready.len() as u64;
        out(ready)
    }
}

impl FftStage {
    /// Runs one block: the `pending` input (all of it, or its first `partial` frames padded
    /// with silence) into `out_buf`; returns the output frames written.
    fn run(
        &mut self,
        partial: Option<usize>,
        source: u32,
        target: u32,
    ) -> Result<usize, PresetError> {
        let frames_in = self.pending.len();
        // A partial block still needs a buffer of a full block's length.
        if frames_in < self.chunk_in {
            self.pending.resize(self.chunk_in, 0.0);
        }
        let input = InterleavedSlice::new(&self.pending[..], 1, self.chunk_in)
            .map_err(|e| resample_error(source, target, &e))?;
        let frames_out = self.out_buf.len();
        let mut output = InterleavedSlice::new_mut(&mut self.out_buf[..], 1, frames_out)
            .map_err(|e| resample_error(source, target, &e))?;
        let indexing = partial.map(|n| Indexing::new().partial_len(n.min(frames_in)));
        let (_, produced) = self
            .resampler
            .process_into_buffer(&input, &mut output, indexing.as_ref())
            .map_err(|e| resample_error(source, target, &e))?;
        self.pending.clear();
        Ok(produced)
    }
}

/// Resamples a whole mono signal from `source_rate` to `target_rate`: exactly
/// [`output_len`] samples, aligned in time with the input (see the module docs); a copy of
/// `samples` when the rates are equal.
///
/// # Errors
///
/// `invalid_input` (`audio_bad_sample_rate`) when either rate is 0 or above
/// [`MAX_SAMPLE_RATE`].
///
/// ```
/// use dp_preset::audio::resample::resample_mono;
/// let out = resample_mono(&[0.5; 441], 44_100, 16_000)?;
/// assert_eq!(out.len(), 160);
/// # Ok::<(), dp_preset::PresetError>(())
/// ```
pub fn resample_mono(
    samples: &[f32],
    source_rate: u32,
    target_rate: u32,
) -> Result<Vec<f32>, PresetError> {
    let mut resampler = MonoResampler::new(source_rate, target_rate)?;
    let len = output_len(samples.len() as u64, source_rate, target_rate);
    let mut out = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    let mut sink = |s: &[f32]| {
        out.extend_from_slice(s);
        Ok(())
    };
    resampler.push(samples, &mut sink)?;
    resampler.finish(&mut sink)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, rate: u32, len: usize) -> Vec<f32> {
        (0..len)
            .map(|n| (2.0 * std::f64::consts::PI * freq * n as f64 / f64::from(rate)).sin() as f32)
            .collect()
    }

    /// Max |Δ| against the analytic sine over the first 100 samples, the middle (beyond the
    /// filter's reach of either end, where an abrupt start or end rings), and the last 100.
    fn errors(out: &[f32], freq: f64, src: u32, rate: u32) -> (f64, f64, f64) {
        let reach = block_len(src as usize, rate as usize) / 2 * rate as usize / src as usize;
        let expected = sine(freq, rate, out.len());
        let d: Vec<f64> = out
            .iter()
            .zip(&expected)
            .map(|(a, b)| f64::from(a - b).abs())
            .collect();
        let max = |s: &[f64]| s.iter().copied().fold(0.0, f64::max);
        let n = d.len();
        (
            max(&d[..100]),
            max(&d[reach..n - reach]),
            max(&d[n - 100..]),
        )
    }

    #[test]
    fn equal_rates_pass_through_bit_exact() {
        let input: Vec<f32> = (0..10_000)
            .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let out = resample_mono(&input, 16_000, 16_000).unwrap();
        assert_eq!(
            out.iter().map(|s| s.to_bits()).collect::<Vec<_>>(),
            input.iter().map(|s| s.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn sine_44k1_to_16k_matches_the_analytic_sine() {
        let input = sine(1000.0, 44_100, 44_100 * 2);
        let out = resample_mono(&input, 44_100, 16_000).unwrap();
        assert_eq!(out.len(), 32_000);
        let (head, middle, tail) = errors(&out, 1000.0, 44_100, 16_000);
        eprintln!(
            "44.1k→16k 1 kHz sine: max |Δ| first100 {head:.3e} middle {middle:.3e} last100 {tail:.3e}"
        );
        assert!(middle < 1e-5, "middle error {middle}");
    }

    #[test]
    fn other_rate_pairs_match_the_analytic_sine() {
        for (src, dst, freq) in [
            (48_000, 16_000, 1000.0),
            (8_000, 16_000, 440.0),
            (22_050, 16_000, 3000.0),
            (44_100, 48_000, 5000.0),
            (16_000, 24_000, 7000.0),
        ] {
            let input = sine(freq, src, 2 * src as usize);
            let out = resample_mono(&input, src, dst).unwrap();
            assert_eq!(out.len() as u64, output_len(input.len() as u64, src, dst));
            let (head, middle, tail) = errors(&out, freq, src, dst);
            eprintln!(
                "{src}→{dst} {freq} Hz sine: max |Δ| first100 {head:.3e} middle {middle:.3e} last100 {tail:.3e}"
            );
            assert!(middle < 1e-5, "{src}→{dst}: middle error {middle}");
        }
    }

    #[test]
    fn output_length_is_rounded_ratio_for_any_input_length() {
        for (src, dst) in [
            (44_100, 16_000),
            (8_000, 16_000),
            (48_000, 16_000),
            (11_025, 16_000),
        ] {
            for len in [0usize, 1, 2, 3, 50, 441, 1000, 2205, 2206, 4410, 10_007] {
                let out = resample_mono(&vec![0.1; len], src, dst).unwrap();
                assert_eq!(
                    out.len() as u64,
                    output_len(len as u64, src, dst),
                    "{src}→{dst} len {len}"
                );
            }
        }
    }

    #[test]
    fn pieces_of_any_size_give_the_same_output() {
        let input = sine(700.0, 44_100, 30_000);
        let whole = resample_mono(&input, 44_100, 16_000).unwrap();
        let mut resampler = MonoResampler::new(44_100, 16_000).unwrap();
        let mut out = Vec::new();
        let mut sink = |s: &[f32]| {
            out.extend_from_slice(s);
            Ok(())
        };
        let mut rest = &input[..];
        let mut size = 1;
        while !rest.is_empty() {
            let n = size.min(rest.len());
            resampler.push(&rest[..n], &mut sink).unwrap();
            rest = &rest[n..];
            size = size * 3 % 5000 + 1;
        }
        resampler.finish(&mut sink).unwrap();
        assert_eq!(out, whole);
    }

    #[test]
    fn dc_stays_dc_and_there_is_no_leading_shift() {
        let out = resample_mono(&vec![0.5; 44_100], 44_100, 16_000).unwrap();
        let worst = out[200..out.len() - 200]
            .iter()
            .map(|s| (s - 0.5).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "{worst}");
        // An impulse lands where its time says: input 441 × k ↔ output 160 × k.
        let mut impulse = vec![0.0f32; 44_100];
        impulse[4410 * 3] = 1.0;
        let out = resample_mono(&impulse, 44_100, 16_000).unwrap();
        let peak = out
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i);
        assert_eq!(peak, Some(1600 * 3));
    }

    #[test]
    fn bad_rates_are_refused() {
        for (src, dst) in [(0, 16_000), (16_000, 0), (1_000_000, 16_000)] {
            let err = MonoResampler::new(src, dst).unwrap_err();
            assert!(
                matches!(
                    err,
                    PresetError::InvalidInput {
                        reason: "audio_bad_sample_rate",
                        ..
                    }
                ),
                "{err:?}"
            );
        }
    }
}
