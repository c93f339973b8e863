//! The registry: from a spec's `preprocess_preset` name to the preset's constructor.
//!
//! Adding a preset is one entry here (plus its module and its test). Every name of
//! [`dp_spec::PRESET_NAMES`] has an entry; a name whose entry has no constructor is known
//! (valid in specs) but not runnable by this build.

use dp_spec::{ModelSpec, VerifiedArtifacts};

use crate::error::PresetError;
use crate::{CrossEncoder, ImageClip, ImagePixels, Preset, SentenceEmbedding, TextGeneration};

/// Builds a preset from a spec and the model's verified files.
type Constructor = fn(&ModelSpec, &VerifiedArtifacts) -> Result<Box<dyn Preset>, PresetError>;

/// One registered preset name.
struct Entry {
    name: &'static str,
    build: Option<Constructor>,
}

const REGISTRY: &[Entry] = &[
    Entry {
        name: crate::text::SENTENCE_EMBEDDING,
        build: Some(|spec, artifacts| Ok(Box::new(SentenceEmbedding::from_spec(spec, artifacts)?))),
    },
    Entry {
        name: crate::clip::IMAGE_CLIP,
        build: Some(|spec, artifacts| Ok(Box::new(ImageClip::from_spec(spec, artifacts)?))),
    },
    Entry {
        name: crate::pixels::IMAGE_RESIZE_NORMALIZE,
        build: Some(|spec, artifacts| {
            Ok(Box::new(ImagePixels::resize_normalize(spec, artifacts)?))
        }),
    },
    Entry {
        name: crate::pixels::IMAGE_LETTERBOX,
        build: Some(|spec, artifacts| Ok(Box::new(ImagePixels::letterbox(spec, artifacts)?))),
    },
    Entry {
        name: crate::text::CROSS_ENCODER,
        build: Some(|spec, artifacts| Ok(Box::new(CrossEncoder::from_spec(spec, artifacts)?))),
    },
    Entry {
        name: crate::text::TEXT_GENERATION,
        build: Some(|spec, artifacts| Ok(Box::new(TextGeneration::from_spec(spec, artifacts)?))),
    },
    Entry {
        name: crate::audio::AUDIO_LOG_MEL,
        build: Some(|spec, artifacts| {
            Ok(Box::new(crate::audio::AudioLogMel::from_spec(
                spec, artifacts,
            )?))
        }),
    },
    Entry {
        name: crate::audio::AUDIO_WAVEFORM,
        build: Some(|spec, artifacts| {
            Ok(Box::new(crate::audio::AudioWaveform::from_spec(
                spec, artifacts,
            )?))
        }),
    },
    Entry {
        name: crate::audio::SPEECH_RECOGNITION,
        build: Some(|spec, artifacts| {
            Ok(Box::new(crate::audio::SpeechRecognition::from_spec(
                spec, artifacts,
            )?))
        }),
    },
    Entry {
        name: "optical_flow_pair",
        build: None,
    },
];

/// Whether a preset name can run in this build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresetStatus {
    /// The spec names no preset.
    None,
    /// Known and implemented.
    Runnable,
    /// Known (valid in specs) but not implemented by this build: the model serves `infer`
    /// tasks only.
    NotImplemented,
    /// Not a preset name at all (`dp validate` refuses such a spec).
    Unknown,
}

/// The status of the preset `spec` names.
///
/// ```
/// use dp_preset::{PresetStatus, status};
///
/// assert_eq!(status(Some("sentence_embedding")), PresetStatus::Runnable);
/// assert_eq!(status(Some("audio_log_mel")), PresetStatus::Runnable);
/// assert_eq!(status(Some("optical_flow_pair")), PresetStatus::NotImplemented);
/// assert_eq!(status(Some("no_such_preset")), PresetStatus::Unknown);
/// assert_eq!(status(None), PresetStatus::None);
/// ```
#[must_use]
pub fn status(name: Option<&str>) -> PresetStatus {
    let Some(name) = name else {
        return PresetStatus::None;
    };
    match REGISTRY.iter().find(|e| e.name == name) {
        Some(Entry { build: Some(_), .. }) => PresetStatus::Runnable,
        Some(Entry { build: None, .. }) => PresetStatus::NotImplemented,
        None => PresetStatus::Unknown,
    }
}

/// The preset of `spec`, built from the model's verified files: `Ok(None)` when the spec
/// names no preset or one this build does not implement (see [`status`]; such models still
/// serve `infer` tasks).
///
/// # Errors
/// `invalid_spec` for an unknown name, and as each preset's constructor (a missing or
/// malformed file, `preprocess_params` that contradict the model's files).
pub fn load(
    spec: &ModelSpec,
    artifacts: &VerifiedArtifacts,
) -> Result<Option<Box<dyn Preset>>, PresetError> {
    let Some(name) = spec.preprocess_preset.as_deref() else {
        return Ok(None);
    };
    match REGISTRY.iter().find(|e| e.name == name) {
        Some(Entry {
            build: Some(build), ..
        }) => build(spec, artifacts).map(Some),
        Some(Entry { build: None, .. }) => Ok(None),
        None => Err(PresetError::UnknownPreset {
            name: name.to_owned(),
            known: dp_spec::PRESET_NAMES.join(", "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_covers_exactly_the_spec_vocabulary() {
        let names: Vec<&str> = REGISTRY.iter().map(|e| e.name).collect();
        assert_eq!(names, dp_spec::PRESET_NAMES);
    }
}
