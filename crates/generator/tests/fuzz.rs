//! 1,000 random and mutated inputs: `anklume sync` never panics, and either
//! succeeds or writes nothing at all.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use anklume_generator::Outcome;
use common::{run_sync, tree, vectors_dir};

/// xorshift64*: deterministic, so a failure names a reproducible seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

const TOKENS: &[&str] = &[
    "null",
    "~",
    "[]",
    "{}",
    "- x",
    "[1, 2]",
    "{a: b}",
    "yes",
    "no",
    "012",
    "0x1F",
    "1:30",
    "1.5",
    ".inf",
    "'quoted'",
    "\"dq\\tx\"",
    "!!int 7",
    "!!str 7",
    "!!binary aGk=",
    "!foo x",
    "&a x",
    "*a",
    "*undefined",
    "<<: *a",
    "2024-01-01",
    "=",
    "|\n  block",
    ">\n  folded",
    "\"\\xff\"",
    "\t",
    "-",
    ":",
    "? x",
    "%TAG",
    "10.120.0.300",
    "vm",
    "lxc",
    "true",
    "-1",
    "999999999999999999999999999999999999999999",
    "\u{1}",
    "é",
    "domains:",
    "machines:",
    "global:",
    "ip:",
    "subnet_id: 5",
    "trust_level: admin",
    "---",
    "...",
];

fn mutate(rng: &mut Rng, src: &str) -> Vec<u8> {
    let mut lines: Vec<String> = src.lines().map(str::to_string).collect();
    for _ in 0..=rng.below(4) {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let i = rng.below(lines.len());
        match rng.below(8) {
            0 => {
                lines.remove(i);
            }
            1 => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            2 => {
                // Replace the value after the first colon.
                if let Some(p) = lines[i].find(':') {
                    let t = rng.pick(TOKENS);
                    lines[i] = format!("{}: {t}", &lines[i][..p]);
                }
            }
            3 => {
                let t = rng.pick(TOKENS).to_string();
                lines.insert(i, t);
            }
            4 => {
                // Shift indentation.
                let l = lines[i].clone();
                lines[i] = if rng.below(2) == 0 {
                    format!("  {l}")
                } else {
                    l.trim_start().to_string()
                };
            }
            5 => {
                let t = rng.pick(TOKENS);
                lines[i].push_str(t);
            }
            6 => {
                let j = rng.below(lines.len());
                lines.swap(i, j);
            }
            _ => {
                lines.truncate(i);
            }
        }
    }
    let mut bytes = lines.join("\n").into_bytes();
    if rng.below(20) == 0 && !bytes.is_empty() {
        let k = rng.below(bytes.len());
        bytes[k] = 0xFF;
    }
    bytes
}

fn pick_token(rng: &mut Rng) -> &'static str {
    TOKENS[rng.below(TOKENS.len())]
}

fn random_doc(rng: &mut Rng) -> Vec<u8> {
    let mut s = String::new();
    for _ in 0..rng.below(30) {
        let indent = "  ".repeat(rng.below(4));
        s.push_str(&indent);
        s.push_str(pick_token(rng));
        if rng.below(2) == 0 {
            s.push_str(": ");
            s.push_str(pick_token(rng));
        }
        s.push('\n');
    }
    s.into_bytes()
}

#[test]
fn thousand_random_and_mutated_inputs_never_panic_nor_half_write() {
    let mut seeds: Vec<String> = Vec::new();
    for e in std::fs::read_dir(vectors_dir()).unwrap().flatten() {
        let f = e.path().join("input/infra.yml");
        if let Ok(s) = std::fs::read_to_string(&f) {
            seeds.push(s);
        }
    }
    assert!(!seeds.is_empty());
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut ok, mut invalid) = (0, 0);
    for case in 0..1000 {
        let input = if case % 4 == 3 {
            random_doc(&mut rng)
        } else {
            let seed = rng.pick(&seeds).clone();
            mutate(&mut rng, &seed)
        };
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("infra.yml");
        std::fs::write(&file, &input).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let res = catch_unwind(AssertUnwindSafe(|| run_sync(&file, &out)));
        let Ok((outcome, _, err)) = res else {
            panic!(
                "case {case} panicked on input:\n{}",
                String::from_utf8_lossy(&input)
            );
        };
        let written = tree(&out);
        match outcome {
            Outcome::Invalid => {
                invalid += 1;
                assert!(
                    written.is_empty(),
                    "case {case}: invalid input but files were written"
                );
                assert!(
                    !err.trim().is_empty(),
                    "case {case}: rejected without a message"
                );
            }
            Outcome::Done(s) => {
                ok += 1;
                assert_eq!(
                    s.written,
                    written.len(),
                    "case {case}: summary does not match the tree"
                );
            }
        }
    }
    // Both outcomes must be exercised for the test to mean anything.
    eprintln!("ok={ok} invalid={invalid}");
    assert!(ok >= 20 && invalid >= 200, "ok={ok} invalid={invalid}");
}
