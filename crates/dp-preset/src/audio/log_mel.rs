//! Whisper's log-mel features, as transformers' `WhisperFeatureExtractor` computes them:
//! the samples zero-padded (or cut) to `n_samples` (30 s), a centred short-time Fourier
//! transform (reflect padding of `n_fft / 2`, periodic Hann window of `n_fft`, hop
//! `hop_length`), the power spectrum through Slaney-style mel filters (0–8 kHz, Slaney
//! normalization), `log10` floored at 1e-10, the last frame dropped, everything below the
//! maximum minus 8 raised to it, then `(x + 4) / 4`.
//!
//! The frames are windowed in f64 and transformed with `realfft` in f32 (as the PyTorch
//! extractor's `torch.stft`), the power spectrum, mel sums and logarithms are f64 (as the
//! NumPy extractor's); chunks and frames run in parallel; the result is f32
//! `[n_mels, nb_max_frames]` row-major.

use std::sync::Arc;

use rayon::prelude::*;
use realfft::{RealFftPlanner, RealToComplex};

use crate::error::PresetError;

/// The settings of a Whisper feature extractor (`preprocessor_config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogMelConfig {
    /// Mel bins (`feature_size`: 80, or 128 for large-v3).
    pub n_mels: usize,
    /// FFT size and window length.
    pub n_fft: usize,
    /// Samples between frames.
    pub hop_length: usize,
    /// The rate the samples are at.
    pub sampling_rate: u32,
    /// Samples per chunk (30 s × 16 kHz).
    pub n_samples: usize,
    /// Frames per chunk (`n_samples / hop_length`).
    pub nb_max_frames: usize,
}

impl Default for LogMelConfig {
    /// Whisper's: 80 bins, n_fft 400, hop 160, 16 kHz, 30-second chunks.
    fn default() -> Self {
        Self {
            n_mels: 80,
            n_fft: 400,
            hop_length: 160,
            sampling_rate: 16_000,
            n_samples: 480_000,
            nb_max_frames: 3000,
        }
    }
}

/// transformers' `hertz_to_mel` with the Slaney scale: linear below 1 kHz, logarithmic above.
fn hz_to_mel(hz: f64) -> f64 {
    const MIN_LOG_HZ: f64 = 1000.0;
    const MIN_LOG_MEL: f64 = 15.0;
    let logstep = 27.0 / 6.4_f64.ln();
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() * logstep
    } else {
        3.0 * hz / 200.0
    }
}

/// The inverse of [`hz_to_mel`].
fn mel_to_hz(mel: f64) -> f64 {
    const MIN_LOG_HZ: f64 = 1000.0;
    const MIN_LOG_MEL: f64 = 15.0;
    let logstep = 6.4_f64.ln() / 27.0;
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * (logstep * (mel - MIN_LOG_MEL)).exp()
    } else {
        200.0 * mel / 3.0
    }
}

/// `n` evenly spaced values from `start` to `end` inclusive (`numpy.linspace`).
#[allow(clippy::cast_precision_loss, reason = "indices and counts are small")]
fn linspace(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f64;
    (0..n).map(|i| start + step * i as f64).collect()
}

/// transformers' `mel_filter_bank` (Slaney scale, Slaney norm): `[n_mels][n_freqs]`.
#[must_use]
pub fn mel_filter_bank(
    n_freqs: usize,
    n_mels: usize,
    min_hz: f64,
    max_hz: f64,
    sampling_rate: u32,
) -> Vec<Vec<f64>> {
    let mel_points = linspace(hz_to_mel(min_hz), hz_to_mel(max_hz), n_mels + 2);
    let filter_hz: Vec<f64> = mel_points.iter().map(|&m| mel_to_hz(m)).collect();
    let fft_hz = linspace(0.0, f64::from(sampling_rate / 2), n_freqs);
    let diff: Vec<f64> = filter_hz.windows(2).map(|w| w[1] - w[0]).collect();
    (0..n_mels)
        .map(|m| {
            let norm = 2.0 / (filter_hz[m + 2] - filter_hz[m]);
            fft_hz
                .iter()
                .map(|&f| {
                    let down = -(filter_hz[m] - f) / diff[m];
                    let up = (filter_hz[m + 2] - f) / diff[m + 1];
                    down.min(up).max(0.0) * norm
                })
                .collect()
        })
        .collect()
}

/// One mel filter as its non-zero span of frequency bins.
#[derive(Debug, Clone)]
struct MelFilter {
    first_bin: usize,
    weights: Vec<f64>,
}

/// A log-mel extractor: window, filters and FFT plan made once.
pub struct LogMelExtractor {
    config: LogMelConfig,
    window: Vec<f64>,
    filters: Vec<MelFilter>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl std::fmt::Debug for LogMelExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogMelExtractor")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl LogMelExtractor {
    /// An extractor for `config`.
    ///
    /// # Errors
    /// `invalid_spec` for settings no Whisper extractor has (zero sizes, a hop longer than
    /// the window, a chunk whose frames do not match `n_samples / hop_length`).
    pub fn new(config: LogMelConfig) -> Result<Self, PresetError> {
        let bad = |what: String| PresetError::InvalidConfig {
            message: format!("audio_log_mel: {what}"),
            file: None,
        };
        if config.n_mels == 0 || config.n_fft < 2 || config.hop_length == 0 {
            return Err(bad(format!(
                "feature_size {}, n_fft {} and hop_length {} must be positive (n_fft ≥ 2)",
                config.n_mels, config.n_fft, config.hop_length
            )));
        }
        if config.sampling_rate == 0 || config.n_samples == 0 {
            return Err(bad(
                "sampling_rate and n_samples must be positive".to_owned()
            ));
        }
        if config.n_samples / config.hop_length != config.nb_max_frames {
            return Err(bad(format!(
                "nb_max_frames {} is not n_samples {} / hop_length {}",
                config.nb_max_frames, config.n_samples, config.hop_length
            )));
        }
        if config.n_samples <= config.n_fft / 2 {
            return Err(bad(format!(
                "n_samples {} is too short for reflect padding of n_fft {}",
                config.n_samples, config.n_fft
            )));
        }
        #[allow(clippy::cast_precision_loss, reason = "window lengths are small")]
        let window: Vec<f64> = (0..config.n_fft)
            .map(|i| {
                0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / config.n_fft as f64).cos()
            })
            .collect();
        let n_freqs = config.n_fft / 2 + 1;
        let filters = mel_filter_bank(n_freqs, config.n_mels, 0.0, 8000.0, config.sampling_rate)
            .into_iter()
            .map(|row| {
                let first_bin = row.iter().position(|&w| w != 0.0).unwrap_or(0);
                let last = row.iter().rposition(|&w| w != 0.0).unwrap_or(0);
                MelFilter {
                    first_bin,
                    weights: row[first_bin..=last.max(first_bin)].to_vec(),
                }
            })
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(config.n_fft);
        Ok(Self {
            config,
            window,
            filters,
            fft,
        })
    }

    /// The settings.
    #[must_use]
    pub const fn config(&self) -> &LogMelConfig {
        &self.config
    }

    /// The features of one chunk: `samples` (at most `n_samples`; more are cut, fewer
    /// padded with zeros), f32 `[n_mels, nb_max_frames]` row-major.
    #[must_use]
    pub fn features(&self, samples: &[f32]) -> Vec<f32> {
        let c = &self.config;
        let half = c.n_fft / 2;
        let n = c.n_samples;
        let used = &samples[..samples.len().min(n)];
        // The chunk, zero-padded to n_samples, then reflect-padded by half a window.
        let at = |i: usize| -> f64 { used.get(i).map_or(0.0, |&v| f64::from(v)) };
        let padded: Vec<f64> = (0..n + 2 * half)
            .map(|j| {
                if j < half {
                    at(half - j)
                } else if j < n + half {
                    at(j - half)
                } else {
                    at(2 * n + half - 2 - j)
                }
            })
            .collect();
        let frames = c.nb_max_frames;
        let n_mels = c.n_mels;
        // Frame-major log-mel values, computed in parallel blocks of frames.
        let mut by_frame = vec![0.0_f64; frames * n_mels];
        by_frame
            .par_chunks_mut(n_mels * 64)
            .enumerate()
            .for_each(|(block, out)| {
                let mut input = self.fft.make_input_vec();
                let mut spectrum = self.fft.make_output_vec();
                let mut scratch = self.fft.make_scratch_vec();
                let mut power = vec![0.0_f64; spectrum.len()];
                for (k, row) in out.chunks_mut(n_mels).enumerate() {
                    let frame = block * 64 + k;
                    let start = frame * c.hop_length;
                    // The windowed frame in f64, transformed in f32 (as PyTorch's
                    // extractor does; the spectrum's rounding, ~1e-7 relative, is far
                    // below the features' 1e-4 bar), the power and mel sums in f64.
                    #[allow(clippy::cast_possible_truncation, reason = "the FFT runs in f32")]
                    for ((x, &s), &w) in input
                        .iter_mut()
                        .zip(&padded[start..start + c.n_fft])
                        .zip(&self.window)
                    {
                        *x = (s * w) as f32;
                    }
                    // A plan of the right size never fails on buffers it made.
                    if self
                        .fft
                        .process_with_scratch(&mut input, &mut spectrum, &mut scratch)
                        .is_err()
                    {
                        row.fill(f64::NAN);
                        continue;
                    }
                    for (p, z) in power.iter_mut().zip(&spectrum) {
                        let (re, im) = (f64::from(z.re), f64::from(z.im));
                        *p = re * re + im * im;
                    }
                    for (value, filter) in row.iter_mut().zip(&self.filters) {
                        let mel: f64 = filter
                            .weights
                            .iter()
                            .zip(&power[filter.first_bin..])
                            .map(|(w, p)| w * p)
                            .sum();
                        *value = mel.max(1e-10).log10();
                    }
                }
            });
        let max = by_frame.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let floor = max - 8.0;
        let mut out = vec![0.0_f32; n_mels * frames];
        for (frame, row) in by_frame.chunks(n_mels).enumerate() {
            for (mel, &v) in row.iter().enumerate() {
                #[allow(clippy::cast_possible_truncation, reason = "features are f32")]
                {
                    out[mel * frames + frame] = ((v.max(floor) + 4.0) / 4.0) as f32;
                }
            }
        }
        out
    }

    /// The features of every 30-second chunk of `samples` (at least one, even for no
    /// samples), each `[n_mels, nb_max_frames]`, concatenated.
    #[must_use]
    pub fn chunked_features(&self, samples: &[f32]) -> Vec<Vec<f32>> {
        if samples.is_empty() {
            return vec![self.features(&[])];
        }
        samples
            .par_chunks(self.config.n_samples)
            .map(|chunk| self.features(chunk))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slaney_scale_round_trips_and_is_linear_below_1k() {
        assert!((hz_to_mel(600.0) - 9.0).abs() < 1e-12);
        for hz in [0.0, 440.0, 1000.0, 3000.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-9, "{hz}");
        }
    }

    #[test]
    fn filters_are_triangles_with_slaney_area() {
        let filters = mel_filter_bank(201, 80, 0.0, 8000.0, 16_000);
        assert_eq!((filters.len(), filters[0].len()), (80, 201));
        for row in &filters {
            assert!(row.iter().all(|&w| w >= 0.0));
            assert!(row.iter().any(|&w| w > 0.0));
        }
    }

    #[test]
    fn a_silent_chunk_is_flat_and_a_tone_peaks_at_its_bin() {
        let extractor = LogMelExtractor::new(LogMelConfig::default()).unwrap_or_else(|e| {
            panic!("{e}");
        });
        let silent = extractor.features(&[]);
        assert_eq!(silent.len(), 80 * 3000);
        // log10(1e-10) = -10, clamped to itself, (x + 4) / 4 = -1.5 everywhere.
        assert!(silent.iter().all(|&v| (v + 1.5).abs() < 1e-6));
        #[allow(clippy::cast_precision_loss, reason = "test signal")]
        let tone: Vec<f32> = (0..16_000)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16_000.0).sin())
            .collect();
        let features = extractor.features(&tone);
        let frame = 50;
        let column: Vec<f32> = (0..80).map(|m| features[m * 3000 + frame]).collect();
        let peak = column
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i);
        let filters = mel_filter_bank(201, 80, 0.0, 8000.0, 16_000);
        // 1 kHz is bin 25 of the 201 (40 Hz apart): the filter weighting it most peaks.
        let expected = (0..80).max_by(|&a, &b| filters[a][25].total_cmp(&filters[b][25]));
        assert_eq!(peak, expected);
        assert!(features.iter().all(|v| v.is_finite()));
    }
}
