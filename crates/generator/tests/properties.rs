//! Properties of `anklume sync` over generated, valid infrastructures.

mod common;

use std::collections::HashSet;

use anklume_generator::Outcome;
use anklume_yaml::emit::to_yaml;
use anklume_yaml::{Mapping, Node, Value};
use common::{run_sync, tree};
use proptest::prelude::*;

const TRUST: [&str; 5] = [
    "admin",
    "trusted",
    "semi-trusted",
    "untrusted",
    "disposable",
];

fn tricky_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("yes".to_string()),
        Just("012".to_string()),
        Just("key: value".to_string()),
        Just("#hash".to_string()),
        Just("back\\slash \\t \\\\ \\d".to_string()),
        Just("Domaine l'été — «ok»".to_string()),
        Just("null".to_string()),
        Just("- dash".to_string()),
        "[a-zA-Z0-9 ,.:'\"#\\\\-]{0,120}",
    ]
}

fn s(v: &str) -> Value {
    Value::Str(v.to_string())
}

fn node(v: Value) -> Node {
    Node::synthetic(v)
}

fn mapping(pairs: Vec<(String, Value)>) -> Value {
    let mut m = Mapping::new();
    for (k, v) in pairs {
        m.insert(node(Value::Str(k)), node(v));
    }
    Value::Map(m)
}

#[derive(Debug, Clone)]
struct Dom {
    trust: usize,
    desc: String,
    machines: Vec<(bool, String, Option<u8>)>, // (vm, description, explicit host number)
}

fn dom() -> impl Strategy<Value = Dom> {
    (
        0..5usize,
        tricky_text(),
        prop::collection::vec(
            (any::<bool>(), tricky_text(), prop::option::of(1u8..99)),
            0..6,
        ),
    )
        .prop_map(|(trust, desc, machines)| Dom {
            trust,
            desc,
            machines,
        })
}

/// Build a valid infra document: explicit IPs are placed in each domain's
/// zone subnet and made unique.
fn infra(doms: &[Dom]) -> (Value, Vec<(String, Value)>) {
    // Compute each domain's subnet the way the generator will (alphabetical
    // within a zone, no explicit subnet_id).
    let mut per_zone: Vec<Vec<usize>> = vec![Vec::new(); 5];
    for (i, d) in doms.iter().enumerate() {
        per_zone[d.trust].push(i);
    }
    let offsets = [0, 10, 20, 40, 50];
    let mut prefix = vec![String::new(); doms.len()];
    for (z, idxs) in per_zone.iter().enumerate() {
        let mut names: Vec<(String, usize)> = idxs.iter().map(|&i| (format!("d{i}"), i)).collect();
        names.sort();
        for (seq, (_, i)) in names.iter().enumerate() {
            prefix[*i] = format!("10.{}.{seq}", 100 + offsets[z]);
        }
    }
    let mut domains = Vec::new();
    for (i, d) in doms.iter().enumerate() {
        let mut used = HashSet::new();
        let mut ms = Vec::new();
        for (j, (vm, desc, host)) in d.machines.iter().enumerate() {
            let mut pairs = vec![("description".to_string(), s(desc))];
            if *vm {
                pairs.push(("type".into(), s("vm")));
            }
            if let Some(h) = host {
                if used.insert(*h) {
                    pairs.push(("ip".into(), s(&format!("{}.{h}", prefix[i]))));
                }
            }
            pairs.push((
                "config".into(),
                mapping(vec![
                    ("user.note".into(), s(desc)),
                    ("limits.cpu".into(), s("2")),
                ]),
            ));
            ms.push((format!("d{i}m{j}"), mapping(pairs)));
        }
        let dv = mapping(vec![
            ("trust_level".into(), s(TRUST[d.trust])),
            ("description".into(), s(&d.desc)),
            ("machines".into(), mapping(ms)),
        ]);
        domains.push((format!("d{i}"), dv));
    }
    let global = mapping(vec![
        (
            "addressing".into(),
            mapping(vec![
                ("base_octet".into(), Value::Int(10)),
                ("zone_base".into(), Value::Int(100)),
            ]),
        ),
        ("default_os_image".into(), s("images:debian/13")),
    ]);
    let doc = mapping(vec![
        ("project_name".into(), s("prop")),
        ("global".into(), global.clone()),
        ("domains".into(), mapping(domains.clone())),
    ]);
    (doc, domains)
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn generated_trees_are_stable_unique_and_well_formed(doms in prop::collection::vec(dom(), 1..7)) {
        let (doc, domains) = infra(&doms);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("infra.yml");
        std::fs::write(&file, to_yaml(&doc)).unwrap();
        let out = dir.path().join("out");

        let (o1, _, err1) = run_sync(&file, &out);
        prop_assert!(matches!(o1, Outcome::Done(_)), "first run failed: {err1}");
        let first = tree(&out);

        // A second run is byte-identical and writes nothing.
        let (o2, _, _) = run_sync(&file, &out);
        match o2 {
            Outcome::Done(s) => prop_assert_eq!(s.written, 0),
            Outcome::Invalid => prop_assert!(false, "second run failed"),
        }
        prop_assert_eq!(&tree(&out), &first);

        // Exactly one managed section per file; no two machines share an IP.
        let mut ips = HashSet::new();
        for (path, bytes) in &first {
            let text = String::from_utf8(bytes.clone()).unwrap();
            prop_assert_eq!(count(&text, "# === MANAGED BY infra.yml ==="), 1, "{}", path);
            prop_assert_eq!(count(&text, "# === END MANAGED ==="), 1, "{}", path);
            prop_assert!(!text.contains("&id0"), "anchor in {}", path);
            if path.starts_with("host_vars/") {
                let ip = text.lines().find_map(|l| l.strip_prefix("instance_ip: ")).unwrap().to_string();
                prop_assert!(ips.insert(ip.clone()), "duplicate IP {}", ip);
            }
        }

        // The same content as an infra/ directory gives the same tree.
        let idir = dir.path().join("infra");
        std::fs::create_dir_all(idir.join("domains")).unwrap();
        let (first_dom, rest) = domains.split_first().unwrap();
        let Value::Map(m) = &doc else { unreachable!() };
        let base = mapping(vec![
            ("project_name".into(), m.get("project_name").unwrap().value.clone()),
            ("global".into(), m.get("global").unwrap().value.clone()),
            ("domains".into(), mapping(vec![first_dom.clone()])),
        ]);
        std::fs::write(idir.join("base.yml"), to_yaml(&base)).unwrap();
        for (i, d) in rest.iter().enumerate() {
            std::fs::write(idir.join(format!("domains/{i:02}.yml")), to_yaml(&mapping(vec![d.clone()]))).unwrap();
        }
        let out2 = dir.path().join("out2");
        let (o3, _, err3) = run_sync(&idir, &out2);
        prop_assert!(matches!(o3, Outcome::Done(_)), "directory mode failed: {err3}");
        prop_assert_eq!(tree(&out2), first);
    }
}
