//! FNV-1a, the 64-bit digest qvit names cached files by: the weights a calibration was taken
//! with, a calibration set, the statistics and settings a quant plan was built from. Stable
//! across runs and machines (unlike `std`'s randomly seeded hasher), so a digest written into a
//! file name finds the file again next time.

/// An FNV-1a state; feed it bytes, floats and strings, then read [`Digest::finish`].
#[derive(Debug, Clone, Copy)]
pub struct Digest(u64);

impl Default for Digest {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Digest {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    /// A string, followed by its length so that `("ab", "c")` and `("a", "bc")` differ.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes()).u64(s.len() as u64)
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Floats by their bits, little-endian (the same value gives the same digest everywhere).
    pub fn f32s(&mut self, values: &[f32]) -> &mut Self {
        for v in values {
            self.bytes(&v.to_le_bytes());
        }
        self
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// The digest of one byte string.
pub fn of(bytes: &[u8]) -> u64 {
    Digest::new().bytes(bytes).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_fnv_1a_values() {
        // FNV-1a 64 test vectors (Fowler, Noll, Vo): "" and "a".
        assert_eq!(of(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(of(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(of(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn strings_are_delimited_and_floats_fed_by_their_bits() {
        let ab_c = Digest::new().str("ab").str("c").finish();
        let a_bc = Digest::new().str("a").str("bc").finish();
        assert_ne!(ab_c, a_bc);
        let one = Digest::new().f32s(&[1.0]).finish();
        assert_eq!(one, of(&1.0f32.to_le_bytes()));
        assert_ne!(
            Digest::new().f32s(&[0.0]).finish(),
            Digest::new().f32s(&[-0.0]).finish()
        );
    }
}
