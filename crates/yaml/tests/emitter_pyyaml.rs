//! Differential test of the emitter against PyYAML itself: random documents
//! are dumped by `to_yaml` and by `yaml.dump` with the reference's dumper
//! settings, and must be byte-identical. Needs `python3` with PyYAML
//! (Debian's python3-yaml, installed by `ci/setup`).

use std::process::Command;

use anklume_yaml::emit::to_yaml;
use anklume_yaml::{Mapping, Node, Value};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};

const PY: &str = r#"
import json, sys, yaml
class D(yaml.SafeDumper):
    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)
D.add_representer(type(None), lambda d, _: d.represent_scalar("tag:yaml.org,2002:null", ""))
docs = json.load(open(sys.argv[1], encoding="utf-8"))
out = [yaml.dump(d, Dumper=D, default_flow_style=False, sort_keys=False, allow_unicode=True) for d in docs]
json.dump(out, open(sys.argv[2], "w", encoding="utf-8"))
"#;

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| Value::Int(i.into())),
        prop_oneof![any::<f64>().prop_filter("finite", |f| f.is_finite()), Just(1e16), Just(1.5e-7), Just(0.1)]
            .prop_map(Value::Float),
        "[ -~]{0,30}".prop_map(Value::Str),
        "(yes|No|on|null|~|012|0x1f|1:30|1\\.5|-|- x|#x|x #y|: x|x: y|'q'|\"q\"|<<|=|2024-01-01|---|\\.\\.\\.|1e3|\\.inf)"
            .prop_map(Value::Str),
        "[a-z ]{60,140}".prop_map(Value::Str),
        "[ -~\\t\\n\u{e9}\u{2014}\u{85}\u{a0}\u{2028}\u{feff}\u{1f600}\\\\]{0,40}".prop_map(Value::Str),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5)
                .prop_map(|v| Value::Seq(v.into_iter().map(Node::synthetic).collect())),
            prop::collection::vec(("[a-z.\\- ]{0,12}|[a-z]{130}", inner), 0..5).prop_map(|kv| {
                let mut m = Mapping::new();
                for (k, v) in kv {
                    m.insert(Node::synthetic(Value::Str(k)), Node::synthetic(v));
                }
                Value::Map(m)
            }),
        ]
    })
}

fn to_json(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format!("{f:e}"),
        Value::Str(s) | Value::Timestamp(s) => {
            let mut o = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => o.push_str("\\\""),
                    '\\' => o.push_str("\\\\"),
                    c if (c as u32) < 0x20 || c == '\u{85}' || c == '\u{2028}' => {
                        o.push_str(&format!("\\u{:04x}", c as u32))
                    }
                    c => o.push(c),
                }
            }
            o.push('"');
            o
        }
        Value::Seq(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|n| to_json(&n.value))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Value::Map(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}:{}", to_json(&k.value), to_json(&v.value)))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

#[test]
fn emitter_matches_pyyaml_byte_for_byte() {
    let mut runner = TestRunner::new(Config::default());
    let docs: Vec<Value> = (0..400)
        .map(|_| {
            let v = value().new_tree(&mut runner).unwrap().current();
            // The reference always dumps a mapping at the top.
            let mut m = Mapping::new();
            m.insert(Node::synthetic(Value::str("root")), Node::synthetic(v));
            Value::Map(m)
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.json");
    let output = dir.path().join("out.json");
    let json = format!(
        "[{}]",
        docs.iter().map(to_json).collect::<Vec<_>>().join(",")
    );
    std::fs::write(&input, json).unwrap();
    let st = Command::new("python3")
        .arg("-c")
        .arg(PY)
        .arg(&input)
        .arg(&output)
        .status()
        .expect("python3 with PyYAML is required (apt-get install python3-yaml)");
    assert!(st.success(), "PyYAML run failed");
    let out = std::fs::read_to_string(&output).unwrap();
    let expected = parse_json_strings(&out);
    assert_eq!(expected.len(), docs.len());
    for (doc, want) in docs.iter().zip(&expected) {
        let got = to_yaml(doc);
        assert_eq!(&got, want, "document (JSON): {}", to_json(doc));
    }
}

/// Minimal reader for the JSON list of strings Python writes.
fn parse_json_strings(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut cur = String::new();
        while let Some(c) = chars.next() {
            match c {
                '"' => break,
                '\\' => match chars.next().unwrap() {
                    'n' => cur.push('\n'),
                    't' => cur.push('\t'),
                    'r' => cur.push('\r'),
                    'b' => cur.push('\u{8}'),
                    'f' => cur.push('\u{c}'),
                    'u' => {
                        let hex: String = (0..4).map(|_| chars.next().unwrap()).collect();
                        let mut cp = u32::from_str_radix(&hex, 16).unwrap();
                        if (0xD800..0xDC00).contains(&cp) {
                            chars.next();
                            chars.next();
                            let lo: String = (0..4).map(|_| chars.next().unwrap()).collect();
                            let lo = u32::from_str_radix(&lo, 16).unwrap();
                            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        }
                        cur.push(char::from_u32(cp).unwrap());
                    }
                    o => cur.push(o),
                },
                c => cur.push(c),
            }
        }
        out.push(cur);
    }
    out
}
