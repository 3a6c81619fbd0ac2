//! Bit widths: one checked type, parsed from the `w8a8` notation the CLI and project files use.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The bit widths qvit's quantizers support.
pub const SUPPORTED: std::ops::RangeInclusive<u8> = 2..=16;

/// Checks one bit width; `what` names the field or layer for the error.
pub fn check(bits: u8, origin: &str, what: &str) -> Result<u8> {
    if SUPPORTED.contains(&bits) {
        Ok(bits)
    } else {
        Error::field(origin, what, format!("{bits} bits is not from 2 to 16"))
    }
}

/// Weight and activation bits of a layer or a whole model, written `w8a8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BitWidths {
    pub weights: u8,
    pub activations: u8,
}

impl BitWidths {
    pub const W8A8: BitWidths = BitWidths {
        weights: 8,
        activations: 8,
    };

    pub fn new(weights: u8, activations: u8) -> Result<Self> {
        check(weights, "bit widths", "weights")?;
        check(activations, "bit widths", "activations")?;
        Ok(Self {
            weights,
            activations,
        })
    }
}

impl fmt::Display for BitWidths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "W{}A{}", self.weights, self.activations)
    }
}

impl FromStr for BitWidths {
    type Err = Error;

    /// `w8a8`, `W4A8`, `w6a6`: weight bits after `w`, activation bits after `a`.
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let bad = || {
            Error::field::<BitWidths>(
                "bit widths",
                s,
                "expected `wNaM` with N and M from 2 to 16, e.g. `w8a8` or `w4a8`",
            )
            .unwrap_err()
        };
        let rest = lower.strip_prefix('w').ok_or_else(bad)?;
        let (w, a) = rest.split_once('a').ok_or_else(bad)?;
        let w: u8 = w.parse().map_err(|_| bad())?;
        let a: u8 = a.parse().map_err(|_| bad())?;
        check(w, "bit widths", s)?;
        check(a, "bit widths", s)?;
        Ok(Self {
            weights: w,
            activations: a,
        })
    }
}

impl TryFrom<String> for BitWidths {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<BitWidths> for String {
    fn from(b: BitWidths) -> String {
        b.to_string().to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let b: BitWidths = "W4a8".parse().unwrap();
        assert_eq!((b.weights, b.activations), (4, 8));
        assert_eq!(b.to_string(), "W4A8");
        assert_eq!(String::from(b), "w4a8");
    }

    #[test]
    fn rejects_out_of_range_and_garbage() {
        for bad in ["w1a8", "w8a17", "w8", "8a8", "wxa8", ""] {
            let e = bad.parse::<BitWidths>().unwrap_err().to_string();
            assert!(e.contains("from 2 to 16"), "{bad}: {e}");
        }
        assert!(
            check(17, "f.ron", "layer x")
                .unwrap_err()
                .to_string()
                .contains("layer x")
        );
    }
}
