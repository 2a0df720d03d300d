//! The A/B slot model.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of the two OS slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    /// The slot an update writes to while this one runs.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// Lower-case letter used in labels, kernel arguments and GRUB variables.
    pub fn letter(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.letter())
    }
}

impl FromStr for Slot {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "a" | "A" => Ok(Slot::A),
            "b" | "B" => Ok(Slot::B),
            other => Err(format!("unknown slot {other:?} (expected 'a' or 'b')")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_is_an_involution() {
        for s in [Slot::A, Slot::B] {
            assert_ne!(s.other(), s);
            assert_eq!(s.other().other(), s);
        }
    }

    #[test]
    fn parses_its_own_display() {
        for s in [Slot::A, Slot::B] {
            assert_eq!(s.to_string().parse::<Slot>().unwrap(), s);
        }
        assert!("c".parse::<Slot>().is_err());
    }
}
