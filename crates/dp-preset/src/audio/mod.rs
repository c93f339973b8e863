//! Audio for the audio presets: decoding any accepted container to mono samples at the
//! model's rate ([`decode`], [`resample`]), Whisper's log-mel features ([`log_mel`]), and
//! the presets `audio_log_mel`, `audio_waveform` and `speech_recognition` (Whisper's
//! features, prompt and detokenization) built on them.

pub mod decode;
pub mod log_mel;
pub mod presets;
pub mod resample;
pub mod speech;

pub use presets::{AUDIO_LOG_MEL, AUDIO_WAVEFORM, AudioChunks, AudioLogMel, AudioWaveform};
pub use speech::{
    SPEECH_RECOGNITION, SpeechRecognition, SpeechTask, SpeechToTextPreset, WhisperPrompting,
};
