//! Cache keys: the full [`CacheKey`] for reports, and its interned form [`PackedKey`] for
//! the hot path.

use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use dp_spec::{Precision, ResolvedDevice, Runtime};
use serde::{Serialize, Serializer};

/// What makes two loaded instances interchangeable: the same model, placed on the same
/// device, at the same precision, behind the same runtime and preprocessing preset.
///
/// Triton models are placed by their server, not by this process: their device is recorded
/// as [`ResolvedDevice::Cpu`] for keying and budgeting (they hold no local GPU memory).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct CacheKey {
    /// The catalog name (never an alias).
    pub model_name: String,
    /// Where the model is placed.
    #[serde(serialize_with = "display")]
    pub device: ResolvedDevice,
    /// The precision it runs at.
    pub precision: Precision,
    /// The runtime serving it.
    pub runtime: Runtime,
    /// The shared preprocessing preset, if any.
    pub preprocess_preset: Option<String>,
}

fn display<S: Serializer>(device: &ResolvedDevice, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(device)
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}/{}",
            self.model_name,
            self.device,
            self.precision.as_str()
        )
    }
}

/// A [`CacheKey`] interned into one word, so the hot path hashes and compares a `u64`
/// instead of strings.
///
/// Layout: bits 0–31 the catalog index, bits 32–48 the device (0 = CPU, N + 1 = CUDA N),
/// bits 56–57 the precision. The runtime and preprocessing preset are functions of the
/// catalog entry, so the index already stands for them. Device and precision are packed
/// even though a catalog entry fixes them today, so a future per-request override (e.g. a
/// task asking for fp16) gets its own cache slot without changing the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PackedKey(u64);

impl PackedKey {
    pub(crate) fn new(index: u32, device: ResolvedDevice, precision: Precision) -> Self {
        let device = match device {
            ResolvedDevice::Cpu => 0_u64,
            ResolvedDevice::Cuda(n) => u64::from(n) + 1,
        };
        let precision = match precision {
            Precision::Fp32 => 0_u64,
            Precision::Fp16 => 1,
            Precision::Bf16 => 2,
            Precision::Int8 => 3,
        };
        Self(u64::from(index) | (device << 32) | (precision << 56))
    }

    /// The catalog index the key was built from.
    pub(crate) const fn index(self) -> u32 {
        // Truncation is the point: the index is the low 32 bits.
        #[allow(clippy::cast_possible_truncation)]
        let index = self.0 as u32;
        index
    }
}

/// log2 of the number of dashmap shards of the slot map.
pub(crate) const SHARD_BITS: u32 = 6;

/// Shards of the slot map: more than dashmap's default (4 × cores, i.e. 8 on a 2-core
/// machine), so hot models rarely share a shard lock.
pub(crate) const SHARDS: usize = 1 << SHARD_BITS;

/// Hashes [`PackedKey`]s for the slot map: one multiply (the keys are small integers from
/// our own catalog, so no flooding resistance is needed), with the low bits of the catalog
/// index placed where dashmap picks the shard.
///
/// dashmap selects the shard from the hash bits just below the 7 it leaves to hashbrown's
/// tag (`(hash << 7) >> (64 - SHARD_BITS)`). Putting the index there gives catalog entries
/// whose indices differ modulo [`SHARDS`] distinct shard locks, deterministically: two
/// threads using two different models never contend on a lock by bad luck of a random seed.
/// Should dashmap change its formula, this stays a valid (if less deliberate) hash.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

/// Builds [`KeyHasher`]s.
pub(crate) type KeyHashBuilder = BuildHasherDefault<KeyHasher>;

const SHARD_SHIFT: u32 = 64 - 7 - SHARD_BITS;
const SHARD_MASK: u64 = (1 << SHARD_BITS) - 1;

impl KeyHasher {
    const fn spread(key: u64) -> u64 {
        // Fibonacci hashing: multiplying by 2^64/φ spreads consecutive keys over all bits.
        let mixed = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        (mixed & !(SHARD_MASK << SHARD_SHIFT)) | ((key & SHARD_MASK) << SHARD_SHIFT)
    }
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        // `PackedKey` only calls `write_u64`; this keeps the hasher total for any key type.
        for &byte in bytes {
            self.0 = Self::spread(self.0.rotate_left(8) ^ u64::from(byte));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = Self::spread(self.0 ^ value);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_keys_are_distinct_per_field() {
        let base = PackedKey::new(7, ResolvedDevice::Cpu, Precision::Fp32);
        assert_eq!(base.index(), 7);
        let variants = [
            PackedKey::new(8, ResolvedDevice::Cpu, Precision::Fp32),
            PackedKey::new(7, ResolvedDevice::Cuda(0), Precision::Fp32),
            PackedKey::new(7, ResolvedDevice::Cuda(u16::MAX), Precision::Fp32),
            PackedKey::new(7, ResolvedDevice::Cpu, Precision::Fp16),
            PackedKey::new(7, ResolvedDevice::Cpu, Precision::Bf16),
            PackedKey::new(u32::MAX, ResolvedDevice::Cuda(u16::MAX), Precision::Bf16),
        ];
        for v in variants {
            assert_ne!(v, base);
        }
        assert_eq!(variants[5].index(), u32::MAX);
        assert_eq!(
            variants[2].index(),
            7,
            "device bits never leak into the index"
        );
    }

    #[test]
    fn the_catalog_index_chooses_the_shard() {
        use std::hash::{BuildHasher, Hash};
        let builder = KeyHashBuilder::default();
        let shard = |key: PackedKey| {
            let hash = builder.hash_one(key);
            // dashmap's shard selection (see `KeyHasher`).
            usize::try_from((hash << 7) >> (64 - SHARD_BITS)).expect("small")
        };
        let shards: Vec<usize> = (0..64)
            .map(|i| shard(PackedKey::new(i, ResolvedDevice::Cpu, Precision::Fp32)))
            .collect();
        assert_eq!(shards, (0..64).collect::<Vec<_>>());
        // The rest of the hash still varies (hashbrown's bucket index and tag).
        let a = builder.hash_one(PackedKey::new(1, ResolvedDevice::Cpu, Precision::Fp32));
        let b = builder.hash_one(PackedKey::new(65, ResolvedDevice::Cpu, Precision::Fp32));
        let c = builder.hash_one(PackedKey::new(1, ResolvedDevice::Cuda(0), Precision::Fp32));
        assert!(a != b && a != c && a >> 57 != b >> 57);
        let mut h = KeyHasher::default();
        7_u8.hash(&mut h);
        assert_ne!(h.finish(), 0);
    }
}
