//! What a preset takes in and gives back: typed inputs (texts, images, a query with
//! documents) and typed outputs (vectors, probabilities, scores, tensors).

use dp_spec::NamedTensors;

/// One image, as a caller has it.
#[derive(Clone, PartialEq, Eq)]
pub enum ImageInput {
    /// The bytes of an image file (JPEG, PNG, WebP, GIF, BMP); the format is sniffed from
    /// the bytes, never from a file name.
    Encoded(Vec<u8>),
    /// Decoded pixels: 8-bit RGB, row-major, `width * height * 3` bytes.
    Rgb8 {
        /// Columns.
        width: u32,
        /// Rows.
        height: u32,
        /// `R, G, B` per pixel, row by row.
        pixels: Vec<u8>,
    },
}

impl ImageInput {
    /// The bytes that identify this input in caches (the encoded file, or the pixels
    /// after a header that tells the two kinds and the sizes apart).
    #[must_use]
    pub fn identity(&self) -> Vec<u8> {
        match self {
            Self::Encoded(bytes) => {
                let mut out = b"encoded\0".to_vec();
                out.extend_from_slice(bytes);
                out
            }
            Self::Rgb8 {
                width,
                height,
                pixels,
            } => {
                let mut out = b"rgb8\0".to_vec();
                out.extend_from_slice(&width.to_le_bytes());
                out.extend_from_slice(&height.to_le_bytes());
                out.extend_from_slice(pixels);
                out
            }
        }
    }
}

impl std::fmt::Debug for ImageInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Encoded(bytes) => write!(f, "Encoded({} bytes)", bytes.len()),
            Self::Rgb8 { width, height, .. } => write!(f, "Rgb8({width}x{height})"),
        }
    }
}

/// One audio input, as a caller has it.
#[derive(Clone, PartialEq)]
pub enum AudioInput {
    /// The bytes of an audio file (WAV, FLAC, MP3, Ogg/Vorbis); the container is sniffed
    /// from the bytes, never from a file name.
    Encoded(Vec<u8>),
    /// Decoded mono samples in [-1, 1] at `sample_rate`.
    Samples {
        /// Samples per second.
        sample_rate: u32,
        /// The samples.
        samples: Vec<f32>,
    },
}

impl AudioInput {
    /// The bytes that identify this input in caches (the file, or the rate and samples
    /// after a header that tells the two kinds apart).
    #[must_use]
    pub fn identity(&self) -> Vec<u8> {
        match self {
            Self::Encoded(bytes) => [b"audio\0".as_slice(), bytes].concat(),
            Self::Samples {
                sample_rate,
                samples,
            } => {
                let mut out = b"samples\0".to_vec();
                out.extend_from_slice(&sample_rate.to_le_bytes());
                out.extend(samples.iter().flat_map(|s| s.to_le_bytes()));
                out
            }
        }
    }
}

impl std::fmt::Debug for AudioInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Encoded(bytes) => write!(f, "Encoded({} bytes)", bytes.len()),
            Self::Samples {
                sample_rate,
                samples,
            } => write!(f, "Samples({} at {sample_rate} Hz)", samples.len()),
        }
    }
}

/// What one preset call works on. Each variant is one kind of request; a preset says
/// which it accepts ([`crate::Preset::accepts`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PresetInputs<'a> {
    /// Texts to embed.
    Texts(&'a [&'a str]),
    /// Images to embed.
    Images(&'a [ImageInput]),
    /// Images to classify among labels (zero-shot): one probability per image and label.
    ImagesWithLabels {
        /// The images.
        images: &'a [ImageInput],
        /// The candidate labels, as texts.
        labels: &'a [&'a str],
    },
    /// Audio (speech, music): features or samples for the model.
    Audio(&'a [AudioInput]),
    /// A query and the documents to score against it (reranking): one score per document.
    QueryWithDocuments {
        /// The query, paired with every document.
        query: &'a str,
        /// The documents, scored in this order.
        documents: &'a [&'a str],
    },
}

impl<'a> PresetInputs<'a> {
    /// The kind of request.
    #[must_use]
    pub const fn kind(&self) -> InputKind {
        match self {
            Self::Texts(_) => InputKind::Texts,
            Self::Images(_) => InputKind::Images,
            Self::ImagesWithLabels { .. } => InputKind::ImagesWithLabels,
            Self::QueryWithDocuments { .. } => InputKind::QueryWithDocuments,
            Self::Audio(_) => InputKind::Audio,
        }
    }

    /// How many results the request gives (texts, images or documents).
    #[must_use]
    pub const fn len(&self) -> usize {
        match self {
            Self::Texts(texts) => texts.len(),
            Self::Images(images) | Self::ImagesWithLabels { images, .. } => images.len(),
            Self::QueryWithDocuments { documents, .. } => documents.len(),
            Self::Audio(audio) => audio.len(),
        }
    }

    /// Whether it has no texts, images or documents.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The items `range` of the request (labels and the query go whole with every slice).
    #[must_use]
    pub fn slice(&self, range: std::ops::Range<usize>) -> Self {
        match *self {
            Self::Texts(texts) => Self::Texts(&texts[range]),
            Self::Images(images) => Self::Images(&images[range]),
            Self::ImagesWithLabels { images, labels } => Self::ImagesWithLabels {
                images: &images[range],
                labels,
            },
            Self::QueryWithDocuments { query, documents } => Self::QueryWithDocuments {
                query,
                documents: &documents[range],
            },
            Self::Audio(audio) => Self::Audio(&audio[range]),
        }
    }

    /// The inputs at `indices`, in that order, for the text requests a preset may regroup
    /// (see [`crate::Preset::input_lengths`]); `scratch` holds the chosen texts.
    ///
    /// # Errors
    /// `invalid_input` for images or audio, which are not regrouped.
    pub fn gather<'b>(
        &self,
        indices: &[usize],
        scratch: &'b mut Vec<&'a str>,
    ) -> Result<PresetInputs<'b>, crate::PresetError>
    where
        'a: 'b,
    {
        fn pick<'a>(scratch: &mut Vec<&'a str>, all: &[&'a str], indices: &[usize]) {
            scratch.clear();
            scratch.extend(indices.iter().map(|&i| all[i]));
        }
        match *self {
            Self::Texts(texts) => {
                pick(scratch, texts, indices);
                Ok(PresetInputs::Texts(scratch))
            }
            Self::QueryWithDocuments { query, documents } => {
                pick(scratch, documents, indices);
                Ok(PresetInputs::QueryWithDocuments {
                    query,
                    documents: scratch,
                })
            }
            Self::Images(_) | Self::ImagesWithLabels { .. } | Self::Audio(_) => {
                Err(crate::PresetError::input(
                    "not_regroupable",
                    format!("{:?} requests run in their order", self.kind()),
                ))
            }
        }
    }
}

/// The kinds of request a preset can accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputKind {
    /// [`PresetInputs::Texts`].
    Texts,
    /// [`PresetInputs::Images`].
    Images,
    /// [`PresetInputs::ImagesWithLabels`].
    ImagesWithLabels,
    /// [`PresetInputs::QueryWithDocuments`].
    QueryWithDocuments,
    /// [`PresetInputs::Audio`].
    Audio,
}

impl InputKind {
    /// The name used in messages.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Texts => "texts",
            Self::Images => "images",
            Self::ImagesWithLabels => "images with labels",
            Self::QueryWithDocuments => "a query with documents",
            Self::Audio => "audio",
        }
    }
}

/// What a preset made of a model's outputs, one row per text or image, in input order.
#[derive(Debug, Clone, PartialEq)]
pub enum PresetOutput {
    /// One vector per input (embeddings).
    Vectors(Vec<Vec<f32>>),
    /// One probability per input and label (zero-shot classification), each row summing
    /// to 1.
    Probabilities(Vec<Vec<f32>>),
    /// One score per document (reranking), in input order: the model's logit through the
    /// activation its files name (sigmoid, or none for raw logits).
    Scores(Vec<f32>),
    /// The model's named outputs, one map per model call (batch), in input order: for
    /// presets whose results are the model's own tensors (detection, depth maps, scene
    /// logits), plus what the preset adds to map them back (see each preset).
    Tensors(Vec<NamedTensors>),
}

impl PresetOutput {
    /// The rows of vectors or probabilities, a one-value row per score (empty for
    /// tensors).
    #[must_use]
    pub fn into_rows(self) -> Vec<Vec<f32>> {
        match self {
            Self::Vectors(rows) | Self::Probabilities(rows) => rows,
            Self::Scores(scores) => scores.into_iter().map(|s| vec![s]).collect(),
            Self::Tensors(_) => Vec::new(),
        }
    }
}
