//! Finding and loading `infra.yml` or an `infra/` directory.

use std::path::{Path, PathBuf};

use super::diag::Diag;
use anklume_yaml::load::{load_bytes, Sources};
use anklume_yaml::{Mapping, Node, Value};

/// A loaded infrastructure description.
#[derive(Debug)]
pub struct Input {
    /// The merged document (a mapping).
    pub root: Node,
    pub sources: Sources,
    /// Duplicate keys, overridden domains, ignored files.
    pub warnings: Vec<Diag>,
}

/// Loading failed; every problem found is listed.
#[derive(Debug)]
pub struct InputError {
    pub sources: Sources,
    pub errors: Vec<Diag>,
}

/// The default input: `infra/` when it holds `base.yml`, else `infra.yml`.
pub fn default_path(cwd: &Path) -> PathBuf {
    if cwd.join("infra").join("base.yml").is_file() {
        cwd.join("infra")
    } else {
        cwd.join("infra.yml")
    }
}

/// Load a file or a directory. A missing `X` is also tried as `X.yml`, and a
/// missing `X.yml` as the directory `X`, as the reference does.
pub fn load(path: &Path) -> Result<Input, InputError> {
    let mut ld = Loader {
        sources: Sources::default(),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let s = path.to_string_lossy();
    let resolved = if path.exists() {
        path.to_path_buf()
    } else if !s.ends_with(".yml")
        && PathBuf::from(format!("{}.yml", s.trim_end_matches('/'))).is_file()
    {
        PathBuf::from(format!("{}.yml", s.trim_end_matches('/')))
    } else if let Some(dir) = s.strip_suffix(".yml").filter(|d| Path::new(d).is_dir()) {
        PathBuf::from(dir)
    } else {
        ld.errors.push(Diag::new(format!(
            "{}: no such file or directory (expected infra.yml or an infra/ directory with base.yml)",
            path.display()
        )));
        return Err(ld.fail());
    };
    let root = if resolved.is_dir() {
        ld.directory(&resolved)
    } else {
        ld.file(&resolved)
            .and_then(|n| ld.top_mapping(n, &resolved))
    };
    match root {
        Some(root) if ld.errors.is_empty() => Ok(Input {
            root,
            sources: ld.sources,
            warnings: ld.warnings,
        }),
        _ => Err(ld.fail()),
    }
}

struct Loader {
    sources: Sources,
    errors: Vec<Diag>,
    warnings: Vec<Diag>,
}

impl Loader {
    fn fail(self) -> InputError {
        InputError {
            sources: self.sources,
            errors: self.errors,
        }
    }

    /// Read and parse one file; `None` (and an error recorded) on failure.
    fn file(&mut self, path: &Path) -> Option<Node> {
        let id = self.sources.add(path);
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                self.errors
                    .push(Diag::new(format!("{}: cannot read: {e}", path.display())));
                return None;
            }
        };
        match load_bytes(&bytes, id) {
            Ok(l) => {
                for w in l.warnings {
                    self.warnings.push(Diag {
                        message: w.message,
                        path: None,
                        mark: Some(w.mark),
                    });
                }
                Some(l.root)
            }
            Err(e) => {
                self.errors.push(Diag {
                    message: e.message,
                    path: None,
                    mark: Some(e.mark),
                });
                None
            }
        }
    }

    /// The top level of a document must be a mapping.
    fn top_mapping(&mut self, node: Node, path: &Path) -> Option<Node> {
        match node.value {
            Value::Map(_) => Some(node),
            Value::Null => {
                self.errors.push(Diag::new(format!(
                    "{}: the file is empty (expected project_name, global and domains)",
                    path.display()
                )));
                None
            }
            ref other => {
                self.errors.push(Diag {
                    message: format!(
                        "{}: the top level must be a mapping, got {}",
                        path.display(),
                        other.kind()
                    ),
                    path: None,
                    mark: Some(node.mark),
                });
                None
            }
        }
    }

    /// A file of a directory that may be empty (null reads as `{}`).
    fn optional_mapping(&mut self, path: &Path) -> Option<Node> {
        let node = self.file(path)?;
        if node.value.is_null() {
            return Some(Node::new(Value::Map(Mapping::new()), node.mark));
        }
        self.top_mapping(node, path)
    }

    fn directory(&mut self, dir: &Path) -> Option<Node> {
        let base_path = dir.join("base.yml");
        if !base_path.is_file() {
            self.errors.push(Diag::new(format!(
                "{} not found in infra directory.",
                base_path.display()
            )));
            return None;
        }
        let mut root = self.optional_mapping(&base_path)?;
        let map = root.value.as_map_mut().expect("checked mapping");

        let domains_dir = dir.join("domains");
        if domains_dir.is_dir() {
            let mut domains = match map.shift_remove_keep("domains") {
                Some(Node {
                    value: Value::Map(m),
                    mark,
                }) => (m, mark),
                Some(Node {
                    value: Value::Null,
                    mark,
                }) => (Mapping::new(), mark),
                Some(other) => {
                    self.errors.push(
                        Diag::new(format!(
                            "domains must be a mapping, got {}",
                            other.value.kind()
                        ))
                        .at("domains", Some(&other)),
                    );
                    return None;
                }
                None => (Mapping::new(), root.mark),
            };
            let mut files = Vec::new();
            match std::fs::read_dir(&domains_dir) {
                Ok(rd) => {
                    for entry in rd.flatten() {
                        let p = entry.path();
                        match p.extension().and_then(|e| e.to_str()) {
                            Some("yml") => files.push(p),
                            Some("yaml") => self.warnings.push(Diag::new(format!(
                                "{} ignored: only *.yml files are read",
                                p.display()
                            ))),
                            _ => {}
                        }
                    }
                }
                Err(e) => {
                    self.errors.push(Diag::new(format!(
                        "{}: cannot list: {e}",
                        domains_dir.display()
                    )));
                    return None;
                }
            }
            files.sort();
            for f in files {
                let Some(node) = self.optional_mapping(&f) else {
                    continue;
                };
                let fname = f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let Value::Map(m) = node.value else { continue };
                for (k, v) in m.iter() {
                    if let Some(name) = k.value.as_str() {
                        if domains.0.contains_key(name) {
                            self.warnings.push(
                                Diag::new(format!(
                                    "Domain '{name}' in {fname} overrides existing definition."
                                ))
                                .at(format!("domains.{name}"), Some(k)),
                            );
                        }
                    }
                    domains.0.insert(k.clone(), v.clone());
                }
            }
            map.insert_str("domains", Value::Map(domains.0));
            if let Some(n) = map.get_mut("domains") {
                n.mark = domains.1;
            }
        }

        let pol_path = dir.join("policies.yml");
        if pol_path.is_file() {
            if let Some(node) = self.optional_mapping(&pol_path) {
                let pm = node.value.as_map().expect("checked mapping");
                for (k, _) in pm.iter() {
                    if !k.value.is_str("network_policies") {
                        self.warnings.push(
                            Diag::new(format!(
                                "{}: key {} ignored (only network_policies is read)",
                                pol_path.display(),
                                anklume_yaml::pyfmt::py_repr(&k.value)
                            ))
                            .at(anklume_yaml::pyfmt::py_str(&k.value), Some(k)),
                        );
                    }
                }
                if let Some(np) = pm.get("network_policies") {
                    map.insert_str("network_policies", np.value.clone());
                    if let Some(n) = map.get_mut("network_policies") {
                        n.mark = np.mark;
                    }
                }
            }
        }
        if self.errors.is_empty() {
            Some(root)
        } else {
            None
        }
    }
}

trait KeepOrder {
    /// Take a key's value out while keeping the key's position, so that it
    /// can be put back in the same place.
    fn shift_remove_keep(&mut self, key: &str) -> Option<Node>;
}

impl KeepOrder for Mapping {
    fn shift_remove_keep(&mut self, key: &str) -> Option<Node> {
        self.get_mut(key)
            .map(|n| std::mem::replace(n, Node::synthetic(Value::Null)))
    }
}
