//! The `audio` asset of `cargo xtask setup`: the test audio of the audio presets (issue 17) in
//! `.dp-assets/audio/`, and the venv that writes it, `.dp-assets/venv-audio`.
//!
//! `xtask/scripts/make_test_audio.py` renders tones, a chirp and noise from closed forms and fixed
//! seeds (numpy), writes WAV itself and FLAC, MP3 and Ogg/Vorbis through libsndfile (the
//! `soundfile` wheel), and copies the speech recording the `pyannote.audio` wheel ships. Every
//! wheel is pinned by `xtask/requirements/python-audio.txt` and every file the script writes by
//! the sha256 below, checked before the folder is replaced, so the reference features in
//! `tests/data/reference/audio/` (see its README), computed from these very files, stay valid.

use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{
    ASSETS_DIR, Stamp, StepContext, check_python_version, install_pinned_venv, replace_dir,
};
use crate::fsutil::{sha256_file, sha256_hex};
use crate::process;

/// The venv of the audio script (numpy, soundfile, pyannote.audio for its recording).
const AUDIO_VENV_DIR: &str = ".dp-assets/venv-audio";

/// Its hash-pinned requirements, relative to the workspace root.
const AUDIO_REQUIREMENTS: &str = "xtask/requirements/python-audio.txt";

/// The script that writes the folder.
const AUDIO_SCRIPT: &str = "xtask/scripts/make_test_audio.py";

/// The folder, relative to the workspace root.
pub(crate) const AUDIO_DIR: &str = ".dp-assets/audio";

/// Every file the script writes, with its sha256 (see `manifest.json` in the folder for the
/// format, rate, channels and frames of each audio file).
const AUDIO_FILES: [(&str, &str); 20] = [
    (
        "README.md",
        "a47e7ea67f90283c23da02c0736ed64d30e46b2c66890c4f8322ec3710b287ad",
    ),
    (
        "chirp_16k_s16.wav",
        "11fb6ec4419d9544b8151acf262fbea236cc45dce7624c27220952d5eab77cb3",
    ),
    (
        "long_65s_16k_s16.wav",
        "7dec7f2746b4c48cf68b340e29031ae27279c130442210688aa64932ddbe582d",
    ),
    (
        "manifest.json",
        "51400c070f159dcf5ce81de67dbe62952c144699c0979809bb04497fb6a25d36",
    ),
    (
        "noise_16k_f32.wav",
        "42f8631bdd8c0c6b83a0752bc8c62e42740a76adf55be70965602a4941185171",
    ),
    (
        "speech_16k_s16.stm",
        "f861f3004927e1c4429199f9695bfd252def75d7d5e4bdf735d3d85fd4a667f7",
    ),
    (
        "speech_16k_s16.wav",
        "c319b4abca767b124e41432d364fd7df006cb26bb79d09326c487d606a134e6e",
    ),
    (
        "speech_LICENSE.txt",
        "a3b53644a76e70e289b25271b119c0a1aadaaf0db7a16225fb494fdc0e36c32a",
    ),
    (
        "two_tone_16k.flac",
        "f3c9f198f275efb266517781730430e1cda5dd8cd1d665415f4a2504db934bf1",
    ),
    (
        "two_tone_16k.mp3",
        "d57a89045a9b40ce031e9049cba57afef12246e4bc51e2e9e8d22c0ab642a892",
    ),
    (
        "two_tone_16k.ogg",
        "d700bef1b4dc3b6eca310de84511c7478d5d48d91d2a78059c0521ec92efb493",
    ),
    (
        "two_tone_16k_s16.wav",
        "0acee41ea54a82a363db874c5ac3b01dd8bae9ec95f8d479b057ecf9edb4cf75",
    ),
    (
        "two_tone_16k_s24.wav",
        "78d2b6248cdb397fe0d5e2ff14c015329d4f8792a4c83daa2c49694a4e842cac",
    ),
    (
        "two_tone_16k_s32.wav",
        "d2171be5bdffc7af79f3c02c2e84d769b5e6d9f01602f3f3bca8daa29d0bb335",
    ),
    (
        "two_tone_16k_u8.wav",
        "127f33578fb9007cf8d3fc2680653c7a8d8d7d9a7d673b04f460d62d17834dc3",
    ),
    (
        "two_tone_44k_stereo.flac",
        "211f4e7308c7dbf5d3f80402919007a0192685c7a59329a26eac2303c4ab8dc5",
    ),
    (
        "two_tone_44k_stereo.mp3",
        "716ab44dfcbb7a27226a45babfe4e6529ad575a04c44fdd3b878a188b9061279",
    ),
    (
        "two_tone_44k_stereo.ogg",
        "522f68be0ccc6ac66ea9be97eecafc5a3f804bbb0c2ceefc07614524209c6955",
    ),
    (
        "two_tone_44k_stereo_s16.wav",
        "a3f61597a84ba1da1b0f6c426dc494f563751ae4e12172acd930af521ffa3bca",
    ),
    (
        "two_tone_8k_s16.wav",
        "bf240b3874a8273c040d6bbc05a5096bd95153b10efa713cc5d9c06ca4d9c62a",
    ),
];

/// The venv, then the folder, each with its own stamp.
pub(super) fn audio(cx: &StepContext<'_>) -> Result<String> {
    let venv = ensure_venv(cx)?;
    let script = cx.root.join(AUDIO_SCRIPT);
    // The stamp covers what decides the bytes: the script, the venv's pins and the pinned
    // outputs (a changed pin rebuilds and checks again).
    let mut inputs = format!(
        "{}\n{}\n",
        sha256_file(&script)?,
        sha256_file(&cx.root.join(AUDIO_REQUIREMENTS))?
    );
    for (name, sha) in &AUDIO_FILES {
        inputs.push_str(&format!("{name}:{sha}\n"));
    }
    let digest = sha256_hex(inputs.as_bytes());
    let target = cx.root.join(AUDIO_DIR);
    let stamp = Stamp {
        path: target.join(".dp-stamp"),
    };
    let complete = AUDIO_FILES.iter().all(|(n, _)| target.join(n).is_file());
    if complete && stamp.matches(&digest) {
        return Ok(format!("{venv}; {AUDIO_DIR} up to date"));
    }

    let work = tempfile::Builder::new()
        .prefix(".xtask-audio-")
        .tempdir_in(cx.root.join(ASSETS_DIR))
        .context("cannot create a scratch folder in .dp-assets")?;
    let built = work.path().join("audio");
    process::run(
        Command::new(cx.root.join(AUDIO_VENV_DIR).join("bin/python"))
            .arg(&script)
            .arg(&built)
            .current_dir(cx.root),
        &format!("the venv {AUDIO_VENV_DIR} comes from {AUDIO_REQUIREMENTS}"),
    )?;
    // Check every file before replacing the folder, so a stale pin leaves the old one whole.
    for (file, expected) in &AUDIO_FILES {
        let path = built.join(file);
        let actual = sha256_file(&path)?;
        if actual != *expected {
            bail!(
                "{} has sha256 {actual}, expected {expected}; if {AUDIO_SCRIPT} or the pins of \
                 {AUDIO_REQUIREMENTS} changed on purpose, pin the new digest in \
                 xtask/src/setup/audio.rs and re-make tests/data/reference/audio/ (see its \
                 README)",
                path.display()
            );
        }
    }
    let extra: Vec<String> = std::fs::read_dir(&built)
        .with_context(|| format!("cannot list {}", built.display()))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !AUDIO_FILES.iter().any(|(f, _)| f == n))
        .collect();
    if !extra.is_empty() {
        bail!(
            "{AUDIO_SCRIPT} wrote files that xtask/src/setup/audio.rs does not pin: {}",
            extra.join(", ")
        );
    }
    stamp.clear()?;
    Stamp {
        path: built.join(".dp-stamp"),
    }
    .record(&digest)?;
    replace_dir(&built, &target)?;
    Ok(format!(
        "{venv}; {AUDIO_DIR} ({} files, sha256 of every file verified)",
        AUDIO_FILES.len()
    ))
}

/// The venv from the hash-pinned requirements; returns what was done, for the summary.
fn ensure_venv(cx: &StepContext<'_>) -> Result<String> {
    let requirements = cx.root.join(AUDIO_REQUIREMENTS);
    let digest = sha256_file(&requirements)?;
    let venv = cx.root.join(AUDIO_VENV_DIR);
    let python = venv.join("bin/python");
    let stamp = Stamp {
        path: venv.join(".dp-stamp"),
    };
    // pyannote.audio is installed for its data file only: it is never imported.
    let works = || {
        process::succeeds(Command::new(&python).args([
            "-c",
            "import numpy, soundfile, importlib.metadata as m; m.distribution('pyannote.audio')",
        ]))
    };
    if stamp.matches(&digest) && works() {
        return Ok(format!("{AUDIO_VENV_DIR} up to date"));
    }
    check_python_version(&cx.args.python)?;
    stamp.clear()?;
    install_pinned_venv(
        &cx.args.python,
        &venv,
        &requirements,
        "install Python's venv module (Debian: the python3-venv package) or pass \
         --python /path/to/python3.11",
        &format!(
            "check the network access to PyPI; a hash mismatch means {AUDIO_REQUIREMENTS} \
             lacks the wheel pip picked for this platform (only CPython 3.11 on Linux x86_64 \
             is pinned)"
        ),
    )?;
    if !works() {
        bail!(
            "the venv at {} was installed but cannot import numpy and soundfile, or lacks \
             pyannote.audio; delete it and run `cargo xtask setup` again",
            venv.display()
        );
    }
    stamp.record(&digest)?;
    Ok(format!(
        "installed {AUDIO_REQUIREMENTS} into {AUDIO_VENV_DIR}"
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;

    #[test]
    fn every_pin_is_a_sha256_of_a_distinct_file() {
        for (name, pin) in &AUDIO_FILES {
            assert_eq!(pin.len(), 64, "{name}");
            assert!(
                pin.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{name}"
            );
            assert_eq!(
                AUDIO_FILES.iter().filter(|(n, _)| n == name).count(),
                1,
                "{name} is pinned twice"
            );
        }
    }

    #[test]
    fn the_requirements_pin_every_package_with_a_hash() {
        let root = crate::workspace_root().unwrap();
        let text = std::fs::read_to_string(root.join(AUDIO_REQUIREMENTS)).unwrap();
        let joined = text.replace("\\\n", " ");
        let requirements: Vec<&str> = joined
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        for line in &requirements {
            let spec = line.split_whitespace().next().unwrap();
            assert!(spec.contains("=="), "not pinned: {line}");
            assert!(line.contains("--hash=sha256:"), "no hash: {line}");
        }
        for name in ["numpy==", "soundfile==", "cffi==", "pyannote.audio=="] {
            assert!(
                requirements.iter().any(|l| l.starts_with(name)),
                "{name} missing"
            );
        }
    }

    #[test]
    fn the_references_were_made_from_the_pinned_files() {
        // The reference index records the sha256 of each audio file its features were
        // computed from; a new pin without new references would leave them stale.
        let root = crate::workspace_root().unwrap();
        let path = root.join("tests/data/reference/audio/features.json");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let sources = json["source_audio_sha256"].as_object().unwrap();
        assert!(!sources.is_empty());
        for (file, sha) in sources {
            let pinned = AUDIO_FILES.iter().find(|(n, _)| n == file);
            assert_eq!(pinned.map(|(_, s)| *s), sha.as_str(), "{file}");
        }
    }
}
