//! Boot state kept in GRUB's environment block on the ESP.
//!
//! GRUB scripts have no arithmetic, so tries are counted down through
//! explicit states (3 → 2 → 1 → 0) by `grub.cfg` with `save_env` *before* a
//! slot is booted. The updater arms a slot (tries = N, good = false) and the
//! agent marks it good after the health check.
//!
//! The block itself is GRUB's format: the header line, `name=value` lines
//! (with `\` escaping backslashes and newlines), padded with `#` to exactly
//! 1024 bytes.

use std::collections::BTreeMap;

use crate::Slot;

/// Size of a GRUB environment block.
pub const ENVBLK_SIZE: usize = 1024;
const ENVBLK_HEADER: &str = "# GRUB Environment Block\n";
/// Most tries an armed slot gets (grub.cfg spells out each state).
pub const MAX_TRIES: u8 = 3;
/// Optional variable: `1` makes the "copied to RAM" entry GRUB's default.
/// Not part of [`BootState`]; other variables in the block are kept as is.
pub const TORAM_VAR: &str = "anklume_toram";

/// The boot state of both slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootState {
    /// The slot GRUB tries first.
    pub primary: Slot,
    /// Tries left per slot (`None`: not counting, e.g. a slot that is good).
    pub tries: [Option<u8>; 2],
    /// Whether the slot was marked good after a healthy boot.
    pub good: [bool; 2],
}

fn idx(s: Slot) -> usize {
    match s {
        Slot::A => 0,
        Slot::B => 1,
    }
}

impl BootState {
    /// A freshly built medium: slot A is good, B is empty.
    pub fn fresh() -> Self {
        BootState {
            primary: Slot::A,
            tries: [None, None],
            good: [true, false],
        }
    }

    pub fn tries(&self, s: Slot) -> Option<u8> {
        self.tries[idx(s)]
    }

    pub fn is_good(&self, s: Slot) -> bool {
        self.good[idx(s)]
    }

    /// Arm `s` to be tried first, `tries` times, before falling back.
    pub fn arm(&mut self, s: Slot, tries: u8) {
        self.primary = s;
        self.tries[idx(s)] = Some(tries.min(MAX_TRIES));
        self.good[idx(s)] = false;
    }

    /// Mark `s` good: it stops counting and stays primary.
    pub fn mark_good(&mut self, s: Slot) {
        self.primary = s;
        self.tries[idx(s)] = None;
        self.good[idx(s)] = true;
    }

    /// `s` is on trial: an update's slot that GRUB boots first and counts
    /// tries for, not good yet (a failed slot picked by hand from the menu
    /// is not primary, so not on trial).
    pub fn on_trial(&self, s: Slot) -> bool {
        !self.is_good(s) && self.tries(s).is_some() && self.primary == s
    }

    /// `s` failed its trial (an unhealthy boot of a slot not yet good):
    /// no tries left, and the other slot boots next. GRUB would come to the
    /// same once the tries are used up; this skips the remaining boots.
    pub fn fail_trial(&mut self, s: Slot) {
        self.tries[idx(s)] = Some(0);
        self.good[idx(s)] = false;
        self.primary = s.other();
    }

    /// The environment variables `grub.cfg` reads, sorted by name.
    pub fn to_vars(&self) -> BTreeMap<String, String> {
        let mut v = BTreeMap::new();
        v.insert("anklume_primary".to_string(), self.primary.to_string());
        for s in [Slot::A, Slot::B] {
            let tries = self.tries(s).map_or("none".to_string(), |t| t.to_string());
            v.insert(format!("anklume_tries_{s}"), tries);
            let good = if self.is_good(s) { "1" } else { "0" };
            v.insert(format!("anklume_good_{s}"), good.to_string());
        }
        v
    }

    /// Parse the variables back; missing or unreadable values are errors.
    pub fn from_vars(vars: &BTreeMap<String, String>) -> Result<Self, String> {
        let get = |k: &str| {
            vars.get(k)
                .map(String::as_str)
                .ok_or_else(|| format!("boot state: variable {k} is missing"))
        };
        let primary = get("anklume_primary")?
            .parse::<Slot>()
            .map_err(|e| format!("boot state: anklume_primary: {e}"))?;
        let mut st = BootState {
            primary,
            tries: [None, None],
            good: [false, false],
        };
        for s in [Slot::A, Slot::B] {
            let k = format!("anklume_tries_{s}");
            st.tries[idx(s)] = match get(&k)? {
                "none" => None,
                t => match t.parse::<u8>() {
                    Ok(n) if n <= MAX_TRIES => Some(n),
                    _ => return Err(format!("boot state: {k}={t} is not none or 0-{MAX_TRIES}")),
                },
            };
            let k = format!("anklume_good_{s}");
            st.good[idx(s)] = match get(&k)? {
                "1" => true,
                "0" => false,
                g => return Err(format!("boot state: {k}={g} is not 0 or 1")),
            };
        }
        Ok(st)
    }
}

/// Encode variables as a GRUB environment block of exactly 1024 bytes.
pub fn encode_envblk(vars: &BTreeMap<String, String>) -> Result<Vec<u8>, String> {
    let mut out = String::from(ENVBLK_HEADER);
    for (k, v) in vars {
        if k.is_empty() || k.contains(['=', '\n', '\\']) {
            return Err(format!("GRUB environment: invalid variable name {k:?}"));
        }
        out.push_str(k);
        out.push('=');
        for c in v.chars() {
            if c == '\\' || c == '\n' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('\n');
    }
    if out.len() > ENVBLK_SIZE {
        return Err(format!(
            "GRUB environment: {} bytes of variables do not fit in {ENVBLK_SIZE}",
            out.len()
        ));
    }
    let mut bytes = out.into_bytes();
    bytes.resize(ENVBLK_SIZE, b'#');
    Ok(bytes)
}

/// Decode a GRUB environment block.
pub fn decode_envblk(block: &[u8]) -> Result<BTreeMap<String, String>, String> {
    if block.len() != ENVBLK_SIZE {
        return Err(format!(
            "GRUB environment: block is {} bytes, expected {ENVBLK_SIZE}",
            block.len()
        ));
    }
    let text = std::str::from_utf8(block)
        .map_err(|e| format!("GRUB environment: not UTF-8 at byte {}", e.valid_up_to()))?;
    let body = text
        .strip_prefix(ENVBLK_HEADER)
        .ok_or("GRUB environment: missing '# GRUB Environment Block' header")?;
    let mut vars = BTreeMap::new();
    let mut chars = body.chars().peekable();
    let mut line = String::new();
    loop {
        match chars.next() {
            None => break,
            Some('\\') => match chars.next() {
                Some(c) => line.push(c),
                None => return Err("GRUB environment: dangling backslash".into()),
            },
            Some('\n') => {
                if let Some((k, v)) = line.split_once('=') {
                    vars.insert(k.to_string(), v.to_string());
                }
                line.clear();
            }
            Some(c) => line.push(c),
        }
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envblk_is_1024_bytes_and_round_trips() {
        let mut st = BootState::fresh();
        st.arm(Slot::B, 3);
        let blk = encode_envblk(&st.to_vars()).unwrap();
        assert_eq!(blk.len(), ENVBLK_SIZE);
        assert!(blk.starts_with(b"# GRUB Environment Block\nanklume_good_a=1\n"));
        assert_eq!(*blk.last().unwrap(), b'#');
        let back = BootState::from_vars(&decode_envblk(&blk).unwrap()).unwrap();
        assert_eq!(back, st);
    }

    #[test]
    fn escapes_survive_a_round_trip() {
        let mut v = BTreeMap::new();
        v.insert("x".to_string(), "a\\b\nc".to_string());
        let back = decode_envblk(&encode_envblk(&v).unwrap()).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn arm_then_mark_good() {
        let mut st = BootState::fresh();
        st.arm(Slot::B, 9);
        assert_eq!(st.tries(Slot::B), Some(MAX_TRIES));
        assert!(!st.is_good(Slot::B));
        assert_eq!(st.primary, Slot::B);
        st.mark_good(Slot::B);
        assert_eq!(st.tries(Slot::B), None);
        assert!(st.is_good(Slot::B));
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode_envblk(&[b'#'; 10]).is_err());
        assert!(decode_envblk(&[b'#'; ENVBLK_SIZE]).is_err());
        let mut v = BootState::fresh().to_vars();
        v.insert("anklume_tries_a".into(), "7".into());
        assert!(BootState::from_vars(&v).is_err());
        let mut big = BTreeMap::new();
        big.insert("k".to_string(), "v".repeat(2000));
        assert!(encode_envblk(&big).is_err());
    }
}
