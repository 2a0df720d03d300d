//! Disk sizes as people write them: `500 GB` (decimal, what disk vendors
//! print), `64 GiB` (binary), or a plain number of bytes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

const UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
];

impl FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Size, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = (&t[..split], t[split..].trim().to_ascii_lowercase());
        let bad = || {
            format!("size {s:?}: expected a number with a unit such as \"500 GB\", \"64 GiB\" or plain bytes (units: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")
        };
        if num.is_empty() {
            return Err(bad());
        }
        let mult = if unit.is_empty() {
            1
        } else {
            UNITS
                .iter()
                .find(|(u, _)| *u == unit)
                .map(|(_, m)| *m)
                .ok_or_else(bad)?
        };
        let bytes = if let Some((int, frac)) = num.split_once('.') {
            let int: u64 = if int.is_empty() {
                0
            } else {
                int.parse().map_err(|_| bad())?
            };
            if frac.is_empty() || frac.len() > 6 || frac.contains('.') {
                return Err(bad());
            }
            let f: u64 = frac.parse().map_err(|_| bad())?;
            let scale = 10u64.pow(frac.len() as u32);
            int.checked_mul(mult)
                .and_then(|a| a.checked_add(f.checked_mul(mult)? / scale))
        } else {
            num.parse::<u64>().map_err(|_| bad())?.checked_mul(mult)
        };
        bytes
            .map(Size)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

impl fmt::Display for Size {
    /// Decimal units, as on the disk's label: `500.1 GB`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (u, m) in [("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)] {
            if b as f64 >= m {
                return write!(f, "{:.1} {u}", b as f64 / m);
            }
        }
        write!(f, "{b} B")
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Size {
    /// A string with a unit, or an integer number of bytes.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(b) => Ok(Size(b)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_decimal_binary_and_bytes() {
        assert_eq!("500 GB".parse::<Size>().unwrap(), Size(500_000_000_000));
        assert_eq!("64GiB".parse::<Size>().unwrap(), Size(64 << 30));
        assert_eq!("1.5 TB".parse::<Size>().unwrap(), Size(1_500_000_000_000));
        assert_eq!("4096".parse::<Size>().unwrap(), Size(4096));
        assert_eq!("2 tib".parse::<Size>().unwrap(), Size(2 << 40));
    }

    #[test]
    fn refuses_ambiguous_or_broken_sizes() {
        for s in [
            "",
            "GB",
            "10 G",
            "1.2.3 GB",
            "ten GB",
            "99999999999999 TB",
            "1. GB",
        ] {
            assert!(s.parse::<Size>().is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn displays_decimal_units() {
        assert_eq!(Size(8 << 30).to_string(), "8.6 GB");
        assert_eq!(Size(500_107_862_016).to_string(), "500.1 GB");
        assert_eq!(Size(512).to_string(), "512 B");
    }
}
