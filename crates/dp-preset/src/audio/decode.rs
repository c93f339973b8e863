//! Decoding encoded audio (WAV, FLAC, MP3, Ogg Vorbis) to mono samples at a model's rate.
//!
//! The container and codec are recognised from the bytes (never from a file name) and decoded
//! by symphonia, packet by packet: each packet's channels are converted to `f32` the way
//! symphonia converts samples (integer PCM scaled to `[-1, 1)`: `s16 / 32768`, unsigned 8-bit
//! centred on 128, 24-bit sign-extended), averaged to mono (the mean of the channels, as
//! transformers' and librosa's `to_mono`), resampled to the target rate
//! ([`super::resample::MonoResampler`]) and handed on in fixed-size chunks. Memory stays
//! bounded whatever the length: hours of audio are decoded with about one chunk plus the
//! decoder's and resampler's buffers in memory ([`stream_mono`]); [`decode_mono`] collects
//! the chunks of a whole file.
//!
//! # Bad input
//!
//! Every refusal is `invalid_input` with a stable `reason`:
//!
//! | reason | when |
//! |---|---|
//! | `audio_unknown_format` | not a container we decode, no audio track, or a codec not compiled in |
//! | `audio_corrupt` | the container or a packet is malformed (symphonia's decode errors), the rate changes mid-stream |
//! | `audio_truncated` | the data ends in the middle of a packet, or fewer frames decode than the header declares (PCM and FLAC exactly, Ogg Vorbis within 0.1 % or 2048 frames); a PCM header declaring more frames than the file's bytes can hold is refused before decoding. MP3 declares no trustworthy length (an estimate without a Xing/VBRI tag): a cut MP3 decodes up to its cut, as other decoders do |
//! | `audio_empty` | 0 bytes, a header declaring 0 frames or 0 channels, or no audio frame decoded (a WAV `fmt ` chunk with 0 channels is rejected by symphonia's reader itself: `audio_corrupt`) |
//! | `audio_bad_sample_rate` | a sample rate missing, of 0 Hz or above 768 kHz |
//! | `audio_too_long` | longer than [`AudioLimits::max_duration_s`], by the header's declared length (checked before decoding) or while decoding |
//! | `audio_nan` | a NaN or infinite sample (float PCM) |
//!
//! A chained Ogg file (several logical streams one after another) is decoded up to the end
//! of its first stream.
//!
//! [`stream_mono`] may have handed chunks to its callback before it finds an error late in
//! the stream (a truncated end): callers discard what they received when it returns an
//! error. [`decode_mono`] returns nothing but the error.

use std::io::{Read, Seek, SeekFrom};

use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;

use super::resample::{MonoResampler, check_rate};
use crate::error::PresetError;

/// The default [`AudioLimits::max_duration_s`]: 4 hours.
pub const DEFAULT_MAX_DURATION_S: f64 = 4.0 * 3600.0;

/// The chunk size [`decode_mono`] streams with, in output samples.
const DECODE_CHUNK: usize = 1 << 16;

/// What a decoded stream was.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioInfo {
    /// The stream's own sample rate, in Hz.
    pub source_sample_rate: u32,
    /// The stream's number of channels (before the downmix to mono).
    pub source_channels: u16,
    /// The codec, as symphonia names it: `pcm_s16le`, `pcm_f32le`, `flac`, `mp3`, `vorbis`…
    pub codec: String,
    /// The container: `wav`, `flac`, `mp3` or `ogg`.
    pub container: String,
    /// The number of source frames (samples per channel) decoded.
    pub frames: u64,
    /// The decoded length in seconds (`frames / source_sample_rate`).
    pub duration_s: f64,
}

/// Limits a caller sets on the audio it accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioLimits {
    /// The longest audio accepted, in seconds (default [`DEFAULT_MAX_DURATION_S`], 4 hours).
    /// Longer audio is refused with `audio_too_long`, before decoding when the header
    /// declares its length.
    pub max_duration_s: f64,
}

impl Default for AudioLimits {
    fn default() -> Self {
        Self {
            max_duration_s: DEFAULT_MAX_DURATION_S,
        }
    }
}

/// Decodes a whole encoded audio file to mono `f32` samples at `target_rate` (Hz).
///
/// # Errors
///
/// `invalid_input` with one of the reasons in the [module docs](self) when the audio cannot
/// be decoded or breaks `limits`; `invalid_input` (`audio_bad_sample_rate`) when
/// `target_rate` is 0 or above 768 kHz.
///
/// ```
/// use dp_preset::audio::decode::{AudioLimits, decode_mono};
/// // A 16-bit mono WAV at 8 kHz holding the samples 0, 16384, -16384, -32768.
/// let data: Vec<u8> = [0i16, 16384, -16384, -32768].iter().flat_map(|s| s.to_le_bytes()).collect();
/// let mut wav = Vec::new();
/// wav.extend_from_slice(b"RIFF");
/// wav.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
/// wav.extend_from_slice(b"WAVEfmt ");
/// wav.extend_from_slice(&16u32.to_le_bytes());
/// wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
/// wav.extend_from_slice(&1u16.to_le_bytes()); // mono
/// wav.extend_from_slice(&8000u32.to_le_bytes());
/// wav.extend_from_slice(&16000u32.to_le_bytes());
/// wav.extend_from_slice(&2u16.to_le_bytes());
/// wav.extend_from_slice(&16u16.to_le_bytes());
/// wav.extend_from_slice(b"data");
/// wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
/// wav.extend_from_slice(&data);
/// let (samples, info) = decode_mono(&wav, 8000, &AudioLimits::default())?;
/// assert_eq!(samples, [0.0, 0.5, -0.5, -1.0]);
/// assert_eq!((info.container.as_str(), info.codec.as_str()), ("wav", "pcm_s16le"));
/// # Ok::<(), dp_preset::PresetError>(())
/// ```
pub fn decode_mono(
    bytes: &[u8],
    target_rate: u32,
    limits: &AudioLimits,
) -> Result<(Vec<f32>, AudioInfo), PresetError> {
    let mut samples = Vec::new();
    let mut collect = |chunk: &[f32]| {
        samples.extend_from_slice(chunk);
        Ok(())
    };
    let source = SizedSource::new(std::io::Cursor::new(bytes))?;
    let info = stream_source(
        Box::new(source),
        target_rate,
        DECODE_CHUNK,
        limits,
        &mut collect,
    )?;
    Ok((samples, info))
}

/// Decodes encoded audio from `source` packet by packet, downmixes it to mono, resamples it
/// to `target_rate` (Hz) and calls `on_chunk` with the consecutive samples in chunks of
/// exactly `chunk_samples` (the last one may be shorter; none for no output), holding about
/// one chunk plus the decoder's and resampler's buffers in memory: hours of audio in bounded
/// memory.
///
/// # Errors
///
/// `invalid_input` with one of the reasons in the [module docs](self); what `on_chunk`
/// returns (decoding stops there); `invalid_input` (`audio_bad_sample_rate`) when
/// `target_rate` is 0 or above 768 kHz, `invalid_spec` when `chunk_samples` is 0. Chunks
/// handed out before an error are part of a refused input: discard them.
pub fn stream_mono<R: Read + Seek + Send + Sync + 'static>(
    source: R,
    target_rate: u32,
    chunk_samples: usize,
    limits: &AudioLimits,
    on_chunk: &mut dyn FnMut(&[f32]) -> Result<(), PresetError>,
) -> Result<AudioInfo, PresetError> {
    let source = SizedSource::new(source)?;
    stream_source(
        Box::new(source),
        target_rate,
        chunk_samples,
        limits,
        on_chunk,
    )
}

/// [`stream_mono`] over encoded bytes already in memory (borrowed, not copied): the
/// decoded samples are handed out chunk by chunk, never held whole.
///
/// # Errors
/// As [`stream_mono`].
pub fn stream_mono_bytes(
    bytes: &[u8],
    target_rate: u32,
    chunk_samples: usize,
    limits: &AudioLimits,
    on_chunk: &mut dyn FnMut(&[f32]) -> Result<(), PresetError>,
) -> Result<AudioInfo, PresetError> {
    let source = SizedSource::new(std::io::Cursor::new(bytes))?;
    stream_source(
        Box::new(source),
        target_rate,
        chunk_samples,
        limits,
        on_chunk,
    )
}

/// A `Read + Seek` source with its length measured once (symphonia's `MediaSource`).
struct SizedSource<R> {
    inner: R,
    len: u64,
}

impl<R: Read + Seek> SizedSource<R> {
    fn new(mut inner: R) -> Result<Self, PresetError> {
        let measure = |inner: &mut R| -> std::io::Result<u64> {
            let pos = inner.stream_position()?;
            let end = inner.seek(SeekFrom::End(0))?;
            inner.seek(SeekFrom::Start(pos))?;
            Ok(end)
        };
        let len = measure(&mut inner).map_err(|e| {
            PresetError::input("audio_corrupt", format!("cannot read the audio: {e}"))
        })?;
        Ok(Self { inner, len })
    }
}

impl<R: Read> Read for SizedSource<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<R: Seek> Seek for SizedSource<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl<R: Read + Seek + Send + Sync> MediaSource for SizedSource<R> {
    fn is_seekable(&self) -> bool {
        true
    }

    fn byte_len(&self) -> Option<u64> {
        Some(self.len)
    }
}

const FORMATS: &str = "WAV, FLAC, MP3 or Ogg Vorbis";

fn unknown_format(what: &str) -> PresetError {
    PresetError::input(
        "audio_unknown_format",
        format!("{what}; send {FORMATS} audio (convert it, e.g. `ffmpeg -i IN -ar 16000 OUT.wav`)"),
    )
}

fn truncated(what: &str) -> PresetError {
    PresetError::input(
        "audio_truncated",
        format!("{what}: the audio file is cut short; send the whole file"),
    )
}

/// Maps a symphonia error to our reasons.
fn map_error(err: SymphoniaError) -> PresetError {
    match err {
        SymphoniaError::Unsupported(what) => {
            unknown_format(&format!("the audio is not in a format we decode ({what})"))
        }
        SymphoniaError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            truncated("the audio ends in the middle of its data")
        }
        SymphoniaError::IoError(e) if e.kind() == std::io::ErrorKind::OutOfMemory => {
            PresetError::input(
                "audio_too_long",
                "the audio declares a packet too large to hold; re-encode the audio",
            )
        }
        other => PresetError::input(
            "audio_corrupt",
            format!("the audio is corrupt ({other}); re-export or re-encode it"),
        ),
    }
}

/// Groups samples into chunks of exactly `size` for the callback.
struct Chunker<'a> {
    size: usize,
    buf: Vec<f32>,
    on_chunk: &'a mut dyn FnMut(&[f32]) -> Result<(), PresetError>,
}

impl Chunker<'_> {
    fn push(&mut self, mut samples: &[f32]) -> Result<(), PresetError> {
        while !samples.is_empty() {
            if self.buf.is_empty() && samples.len() >= self.size {
                (self.on_chunk)(&samples[..self.size])?;
                samples = &samples[self.size..];
                continue;
            }
            let take = (self.size - self.buf.len()).min(samples.len());
            self.buf.extend_from_slice(&samples[..take]);
            samples = &samples[take..];
            if self.buf.len() == self.size {
                (self.on_chunk)(&self.buf)?;
                self.buf.clear();
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), PresetError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        (self.on_chunk)(&self.buf)?;
        self.buf.clear();
        Ok(())
    }
}

/// What the header says about the stream, checked before decoding.
struct Opened<'s> {
    format: Box<dyn FormatReader + 's>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    rate: u32,
    channels: u16,
    declared_frames: Option<u64>,
    container: String,
    codec: String,
    /// How far decoding fewer frames than declared is a truncation: PCM and FLAC declare
    /// exact lengths, Ogg Vorbis one from its last granule position (exact up to gapless
    /// trimming), MP3 an estimate at best (from the bitrate when there is no Xing/VBRI tag),
    /// so a cut MP3 decodes to where it is cut, as other decoders do.
    shortfall_allowed: Option<u64>,
}

fn open<'s>(
    source: Box<dyn MediaSource + 's>,
    limits: &AudioLimits,
) -> Result<Opened<'s>, PresetError> {
    let byte_len = source.byte_len();
    if byte_len == Some(0) {
        return Err(PresetError::input(
            "audio_empty",
            "the audio is empty (0 bytes); send a non-empty audio file",
        ));
    }
    let stream = MediaSourceStream::new(source, Default::default());
    let format = symphonia::default::get_probe()
        .probe(
            &Hint::new(),
            stream,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(map_error)?;
    let container = match format.format_info().short_name {
        "wave" => "wav",
        name => name,
    }
    .to_owned();
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| unknown_format(&format!("the {container} file holds no audio track")))?;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| unknown_format(&format!("the {container} file holds no audio track")))?
        .clone();
    let track_id = track.id;
    let declared_frames = track.num_frames;
    let rate = params.sample_rate.ok_or_else(|| {
        PresetError::input(
            "audio_bad_sample_rate",
            "the audio declares no sample rate; re-encode the audio",
        )
    })?;
    check_rate(rate, "the audio's sample rate")?;
    let channels = params.channels.as_ref().map_or(0, |c| c.count());
    if channels == 0 {
        return Err(PresetError::input(
            "audio_empty",
            "the audio declares no channel; re-encode the audio",
        ));
    }
    let channels = u16::try_from(channels).map_err(|_| {
        PresetError::input(
            "audio_corrupt",
            format!("the audio declares {channels} channels; re-encode the audio"),
        )
    })?;
    let decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|err| match err {
            SymphoniaError::Unsupported(what) => unknown_format(&format!(
                "the {container} file's codec is not one we decode ({what})"
            )),
            other => map_error(other),
        })?;
    let codec = decoder.codec_info().short_name.to_owned();
    let pcm = codec.starts_with("pcm_");

    if let Some(frames) = declared_frames {
        if frames == 0 {
            return Err(PresetError::input(
                "audio_empty",
                "the audio holds no samples (0 frames); send audio that is not empty",
            ));
        }
        check_duration(frames, rate, limits, true)?;
        // PCM stores at least one byte per sample: a header declaring more frames than the
        // file's bytes can hold lies, and is refused before anything is read for it.
        if pcm
            && let Some(bytes) = byte_len
            && u128::from(frames) * u128::from(channels) > u128::from(bytes)
        {
            return Err(truncated(&format!(
                "the audio header declares {frames} frames of {channels} channel(s), more \
                 than the {bytes} bytes of the file can hold"
            )));
        }
    }
    Ok(Opened {
        format,
        decoder,
        track_id,
        rate,
        channels,
        declared_frames,
        container,
        codec: codec.clone(),
        shortfall_allowed: match codec.as_str() {
            "flac" => Some(0),
            "vorbis" => declared_frames.map(|d| (d / 1000).max(2048)),
            _ if pcm => Some(0),
            _ => None,
        },
    })
}

/// `audio_too_long` when `frames` at `rate` exceed the limit.
fn check_duration(
    frames: u64,
    rate: u32,
    limits: &AudioLimits,
    declared: bool,
) -> Result<(), PresetError> {
    // Precision: frames and rates are far below 2^53.
    #[allow(clippy::cast_precision_loss)]
    let seconds = frames as f64 / f64::from(rate);
    if seconds > limits.max_duration_s || limits.max_duration_s.is_nan() {
        let how = if declared { "declares" } else { "runs past" };
        return Err(PresetError::input(
            "audio_too_long",
            format!(
                "the audio {how} {seconds:.1} s, longer than the {:.1} s accepted; cut it \
                 into shorter pieces",
                limits.max_duration_s
            ),
        ));
    }
    Ok(())
}

fn stream_source<'s>(
    source: Box<dyn MediaSource + 's>,
    target_rate: u32,
    chunk_samples: usize,
    limits: &AudioLimits,
    on_chunk: &mut dyn FnMut(&[f32]) -> Result<(), PresetError>,
) -> Result<AudioInfo, PresetError> {
    check_rate(target_rate, "the model's sample rate")?;
    if chunk_samples == 0 {
        return Err(PresetError::InvalidConfig {
            message: "audio chunks of 0 samples were asked for; ask for at least 1".to_owned(),
            file: None,
        });
    }
    let Opened {
        mut format,
        mut decoder,
        track_id,
        rate,
        channels,
        declared_frames,
        container,
        codec,
        shortfall_allowed,
    } = open(source, limits)?;

    let mut resampler = MonoResampler::new(rate, target_rate)?;
    let mut chunker = Chunker {
        size: chunk_samples,
        buf: Vec::with_capacity(chunk_samples.min(DECODE_CHUNK)),
        on_chunk,
    };
    let mut planes: Vec<Vec<f32>> = Vec::new();
    let mut mono: Vec<f32> = Vec::new();
    let mut frames: u64 = 0;

    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            // A chained Ogg stream starts a new logical stream: we decode the first one.
            Err(SymphoniaError::ResetRequired) => {
                tracing::warn!("audio: chained stream; decoding its first logical stream only");
                break;
            }
            Err(SymphoniaError::IoError(e))
                if e.kind() == std::io::ErrorKind::UnexpectedEof && declared_frames.is_none() =>
            {
                // No declared length (streamed WAV, some MP3s): the end of the bytes is the
                // end of the audio.
                break;
            }
            Err(err) => return Err(map_error(err)),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buffer = decoder.decode(&packet).map_err(map_error)?;
        let n = buffer.frames();
        if n == 0 {
            continue;
        }
        if buffer.spec().rate() != rate {
            return Err(PresetError::input(
                "audio_corrupt",
                format!(
                    "the audio's sample rate changes from {rate} Hz to {} Hz mid-stream; \
                     re-encode it at one rate",
                    buffer.spec().rate()
                ),
            ));
        }
        buffer.copy_to_vecs_planar::<f32>(&mut planes);
        downmix(&planes, n, frames, &mut mono)?;
        frames += n as u64;
        check_duration(frames, rate, limits, false)?;
        resampler.push(&mono, &mut |s| chunker.push(s))?;
    }

    if let (Some(declared), Some(allowed)) = (declared_frames, shortfall_allowed)
        && frames.saturating_add(allowed) < declared
    {
        return Err(truncated(&format!(
            "the audio header declares {declared} frames but only {frames} could be decoded \
             (frames are missing or damaged)"
        )));
    }
    if frames == 0 {
        return Err(PresetError::input(
            "audio_empty",
            "the audio holds no samples; send audio that is not empty",
        ));
    }
    resampler.finish(&mut |s| chunker.push(s))?;
    chunker.finish()?;
    #[allow(clippy::cast_precision_loss)]
    let duration_s = frames as f64 / f64::from(rate);
    Ok(AudioInfo {
        source_sample_rate: rate,
        source_channels: channels,
        codec,
        container,
        frames,
        duration_s,
    })
}

/// The mean of the `planes` (the first `n` samples of each) into `mono`; `audio_nan` at
/// the first sample that is not finite (`offset` is the frame index of the first one).
fn downmix(
    planes: &[Vec<f32>],
    n: usize,
    offset: u64,
    mono: &mut Vec<f32>,
) -> Result<(), PresetError> {
    mono.clear();
    let Some((first, rest)) = planes.split_first() else {
        return Ok(());
    };
    mono.extend_from_slice(&first[..n]);
    for plane in rest {
        for (m, s) in mono.iter_mut().zip(&plane[..n]) {
            *m += *s;
        }
    }
    if !rest.is_empty() {
        #[allow(clippy::cast_precision_loss)]
        let count = planes.len() as f32;
        for m in mono.iter_mut() {
            *m /= count;
        }
    }
    // A non-finite channel sample makes its mean non-finite (NaN or ±inf, or NaN for
    // +inf + -inf): checking the mean finds them all.
    if let Some(bad) = mono.iter().position(|s| !s.is_finite()) {
        return Err(PresetError::input(
            "audio_nan",
            format!(
                "the audio holds a sample that is not a finite number (NaN or infinite) at \
                 frame {}; fix the audio (float WAV from a broken export?)",
                offset + bad as u64
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PCM: u16 = 1;
    const FLOAT: u16 = 3;

    /// A RIFF/WAVE file: `fmt ` (16 bytes) then `data`, with the lengths given (the
    /// true ones when `None`).
    fn wav_with(
        tag: u16,
        channels: u16,
        rate: u32,
        bits: u16,
        data: &[u8],
        data_len: Option<u32>,
        riff_len: Option<u32>,
    ) -> Vec<u8> {
        let data_len = data_len.unwrap_or(data.len() as u32);
        let riff_len = riff_len.unwrap_or(36u32.wrapping_add(data_len));
        let block = channels * (bits / 8);
        let mut w = Vec::new();
        w.extend_from_slice(b"RIFF");
        w.extend_from_slice(&riff_len.to_le_bytes());
        w.extend_from_slice(b"WAVEfmt ");
        w.extend_from_slice(&16u32.to_le_bytes());
        w.extend_from_slice(&tag.to_le_bytes());
        w.extend_from_slice(&channels.to_le_bytes());
        w.extend_from_slice(&rate.to_le_bytes());
        w.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
        w.extend_from_slice(&block.to_le_bytes());
        w.extend_from_slice(&bits.to_le_bytes());
        w.extend_from_slice(b"data");
        w.extend_from_slice(&data_len.to_le_bytes());
        w.extend_from_slice(data);
        w
    }

    fn wav(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
        wav_with(tag, channels, rate, bits, data, None, None)
    }

    fn s16(samples: &[i16]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    fn f32s(samples: &[f32]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    fn limits() -> AudioLimits {
        AudioLimits::default()
    }

    fn reason(err: &PresetError) -> &'static str {
        match err {
            PresetError::InvalidInput { reason, .. } => reason,
            _ => "not an input error",
        }
    }

    fn refused(bytes: &[u8], limits: &AudioLimits) -> &'static str {
        match decode_mono(bytes, 16_000, limits) {
            Ok((s, info)) => panic!("decoded {} samples: {info:?}", s.len()),
            Err(err) => {
                eprintln!("{}: {err}", reason(&err));
                reason(&err)
            }
        }
    }

    #[test]
    fn s16_mono_is_exact() {
        let samples: Vec<i16> = (0..5000)
            .map(|i| ((i * 7919) % 65_536 - 32_768) as i16)
            .collect();
        let (out, info) =
            decode_mono(&wav(PCM, 1, 16_000, 16, &s16(&samples)), 16_000, &limits()).unwrap();
        let want: Vec<f32> = samples.iter().map(|&s| f32::from(s) / 32768.0).collect();
        assert_eq!(out, want);
        assert_eq!(
            info,
            AudioInfo {
                source_sample_rate: 16_000,
                source_channels: 1,
                codec: "pcm_s16le".into(),
                container: "wav".into(),
                frames: 5000,
                duration_s: 5000.0 / 16_000.0,
            }
        );
    }

    #[test]
    fn u8_is_centred_on_128() {
        let (out, info) = decode_mono(
            &wav(PCM, 1, 8000, 8, &[0, 64, 128, 192, 255]),
            8000,
            &limits(),
        )
        .unwrap();
        assert_eq!(out, [-1.0, -0.5, 0.0, 0.5, 127.0 / 128.0]);
        assert_eq!(info.codec, "pcm_u8");
    }

    #[test]
    fn s24_is_sign_extended() {
        let values: [i32; 5] = [-8_388_608, -1, 0, 1, 8_388_607];
        let data: Vec<u8> = values
            .iter()
            .flat_map(|v| v.to_le_bytes()[..3].to_vec())
            .collect();
        let (out, info) = decode_mono(&wav(PCM, 1, 8000, 24, &data), 8000, &limits()).unwrap();
        let want: Vec<f32> = values
            .iter()
            .map(|&v| (f64::from(v) / 8_388_608.0) as f32)
            .collect();
        assert_eq!(out, want);
        assert_eq!(info.codec, "pcm_s24le");
    }

    #[test]
    fn s32_is_scaled() {
        let values: [i32; 4] = [i32::MIN, -(1 << 30), 0, 1 << 30];
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let (out, _) = decode_mono(&wav(PCM, 1, 8000, 32, &data), 8000, &limits()).unwrap();
        assert_eq!(out, [-1.0, -0.5, 0.0, 0.5]);
    }

    #[test]
    fn f32_is_untouched() {
        let values = [0.1f32, -0.7, 1.5, -3.25e-5];
        let (out, info) =
            decode_mono(&wav(FLOAT, 1, 8000, 32, &f32s(&values)), 8000, &limits()).unwrap();
        assert_eq!(out, values);
        assert_eq!(info.codec, "pcm_f32le");
    }

    #[test]
    fn stereo_is_the_mean_of_the_channels() {
        let frames: Vec<(i16, i16)> = (0..3000)
            .map(|i| ((i * 31) as i16, (-i * 17 + 5) as i16))
            .collect();
        let data: Vec<i16> = frames.iter().flat_map(|&(l, r)| [l, r]).collect();
        let (out, info) =
            decode_mono(&wav(PCM, 2, 16_000, 16, &s16(&data)), 16_000, &limits()).unwrap();
        let want: Vec<f32> = frames
            .iter()
            .map(|&(l, r)| (f32::from(l) / 32768.0 + f32::from(r) / 32768.0) / 2.0)
            .collect();
        assert_eq!(out, want);
        assert_eq!(info.source_channels, 2);

        let lr = [0.25f32, -0.75, 1.0, 0.5];
        let (out, _) = decode_mono(&wav(FLOAT, 2, 8000, 32, &f32s(&lr)), 8000, &limits()).unwrap();
        assert_eq!(out, [-0.25, 0.75]);
    }

    #[test]
    fn resampled_sine_and_lengths() {
        let rate = 44_100u32;
        let samples: Vec<i16> = (0..rate)
            .map(|n| {
                (16_384.0
                    * (2.0 * std::f64::consts::PI * 1000.0 * f64::from(n) / f64::from(rate)).sin())
                .round() as i16
            })
            .collect();
        let (out, info) =
            decode_mono(&wav(PCM, 1, rate, 16, &s16(&samples)), 16_000, &limits()).unwrap();
        assert_eq!(out.len(), 16_000);
        assert_eq!(info.frames, u64::from(rate));
        let worst = out[100..out.len() - 100]
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let t = (i + 100) as f64 / 16_000.0;
                (f64::from(*s) - 0.5 * (2.0 * std::f64::consts::PI * 1000.0 * t).sin()).abs()
            })
            .fold(0.0, f64::max);
        // 16-bit quantisation (±1/65536) plus the resampler's error.
        assert!(worst < 1e-4, "{worst}");
        for len in [1u32, 2, 3, 441, 1000, 4409] {
            let (out, _) = decode_mono(
                &wav(PCM, 1, rate, 16, &s16(&vec![100; len as usize])),
                16_000,
                &limits(),
            )
            .unwrap();
            assert_eq!(
                out.len() as u64,
                super::super::resample::output_len(u64::from(len), rate, 16_000)
            );
        }
    }

    #[test]
    fn streaming_gives_exact_chunks_equal_to_the_whole() {
        let samples: Vec<i16> = (0..20_000)
            .map(|i| ((i * 7919) % 20_000 - 10_000) as i16)
            .collect();
        for (rate, chunk) in [
            (44_100u32, 1000usize),
            (16_000, 777),
            (16_000, 1),
            (8000, 100_000),
        ] {
            let bytes = wav(PCM, 1, rate, 16, &s16(&samples));
            let (whole, info) = decode_mono(&bytes, 16_000, &limits()).unwrap();
            let mut sizes = Vec::new();
            let mut joined = Vec::new();
            let streamed = stream_mono(
                std::io::Cursor::new(bytes),
                16_000,
                chunk,
                &limits(),
                &mut |c: &[f32]| {
                    sizes.push(c.len());
                    joined.extend_from_slice(c);
                    Ok(())
                },
            )
            .unwrap();
            assert_eq!(streamed, info);
            assert_eq!(joined, whole, "rate {rate} chunk {chunk}");
            let (last, full) = sizes.split_last().unwrap();
            assert!(full.iter().all(|&n| n == chunk));
            assert!(*last >= 1 && *last <= chunk);
        }
    }

    #[test]
    fn a_callback_error_stops_decoding() {
        let bytes = wav(PCM, 1, 16_000, 16, &s16(&[1; 5000]));
        let mut calls = 0;
        let err = stream_mono(
            std::io::Cursor::new(bytes),
            16_000,
            100,
            &limits(),
            &mut |_: &[f32]| {
                calls += 1;
                Err(PresetError::input("stop", "stop"))
            },
        )
        .unwrap_err();
        assert_eq!(reason(&err), "stop");
        assert_eq!(calls, 1);
        let err = stream_mono(
            std::io::Cursor::new(vec![0u8; 4]),
            16_000,
            0,
            &limits(),
            &mut |_: &[f32]| Ok(()),
        )
        .unwrap_err();
        assert!(matches!(err, PresetError::InvalidConfig { .. }));
    }

    #[test]
    fn a_streamed_wav_without_lengths_decodes_to_its_end() {
        let samples: Vec<i16> = (0..3001).map(|i| i as i16).collect();
        let bytes = wav_with(
            PCM,
            1,
            16_000,
            16,
            &s16(&samples),
            Some(u32::MAX),
            Some(u32::MAX),
        );
        let (out, _) = decode_mono(&bytes, 16_000, &limits()).unwrap();
        let want: Vec<f32> = samples.iter().map(|&s| f32::from(s) / 32768.0).collect();
        assert_eq!(out, want);
    }

    #[test]
    fn unknown_formats() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..10_000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        assert_eq!(refused(&noise, &limits()), "audio_unknown_format");
        assert_eq!(
            refused(b"hello, this is not audio", &limits()),
            "audio_unknown_format"
        );
        // A RIFF that is not WAVE, and a WAVE in an encoding we do not decode (GSM 6.10 is
        // compiled out).
        let mut avi = wav(PCM, 1, 8000, 16, &[0; 10]);
        avi[8..12].copy_from_slice(b"AVI ");
        assert_eq!(refused(&avi, &limits()), "audio_unknown_format");
        let mut gsm = wav(PCM, 1, 8000, 16, &[0; 10]);
        gsm[20..22].copy_from_slice(&0x31u16.to_le_bytes());
        assert_eq!(refused(&gsm, &limits()), "audio_unknown_format");
    }

    #[test]
    fn empty_audio() {
        assert_eq!(refused(&[], &limits()), "audio_empty");
        assert_eq!(
            refused(&wav(PCM, 1, 16_000, 16, &[]), &limits()),
            "audio_empty"
        );
        // Less than one frame of data.
        assert_eq!(
            refused(&wav(PCM, 2, 16_000, 16, &[1, 2, 3]), &limits()),
            "audio_empty"
        );
    }

    #[test]
    fn bad_sample_rates() {
        assert_eq!(
            refused(&wav(PCM, 1, 0, 16, &s16(&[1; 100])), &limits()),
            "audio_bad_sample_rate"
        );
        assert_eq!(
            refused(&wav(PCM, 1, 1_000_000, 16, &s16(&[1; 100])), &limits()),
            "audio_bad_sample_rate"
        );
        let err = decode_mono(&wav(PCM, 1, 16_000, 16, &s16(&[1; 100])), 0, &limits()).unwrap_err();
        assert_eq!(reason(&err), "audio_bad_sample_rate");
    }

    #[test]
    fn declared_lengths_beyond_the_file_are_refused_before_decoding() {
        // 2^31 frames of u8 declared, 100 bytes present.
        let bytes = wav_with(
            PCM,
            1,
            16_000,
            8,
            &[128; 100],
            Some(1 << 31),
            Some((1 << 31) + 36),
        );
        // 37 hours: too long for the default limit…
        assert_eq!(refused(&bytes, &limits()), "audio_too_long");
        // …and more than the bytes can hold when there is no limit.
        let unlimited = AudioLimits {
            max_duration_s: f64::INFINITY,
        };
        assert_eq!(refused(&bytes, &unlimited), "audio_truncated");
        // A few frames more than the file holds: found when the data runs out.
        let short = wav_with(PCM, 1, 16_000, 16, &s16(&[5; 100]), Some(220), None);
        assert_eq!(refused(&short, &limits()), "audio_truncated");
        // Within the limit by the header, beyond it by the data.
        let long = wav(PCM, 1, 16_000, 16, &s16(&[5; 16_000]));
        let half = AudioLimits {
            max_duration_s: 0.5,
        };
        assert_eq!(refused(&long, &half), "audio_too_long");
        let streamed = wav_with(
            PCM,
            1,
            16_000,
            16,
            &s16(&[5; 16_000]),
            Some(u32::MAX),
            Some(u32::MAX),
        );
        assert_eq!(refused(&streamed, &half), "audio_too_long");
    }

    #[test]
    fn non_finite_samples_are_refused() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let bytes = wav(FLOAT, 1, 16_000, 32, &f32s(&[0.0, 0.5, bad, 0.1]));
            assert_eq!(refused(&bytes, &limits()), "audio_nan");
            let stereo = wav(FLOAT, 2, 16_000, 32, &f32s(&[0.0, 0.5, 0.25, bad]));
            assert_eq!(refused(&stereo, &limits()), "audio_nan");
        }
    }

    #[test]
    fn cut_files_never_panic() {
        // Data that ends in the middle of a frame (the header agrees): the whole frames.
        let bytes = wav(
            PCM,
            2,
            16_000,
            16,
            &s16(&[1000, 2000, 3000, 4000, 5000])[..9],
        );
        let (out, _) = decode_mono(&bytes, 16_000, &limits()).unwrap();
        assert_eq!(out.len(), 2);
        // A file cut anywhere: decoded (a cut in the data with the header's length: refused
        // as truncated) or refused with a stable reason, never a panic.
        let full = wav(PCM, 2, 44_100, 24, &[7; 3 * 2 * 300]);
        for cut in 0..full.len() {
            match decode_mono(&full[..cut], 16_000, &limits()) {
                Ok(_) => panic!("a file cut at {cut} decoded"),
                Err(err) => assert!(
                    matches!(
                        reason(&err),
                        "audio_truncated"
                            | "audio_corrupt"
                            | "audio_empty"
                            | "audio_unknown_format"
                    ),
                    "cut {cut}: {err:?}"
                ),
            }
        }
        assert!(decode_mono(&full, 16_000, &limits()).is_ok());
    }

    /// A WAV of `frames` u8 mono frames at 8 kHz made on the fly: a long input that never
    /// exists in memory whole.
    struct VirtualWav {
        header: Vec<u8>,
        len: u64,
        pos: u64,
    }

    impl VirtualWav {
        fn new(frames: u32) -> Self {
            let header = wav_with(PCM, 1, 8000, 8, &[], Some(frames), None);
            let len = header.len() as u64 + u64::from(frames);
            Self {
                header,
                len,
                pos: 0,
            }
        }
    }

    impl std::io::Read for VirtualWav {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let mut n = 0;
            while n < buf.len() && self.pos < self.len {
                let h = self.header.len() as u64;
                buf[n] = if self.pos < h {
                    self.header[self.pos as usize]
                } else {
                    // A 500 Hz square wave between 64 and 192 (±0.5).
                    if ((self.pos - h) / 8).is_multiple_of(2) {
                        192
                    } else {
                        64
                    }
                };
                n += 1;
                self.pos += 1;
            }
            Ok(n)
        }
    }

    impl std::io::Seek for VirtualWav {
        fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
            let to = match pos {
                SeekFrom::Start(p) => i128::from(p),
                SeekFrom::End(d) => i128::from(self.len) + i128::from(d),
                SeekFrom::Current(d) => i128::from(self.pos) + i128::from(d),
            };
            self.pos = u64::try_from(to).map_err(|_| std::io::Error::other("negative seek"))?;
            Ok(self.pos)
        }
    }

    #[test]
    fn long_inputs_stream_in_chunks() {
        // 10 minutes at 8 kHz, resampled to 16 kHz in 30-second chunks.
        let frames = 8000 * 60 * 10;
        let mut chunks = 0usize;
        let mut total = 0usize;
        let info = stream_mono(
            VirtualWav::new(frames),
            16_000,
            16_000 * 30,
            &limits(),
            &mut |c: &[f32]| {
                chunks += 1;
                total += c.len();
                assert!(c.iter().all(|s| s.abs() < 0.75));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(info.frames, u64::from(frames));
        assert_eq!(total, 16_000 * 60 * 10);
        assert_eq!(chunks, 20);
        // The same source is refused past a 5-minute limit, by its header.
        let ten = AudioLimits {
            max_duration_s: 300.0,
        };
        let err = stream_mono(
            VirtualWav::new(frames),
            16_000,
            100,
            &ten,
            &mut |_: &[f32]| panic!("nothing is decoded"),
        )
        .unwrap_err();
        assert_eq!(reason(&err), "audio_too_long");
    }
}
