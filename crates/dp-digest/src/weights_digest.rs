use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::DigestError;

/// Length in bytes of every supported digest (SHA-256 and BLAKE3 both produce 32 bytes).
pub(crate) const DIGEST_LEN: usize = 32;

/// The regular expression every textual digest must match; also published in the JSON Schema.
pub const WEIGHTS_DIGEST_PATTERN: &str = "^(sha256|blake3):[0-9a-f]{64}$";

/// A hash algorithm a digest can name; serialized as `sha256` / `blake3`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DigestAlgorithm {
    /// SHA-256 (FIPS 180-4): what `sha256sum` prints.
    Sha256,
    /// BLAKE3: what `b3sum` prints.
    Blake3,
}

impl DigestAlgorithm {
    /// The prefix used in the textual form (`sha256`, `blake3`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Blake3 => "blake3",
        }
    }
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DigestAlgorithm {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sha256" => Ok(Self::Sha256),
            "blake3" => Ok(Self::Blake3),
            other => Err(DigestError::UnknownAlgorithm {
                algorithm: other.to_owned(),
            }),
        }
    }
}

/// The pinned digest of a model's weights: an algorithm and 32 bytes.
///
/// Its textual form is canonical (`<algorithm>:<64 lowercase hex digits>`), so two
/// digests are equal exactly when their texts are equal.
///
/// ```
/// use dp_digest::{DigestAlgorithm, WeightsDigest};
///
/// let text = "sha256:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
/// let digest: WeightsDigest = text.parse()?;
/// assert_eq!(digest.algorithm(), DigestAlgorithm::Sha256);
/// assert_eq!(digest.to_string(), text);
/// assert!("md5:abc".parse::<WeightsDigest>().is_err());
/// # Ok::<(), dp_digest::DigestError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WeightsDigest {
    algorithm: DigestAlgorithm,
    bytes: [u8; DIGEST_LEN],
}

impl WeightsDigest {
    /// Builds a digest from raw bytes, e.g. the output of a hasher.
    #[must_use]
    pub const fn from_bytes(algorithm: DigestAlgorithm, bytes: [u8; DIGEST_LEN]) -> Self {
        Self { algorithm, bytes }
    }

    /// The algorithm that produced this digest.
    #[must_use]
    pub const fn algorithm(&self) -> DigestAlgorithm {
        self.algorithm
    }

    /// The raw digest bytes.
    #[must_use]
    pub const fn bytes(&self) -> &[u8; DIGEST_LEN] {
        &self.bytes
    }

    /// The lowercase hexadecimal form of the bytes, without the algorithm prefix.
    #[must_use]
    pub fn hex(&self) -> String {
        hex::encode(self.bytes)
    }
}

impl fmt::Display for WeightsDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex())
    }
}

impl fmt::Debug for WeightsDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WeightsDigest({self})")
    }
}

impl FromStr for WeightsDigest {
    type Err = DigestError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (algorithm, hex_part) =
            text.split_once(':')
                .ok_or_else(|| DigestError::MissingAlgorithm {
                    text: text.to_owned(),
                })?;
        let algorithm: DigestAlgorithm = algorithm.parse()?;
        let malformed = || DigestError::MalformedHex {
            algorithm,
            hex: hex_part.to_owned(),
            len: hex_part.chars().count(),
        };
        // Uppercase hex is refused so that the textual form stays canonical.
        if hex_part.len() != DIGEST_LEN * 2
            || !hex_part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(malformed());
        }
        let mut bytes = [0_u8; DIGEST_LEN];
        hex::decode_to_slice(hex_part, &mut bytes).map_err(|_| malformed())?;
        Ok(Self { algorithm, bytes })
    }
}

impl Serialize for WeightsDigest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WeightsDigest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for WeightsDigest {
    fn schema_name() -> Cow<'static, str> {
        "WeightsDigest".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": WEIGHTS_DIGEST_PATTERN,
            "description": "Digest of the weights: `sha256:<64 lowercase hex>` or `blake3:<64 lowercase hex>`.",
            "examples": ["sha256:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";

    #[test]
    fn round_trips_both_algorithms() {
        for algo in ["sha256", "blake3"] {
            let text = format!("{algo}:{HEX}");
            let digest: WeightsDigest = text.parse().expect("valid digest");
            assert_eq!(digest.to_string(), text);
            assert_eq!(digest.hex(), HEX);
        }
    }

    #[test]
    fn rejects_unknown_algorithm() {
        let err = format!("md5:{HEX}").parse::<WeightsDigest>().unwrap_err();
        assert!(
            matches!(&err, DigestError::UnknownAlgorithm { algorithm } if algorithm == "md5"),
            "{err:?}"
        );
    }

    #[test]
    fn rejects_short_uppercase_and_non_hex() {
        for bad in [
            "sha256:abc".to_owned(),
            format!("sha256:{}", HEX.to_uppercase()),
            format!("sha256:{}zz", &HEX[..62]),
            format!("sha256:{HEX}00"),
        ] {
            assert!(
                matches!(
                    bad.parse::<WeightsDigest>(),
                    Err(DigestError::MalformedHex { .. })
                ),
                "{bad} should be malformed"
            );
        }
        assert!(matches!(
            HEX.parse::<WeightsDigest>(),
            Err(DigestError::MissingAlgorithm { .. })
        ));
    }
}
