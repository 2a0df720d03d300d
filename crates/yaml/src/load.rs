//! Loading YAML 1.1 the way PyYAML's `safe_load` does, with positions.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use super::resolve::{construct_float, construct_int, resolve_plain, Implicit};
use super::{Key, Mapping, Mark, Node, Value};

/// Most nodes one document may expand to (aliases are copied, so a small
/// file with nested aliases could otherwise ask for unbounded memory).
pub const MAX_NODES: usize = 2_000_000;

/// The files nodes came from; a [`Mark`] indexes into this list.
#[derive(Debug, Default, Clone)]
pub struct Sources {
    files: Vec<PathBuf>,
}

impl Sources {
    pub fn add(&mut self, path: &Path) -> u32 {
        self.files.push(path.to_path_buf());
        (self.files.len() - 1) as u32
    }

    pub fn path(&self, mark: Mark) -> Option<&Path> {
        self.files.get(mark.file as usize).map(PathBuf::as_path)
    }

    /// `file:line:col`, or just the file when the node is synthetic.
    pub fn locate(&self, mark: Mark) -> String {
        let file = self
            .path(mark)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<generated>".into());
        if mark.line == 0 {
            file
        } else {
            format!("{file}:{}:{}", mark.line, mark.col)
        }
    }
}

/// A YAML file that could not be loaded.
#[derive(Debug, Clone)]
pub struct LoadError {
    pub mark: Mark,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A non-fatal finding while loading (duplicate keys).
#[derive(Debug, Clone)]
pub struct LoadWarning {
    pub mark: Mark,
    pub message: String,
}

/// Result of loading one file.
#[derive(Debug)]
pub struct Loaded {
    /// `Value::Null` for an empty document, as `safe_load` returns `None`.
    pub root: Node,
    pub warnings: Vec<LoadWarning>,
}

/// Load a YAML document from raw bytes (file `file` in [`Sources`]).
pub fn load_bytes(bytes: &[u8], file: u32) -> Result<Loaded, LoadError> {
    let at = |line: u32, col: u32| Mark { file, line, col };
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(LoadError {
            mark: at(1, 1),
            message: "file is UTF-16; save it as UTF-8".into(),
        });
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let (line, col) = line_col(&bytes[..e.valid_up_to()]);
        LoadError {
            mark: at(line, col),
            message: format!(
                "file is not valid UTF-8 (invalid byte 0x{:02X} at offset {})",
                bytes[e.valid_up_to()],
                e.valid_up_to()
            ),
        }
    })?;
    check_printable(text, file)?;
    // About one event per 8 bytes of YAML: reserved (not touched) up
    // front, instead of growing by copies.
    let mut recv = Collector {
        events: Vec::with_capacity(text.len() / 8 + 16),
    };
    let mut parser = Parser::new_from_str(text);
    parser.load(&mut recv, true).map_err(|e| {
        let m = e.marker();
        LoadError {
            mark: at(m.line() as u32, m.col() as u32 + 1),
            message: format!("YAML syntax error: {}", e.info()),
        }
    })?;
    let mut builder = Builder {
        events: recv.events,
        pos: 0,
        file,
        anchors: HashMap::new(),
        nodes: 0,
        warnings: Vec::new(),
    };
    let root = builder.stream()?;
    Ok(Loaded {
        root,
        warnings: builder.warnings,
    })
}

fn line_col(prefix: &[u8]) -> (u32, u32) {
    let line = prefix.iter().filter(|&&b| b == b'\n').count() as u32 + 1;
    let col = prefix.iter().rev().take_while(|&&b| b != b'\n').count() as u32 + 1;
    (line, col)
}

/// PyYAML's reader refuses characters outside the YAML printable set.
fn check_printable(text: &str, file: u32) -> Result<(), LoadError> {
    let printable = |c: char| matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{7E}' | '\u{85}' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}');
    if let Some((off, c)) = text.char_indices().find(|&(_, c)| !printable(c)) {
        let (line, col) = line_col(&text.as_bytes()[..off]);
        return Err(LoadError {
            mark: Mark { file, line, col },
            message: format!(
                "unacceptable character #x{:04x}: special characters are not allowed",
                c as u32
            ),
        });
    }
    Ok(())
}

#[derive(Default)]
struct Collector {
    events: Vec<(Event, Marker)>,
}

impl MarkedEventReceiver for Collector {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        self.events.push((ev, mark));
    }
}

struct Builder {
    events: Vec<(Event, Marker)>,
    pos: usize,
    file: u32,
    /// Anchor id → (node, number of nodes in it).
    anchors: HashMap<usize, (Node, usize)>,
    nodes: usize,
    warnings: Vec<LoadWarning>,
}

/// A built node, and whether it is a plain `<<` merge key.
struct Built {
    node: Node,
    merge_key: bool,
}

fn full_tag(tag: &Tag) -> String {
    if tag.handle == "!!" {
        format!("tag:yaml.org,2002:{}", tag.suffix)
    } else {
        format!("{}{}", tag.handle, tag.suffix)
    }
}

impl Builder {
    fn mark(&self, m: &Marker) -> Mark {
        Mark {
            file: self.file,
            line: m.line() as u32,
            col: m.col() as u32 + 1,
        }
    }

    fn err(&self, mark: Mark, message: impl Into<String>) -> LoadError {
        LoadError {
            mark,
            message: message.into(),
        }
    }

    fn next(&mut self) -> (Event, Mark) {
        // Taken, not cloned (its strings): no event is read twice.
        let (ev, mark) = match self.events.get_mut(self.pos) {
            Some((ev, m)) => {
                let m = *m;
                (std::mem::replace(ev, Event::Nothing), self.mark(&m))
            }
            None => (
                Event::StreamEnd,
                self.events
                    .last()
                    .map(|e| self.mark(&e.1))
                    .unwrap_or_default(),
            ),
        };
        self.pos += 1;
        (ev, mark)
    }

    fn stream(&mut self) -> Result<Node, LoadError> {
        let mut docs: Vec<Node> = Vec::new();
        loop {
            let (ev, mark) = self.next();
            match ev {
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                Event::DocumentStart => {
                    if !docs.is_empty() {
                        return Err(self.err(
                            mark,
                            "expected a single document in the stream, but found another document",
                        ));
                    }
                    let built = self.node()?;
                    docs.push(built.node);
                }
                Event::StreamEnd => break,
                _ => return Err(self.err(mark, "unexpected YAML event outside a document")),
            }
        }
        Ok(docs.pop().unwrap_or_else(|| {
            Node::new(
                Value::Null,
                Mark {
                    file: self.file,
                    line: 1,
                    col: 1,
                },
            )
        }))
    }

    fn count(&mut self, n: usize, mark: Mark) -> Result<(), LoadError> {
        self.nodes += n;
        if self.nodes > MAX_NODES {
            return Err(self.err(
                mark,
                format!(
                    "document expands to more than {MAX_NODES} nodes (aliases nested too deep?)"
                ),
            ));
        }
        Ok(())
    }

    fn node(&mut self) -> Result<Built, LoadError> {
        let start_nodes = self.nodes;
        let (ev, mark) = self.next();
        let (built, anchor) = match ev {
            Event::Alias(id) => {
                let (node, n) = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| self.err(mark, "found undefined alias"))?;
                self.count(n, mark)?;
                return Ok(Built {
                    node: Node::new(node.value, mark),
                    merge_key: false,
                });
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1, mark)?;
                (self.scalar(text, style, tag.as_ref(), mark)?, anchor)
            }
            Event::SequenceStart(anchor, tag) => {
                self.count(1, mark)?;
                self.check_collection_tag(tag.as_ref(), "seq", mark)?;
                let mut items = Vec::new();
                loop {
                    if matches!(self.events.get(self.pos), Some((Event::SequenceEnd, _))) {
                        self.pos += 1;
                        break;
                    }
                    if self.pos >= self.events.len() {
                        return Err(self.err(mark, "unterminated sequence"));
                    }
                    items.push(self.node()?.node);
                }
                (
                    Built {
                        node: Node::new(Value::Seq(items), mark),
                        merge_key: false,
                    },
                    anchor,
                )
            }
            Event::MappingStart(anchor, tag) => {
                self.count(1, mark)?;
                self.check_collection_tag(tag.as_ref(), "map", mark)?;
                let (map, first_key) = self.mapping(mark)?;
                // yaml-rust2 marks a block mapping one column past its first
                // key; the first key is where a reader looks.
                let mark = first_key.unwrap_or(mark);
                (
                    Built {
                        node: Node::new(Value::Map(map), mark),
                        merge_key: false,
                    },
                    anchor,
                )
            }
            _ => return Err(self.err(mark, "unexpected YAML event where a value was expected")),
        };
        if anchor > 0 {
            let n = self.nodes - start_nodes;
            self.anchors.insert(anchor, (built.node.clone(), n));
        }
        Ok(built)
    }

    fn check_collection_tag(
        &self,
        tag: Option<&Tag>,
        kind: &str,
        mark: Mark,
    ) -> Result<(), LoadError> {
        match tag.map(full_tag) {
            None => Ok(()),
            Some(t) if t == "!" || t == format!("tag:yaml.org,2002:{kind}") => Ok(()),
            Some(t) => Err(self.err(
                mark,
                format!("could not determine a constructor for the tag '{t}'"),
            )),
        }
    }

    fn mapping(&mut self, mark: Mark) -> Result<(Mapping, Option<Mark>), LoadError> {
        let mut first_key = None;
        let mut own: Vec<(Node, Node)> = Vec::new();
        let mut merged: Vec<(Node, Node)> = Vec::new();
        loop {
            if matches!(self.events.get(self.pos), Some((Event::MappingEnd, _))) {
                self.pos += 1;
                break;
            }
            if self.pos >= self.events.len() {
                return Err(self.err(mark, "unterminated mapping"));
            }
            let key = self.node()?;
            let mut value = self.node()?.node;
            first_key.get_or_insert(key.node.mark);
            if value.value.is_null() {
                // An empty value is marked at the next token; point at its key.
                value.mark = key.node.mark;
            }
            if key.merge_key {
                self.merge_into(&mut merged, value)?;
                continue;
            }
            if Key::of(&key.node.value).is_none() {
                return Err(self.err(
                    key.node.mark,
                    "found unhashable key (a list or mapping used as a key)",
                ));
            }
            own.push((key.node, value));
        }
        let mut map = Mapping::with_capacity(merged.len() + own.len());
        let merges = !merged.is_empty();
        for (k, v) in merged {
            map.insert(k, v);
        }
        // Duplicates among this mapping's own keys (overriding a merged key
        // is not one): the map itself finds them, unless merged keys are in
        // it too.
        let mut seen: HashMap<Key, Mark> = HashMap::new();
        for (k, v) in own {
            let dup = if merges {
                let key = Key::of(&k.value).expect("checked above");
                let dup = seen.insert(key, k.mark).map(|first| (first, k.clone()));
                map.insert(k, v);
                dup
            } else {
                map.insert_first(k, v)
            };
            if let Some((first, k)) = dup {
                self.warnings.push(LoadWarning {
                    mark: k.mark,
                    message: format!(
                        "duplicate key {} (first at line {}); the last value wins",
                        super::pyfmt::py_repr(&k.value),
                        first.line
                    ),
                });
            }
        }
        Ok((map, first_key))
    }

    /// PyYAML's `flatten_mapping`: `<<: *a` or `<<: [*a, *b]` (earlier wins).
    fn merge_into(&self, merged: &mut Vec<(Node, Node)>, value: Node) -> Result<(), LoadError> {
        match value.value {
            Value::Map(m) => {
                merged.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
                Ok(())
            }
            Value::Seq(items) => {
                let mut subs = Vec::new();
                for item in items {
                    match item.value {
                        Value::Map(m) => subs.push(m),
                        _ => {
                            return Err(self.err(
                                item.mark,
                                "expected a mapping for merging (<<), but found another value",
                            ))
                        }
                    }
                }
                for m in subs.into_iter().rev() {
                    merged.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                Ok(())
            }
            _ => Err(self.err(
                value.mark,
                "expected a mapping or list of mappings for merging (<<)",
            )),
        }
    }

    fn scalar(
        &self,
        text: String,
        style: TScalarStyle,
        tag: Option<&Tag>,
        mark: Mark,
    ) -> Result<Built, LoadError> {
        let plain = matches!(style, TScalarStyle::Plain);
        let tag = tag.map(full_tag);
        let value = match tag.as_deref() {
            None if plain => match resolve_plain(&text) {
                Implicit::Merge => {
                    return Ok(Built {
                        node: Node::new(Value::Str(text), mark),
                        merge_key: true,
                    })
                }
                implicit => self.construct(implicit, text, mark)?,
            },
            None | Some("!") | Some("tag:yaml.org,2002:str") => Value::Str(text),
            Some("tag:yaml.org,2002:null") => Value::Null,
            Some("tag:yaml.org,2002:bool") => self.construct(Implicit::Bool, text, mark)?,
            Some("tag:yaml.org,2002:int") => self.construct(Implicit::Int, text, mark)?,
            Some("tag:yaml.org,2002:float") => self.construct(Implicit::Float, text, mark)?,
            Some("tag:yaml.org,2002:timestamp") => {
                self.construct(Implicit::Timestamp, text, mark)?
            }
            Some(t) => {
                return Err(self.err(
                    mark,
                    format!("could not determine a constructor for the tag '{t}'"),
                ))
            }
        };
        Ok(Built {
            node: Node::new(value, mark),
            merge_key: false,
        })
    }

    fn construct(&self, kind: Implicit, text: String, mark: Mark) -> Result<Value, LoadError> {
        let bad = |what: &str| self.err(mark, format!("{:?} is not a valid {what}", text));
        Ok(match kind {
            Implicit::Null => Value::Null,
            Implicit::Str => Value::Str(text),
            Implicit::Bool => match text.to_lowercase().as_str() {
                "yes" | "true" | "on" => Value::Bool(true),
                "no" | "false" | "off" => Value::Bool(false),
                _ => return Err(bad("boolean")),
            },
            Implicit::Int => {
                if resolve_plain(&text) != Implicit::Int {
                    return Err(bad("integer"));
                }
                Value::Int(construct_int(&text).ok_or_else(|| {
                    self.err(mark, format!("integer {text} is out of range"))
                })?)
            }
            Implicit::Float => {
                if !matches!(resolve_plain(&text), Implicit::Float | Implicit::Int) {
                    return Err(bad("float"));
                }
                Value::Float(construct_float(&text).ok_or_else(|| bad("float"))?)
            }
            Implicit::Timestamp => {
                if resolve_plain(&text) != Implicit::Timestamp {
                    return Err(bad("timestamp"));
                }
                Value::Timestamp(text)
            }
            Implicit::Merge | Implicit::ValueTag => {
                return Err(self.err(
                    mark,
                    "could not determine a constructor for the tag 'tag:yaml.org,2002:value' (a lone '=')",
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(s: &str) -> Node {
        load_bytes(s.as_bytes(), 0).unwrap().root
    }

    #[test]
    fn types_and_positions() {
        let n = load("a: yes\nb: '012'\nc: 012\nd:\n  - 1.5\n  - ~\n");
        let m = n.value.as_map().unwrap();
        assert!(matches!(m.get("a").unwrap().value, Value::Bool(true)));
        assert!(m.get("b").unwrap().value.is_str("012"));
        assert!(matches!(m.get("c").unwrap().value, Value::Int(10)));
        let d = m.get("d").unwrap();
        assert_eq!((d.mark.line, d.mark.col), (5, 3));
        let items = d.value.as_seq().unwrap();
        assert!(matches!(items[0].value, Value::Float(f) if f == 1.5));
        assert!(items[1].value.is_null());
    }

    #[test]
    fn merge_keys_and_aliases() {
        let n = load(
            "base: &b {x: 1, y: 2}\nother: &o {y: 9, z: 3}\nm:\n  <<: [*b, *o]\n  x: 5\nc: *b\n",
        );
        let m = n.value.as_map().unwrap();
        let merged = m.get("m").unwrap().value.as_map().unwrap();
        let keys: Vec<String> = merged
            .keys()
            .map(|k| k.value.as_str().unwrap().to_string())
            .collect();
        assert_eq!(keys, ["y", "z", "x"]);
        assert!(matches!(merged.get("x").unwrap().value, Value::Int(5)));
        assert!(matches!(merged.get("y").unwrap().value, Value::Int(2)));
        assert_eq!(m.get("c").unwrap().value.as_map().unwrap().len(), 2);
    }

    #[test]
    fn duplicate_keys_warn_and_last_wins_in_first_position() {
        let l = load_bytes(b"a: 1\nb: 2\na: 3\n", 0).unwrap();
        let m = l.root.value.as_map().unwrap();
        let keys: Vec<_> = m.keys().map(|k| k.value.as_str().unwrap()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert!(matches!(m.get("a").unwrap().value, Value::Int(3)));
        assert_eq!(l.warnings.len(), 1);
        assert_eq!(l.warnings[0].mark.line, 3);
        assert_eq!(
            l.warnings[0].message,
            "duplicate key 'a' (first at line 1); the last value wins"
        );

        // Keys equal as Python keys: the duplicate is named as written.
        let l = load_bytes(b"1: a\nx: 0\ntrue: b\n", 0).unwrap();
        assert_eq!(l.root.value.as_map().unwrap().len(), 2);
        assert_eq!(
            said(&l),
            [(
                3,
                "duplicate key True (first at line 1); the last value wins"
            )]
        );

        // Beside a merge: overriding a merged key is not a duplicate, a key
        // given twice still is.
        let l = load_bytes(
            b"b: &b {x: 1, y: 2}\nm:\n  <<: *b\n  x: 5\n  z: 1\n  x: 6\n",
            0,
        )
        .unwrap();
        let m = l.root.value.as_map().unwrap().get("m").unwrap();
        let m = m.value.as_map().unwrap();
        assert!(matches!(m.get("x").unwrap().value, Value::Int(6)));
        assert_eq!(
            said(&l),
            [(
                6,
                "duplicate key 'x' (first at line 4); the last value wins"
            )]
        );
    }

    /// A load's warnings: (line, message).
    fn said(l: &Loaded) -> Vec<(u32, &str)> {
        l.warnings
            .iter()
            .map(|w| (w.mark.line, w.message.as_str()))
            .collect()
    }

    #[test]
    fn errors_are_clear() {
        let e = load_bytes(b"a: \xff\n", 0).unwrap_err();
        assert!(e.message.contains("not valid UTF-8"), "{}", e.message);
        assert_eq!(e.mark.line, 1);
        let e = load_bytes(b"a: [1\n", 0).unwrap_err();
        assert!(e.message.contains("syntax"), "{}", e.message);
        let e = load_bytes(b"a: 1\n---\nb: 2\n", 0).unwrap_err();
        assert!(e.message.contains("single document"), "{}", e.message);
        let e = load_bytes(b"? [a]\n: 1\n", 0).unwrap_err();
        assert!(e.message.contains("unhashable"), "{}", e.message);
        let e = load_bytes(b"a: !foo x\n", 0).unwrap_err();
        assert!(e.message.contains("constructor"), "{}", e.message);
        let e = load_bytes(b"a: \x01\n", 0).unwrap_err();
        assert!(
            e.message.contains("unacceptable character"),
            "{}",
            e.message
        );
    }

    #[test]
    fn billion_laughs_is_refused() {
        let mut doc = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let mut prev = 'a';
        for c in 'b'..='k' {
            doc.push_str(&format!(
                "{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
            prev = c;
        }
        let e = load_bytes(doc.as_bytes(), 0).unwrap_err();
        assert!(e.message.contains("more than"), "{}", e.message);
    }

    #[test]
    fn empty_document_is_null() {
        assert!(load("").value.is_null());
        assert!(load("# just a comment\n").value.is_null());
    }
}
