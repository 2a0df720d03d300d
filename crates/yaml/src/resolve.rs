//! PyYAML's implicit resolver (YAML 1.1 types of plain scalars).
//!
//! The same rules serve both directions: on load a plain scalar gets the
//! first type whose pattern matches; on dump a string that would resolve to
//! another type must be quoted. Patterns end in `\n?$` because Python's `$`
//! also matches before a final newline.

use std::sync::LazyLock;

use regex::Regex;

/// The type a plain scalar resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implicit {
    Null,
    Bool,
    Int,
    Float,
    Timestamp,
    Merge,
    /// PyYAML's `tag:yaml.org,2002:value` (`=`), which SafeLoader cannot build.
    ValueTag,
    Str,
}

static BOOL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)\n?$",
    )
    .expect("static regex")
});
static FLOAT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?",
        r"|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?",
        r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*",
        r"|[-+]?\.(?:inf|Inf|INF)",
        r"|\.(?:nan|NaN|NAN))\n?$"
    ))
    .expect("static regex")
});
static INT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:[-+]?0b[0-1_]+",
        r"|[-+]?0[0-7_]+",
        r"|[-+]?(?:0|[1-9][0-9_]*)",
        r"|[-+]?0x[0-9a-fA-F_]+",
        r"|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)\n?$"
    ))
    .expect("static regex")
});
static NULL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(?:~|null|Null|NULL|)\n?$").expect("static regex"));
static TIMESTAMP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]",
        r"|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?",
        r"(?:[Tt]|[ \t]+)[0-9][0-9]?",
        r":[0-9][0-9]:[0-9][0-9](?:\.[0-9]*)?",
        r"(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)\n?$"
    ))
    .expect("static regex")
});

/// Resolve a plain scalar as PyYAML's SafeLoader does.
///
/// PyYAML picks candidate resolvers by the first character and tries them in
/// registration order (bool, float, int, merge, null, timestamp, value).
pub fn resolve_plain(s: &str) -> Implicit {
    let first = s.chars().next();
    let Some(c) = first else {
        return Implicit::Null;
    };
    if "yYnNtTfFoO".contains(c) && BOOL.is_match(s) {
        return Implicit::Bool;
    }
    if "-+0123456789.".contains(c) && FLOAT.is_match(s) {
        return Implicit::Float;
    }
    if "-+0123456789".contains(c) && INT.is_match(s) {
        return Implicit::Int;
    }
    if c == '<' && (s == "<<" || s == "<<\n") {
        return Implicit::Merge;
    }
    if "~nN".contains(c) && NULL.is_match(s) {
        return Implicit::Null;
    }
    if c.is_ascii_digit() && TIMESTAMP.is_match(s) {
        return Implicit::Timestamp;
    }
    if c == '=' && (s == "=" || s == "=\n") {
        return Implicit::ValueTag;
    }
    Implicit::Str
}

/// Construct an integer from text that matched the int pattern.
pub fn construct_int(text: &str) -> Option<i128> {
    let t: String = text
        .trim_end_matches('\n')
        .chars()
        .filter(|&c| c != '_')
        .collect();
    let (neg, body) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, &t[..]),
    };
    let mag: i128 = if body == "0" {
        0
    } else if let Some(b) = body.strip_prefix("0b") {
        i128::from_str_radix(b, 2).ok()?
    } else if let Some(h) = body.strip_prefix("0x") {
        i128::from_str_radix(h, 16).ok()?
    } else if body.starts_with('0') {
        i128::from_str_radix(body, 8).ok()?
    } else if body.contains(':') {
        let mut v: i128 = 0;
        for part in body.split(':') {
            v = v.checked_mul(60)?.checked_add(part.parse::<i128>().ok()?)?;
        }
        v
    } else {
        body.parse::<i128>().ok()?
    };
    Some(if neg { -mag } else { mag })
}

/// Construct a float from text that matched the float pattern.
pub fn construct_float(text: &str) -> Option<f64> {
    let t: String = text
        .trim_end_matches('\n')
        .chars()
        .filter(|&c| c != '_')
        .collect::<String>()
        .to_lowercase();
    let (sign, body) = match t.as_bytes().first()? {
        b'-' => (-1.0, &t[1..]),
        b'+' => (1.0, &t[1..]),
        _ => (1.0, &t[..]),
    };
    if body == ".inf" {
        return Some(sign * f64::INFINITY);
    }
    if body == ".nan" {
        return Some(f64::NAN);
    }
    if body.contains(':') {
        let mut v = 0.0f64;
        for part in body.split(':') {
            v = v * 60.0 + part.parse::<f64>().ok()?;
        }
        return Some(sign * v);
    }
    // Python's float() accepts "1." and ".5"; Rust's parser does too.
    body.parse::<f64>().ok().map(|v| sign * v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml11_types() {
        use Implicit::*;
        let cases = [
            ("yes", Bool),
            ("Off", Bool),
            ("y", Str),
            ("true", Bool),
            ("012", Int),
            ("08", Str),
            ("0x1F", Int),
            ("1:30", Int),
            ("190:20:30.15", Float),
            ("1.5", Float),
            ("1e3", Str),
            ("1.0e+3", Float),
            (".inf", Float),
            ("-.INF", Float),
            (".NaN", Float),
            ("~", Null),
            ("", Null),
            ("null", Null),
            ("nil", Str),
            ("2024-01-05", Timestamp),
            ("2001-12-14t21:59:43.10-05:00", Timestamp),
            ("2024-1-5", Str),
            ("<<", Merge),
            ("=", ValueTag),
            ("10.100", Float),
            ("10.100.0.1", Str),
            ("images:debian/13", Str),
            ("8GiB", Str),
        ];
        for (s, want) in cases {
            assert_eq!(resolve_plain(s), want, "{s:?}");
        }
    }

    #[test]
    fn int_construction() {
        assert_eq!(construct_int("012"), Some(10));
        assert_eq!(construct_int("-0b101"), Some(-5));
        assert_eq!(construct_int("0x_ff"), Some(255));
        assert_eq!(construct_int("1:30"), Some(90));
        assert_eq!(construct_int("1_000"), Some(1000));
        assert_eq!(construct_int("+0"), Some(0));
        assert_eq!(construct_int("0b_"), None);
    }

    #[test]
    fn float_construction() {
        assert_eq!(construct_float("1_0.5"), Some(10.5));
        assert_eq!(construct_float("-.inf"), Some(f64::NEG_INFINITY));
        assert!(construct_float(".nan").unwrap().is_nan());
        assert_eq!(construct_float("1:30.5"), Some(90.5));
        assert_eq!(construct_float("1."), Some(1.0));
    }
}
