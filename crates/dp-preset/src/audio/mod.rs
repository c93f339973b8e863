//! Audio for the audio presets: decoding any accepted container to mono samples at the
//! model's rate ([`decode`], [`resample`]), Whisper's log-mel features ([`log_mel`]), and
//! the presets `audio_log_mel` and `audio_waveform` built on them.

pub mod decode;
pub mod log_mel;
pub mod presets;
pub mod resample;

pub use presets::{AUDIO_LOG_MEL, AUDIO_WAVEFORM, AudioLogMel, AudioWaveform};
