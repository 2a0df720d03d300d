//! YAML as the reference generator (PyYAML `safe_load` / `dump`) sees it.
//!
//! Users' `infra.yml` files were written for anklume v1, whose generator
//! reads YAML 1.1 through PyYAML and writes it with PyYAML's emitter. To accept
//! the same files and write the same bytes we keep a small document model of
//! our own:
//!
//! - [`load`]: a YAML 1.1 loader on top of `yaml-rust2`'s event parser, with
//!   PyYAML's implicit typing (`yes` is a boolean, `012` an octal integer,
//!   `1:30` a sexagesimal integer), merge keys, anchors resolved to copies,
//!   and a source position on every node so errors can name file and line;
//! - [`emit`]: PyYAML's block emitter (2-space indent, indented sequences,
//!   its quoting rules, folding at 80 columns, `{}`/`[]`, empty null).
//!
//! `serde_yaml` is not used: it implements YAML 1.2 typing, gives no
//! positions, and is no longer maintained.

pub mod emit;
pub mod load;
pub mod pyfmt;
pub mod resolve;

use std::hash::{Hash, Hasher};

use indexmap::IndexMap;

/// Where a node starts in its source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    /// Index into the list of loaded source files ([`load::Sources`]).
    pub file: u32,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
}

/// A YAML node: a value and where it came from.
#[derive(Debug, Clone)]
pub struct Node {
    pub value: Value,
    pub mark: Mark,
}

/// A YAML value, typed as PyYAML's SafeLoader types it.
#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    /// A YAML 1.1 timestamp, kept as written.
    Timestamp(String),
    Seq(Vec<Node>),
    Map(Mapping),
}

/// Hashable identity of a mapping key (scalars only).
///
/// Python dictionaries treat `1`, `1.0` and `True` as the same key; we do
/// too, so that a duplicate is detected the way the reference sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Null,
    Num(i128),
    Float(u64),
    Str(String),
    Timestamp(String),
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            // Hash exactly like `str` so that `&str` lookups work (see Equivalent).
            Key::Str(s) => s.as_str().hash(state),
            Key::Null => 0u8.hash(state),
            Key::Num(n) => n.hash(state),
            Key::Float(f) => f.hash(state),
            Key::Timestamp(t) => (1u8, t).hash(state),
        }
    }
}

impl indexmap::Equivalent<Key> for str {
    fn equivalent(&self, key: &Key) -> bool {
        matches!(key, Key::Str(s) if s == self)
    }
}

impl Key {
    /// The key of a scalar value; `None` for sequences and mappings.
    pub fn of(v: &Value) -> Option<Key> {
        Some(match v {
            Value::Null => Key::Null,
            Value::Bool(b) => Key::Num(i128::from(*b)),
            Value::Int(i) => Key::Num(*i),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e30 => Key::Num(*f as i128),
            Value::Float(f) => Key::Float(f.to_bits()),
            Value::Str(s) => Key::Str(s.clone()),
            Value::Timestamp(t) => Key::Timestamp(t.clone()),
            Value::Seq(_) | Value::Map(_) => return None,
        })
    }
}

/// An insertion-ordered mapping. Re-inserting a key keeps its first position
/// and takes the new value, as a Python `dict` does.
///
/// The map is boxed: a [`Value`] holding it is then as small as one holding
/// a string (32 bytes instead of 64), and so is every node, list item and
/// mapping entry of a document (an entry: 136 bytes instead of 208). A
/// `sync` of 2,000 machines touches ~40 % less memory, and fresh pages
/// are a visible cost (the kernel zeroes them).
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    entries: Box<IndexMap<Key, (Node, Node), foldhash::fast::RandomState>>,
}

impl Mapping {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty mapping with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Mapping {
            entries: Box::new(IndexMap::with_capacity_and_hasher(
                n,
                foldhash::fast::RandomState::default(),
            )),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Insert; returns true when the key was already present.
    pub fn insert(&mut self, key: Node, value: Node) -> bool {
        self.insert_first(key, value).is_some()
    }

    /// Insert; when the key was already present, where its first
    /// occurrence is and the key node given, which is not kept (the first
    /// key node stays; the value is replaced).
    pub fn insert_first(&mut self, key: Node, value: Node) -> Option<(Mark, Node)> {
        let k = Key::of(&key.value).expect("mapping keys are scalars");
        match self.entries.entry(k) {
            indexmap::map::Entry::Occupied(mut slot) => {
                let slot = slot.get_mut();
                slot.1 = value;
                Some((slot.0.mark, key))
            }
            indexmap::map::Entry::Vacant(slot) => {
                slot.insert((key, value));
                None
            }
        }
    }

    /// Insert with a string key (enrichment adds keys this way).
    pub fn insert_str(&mut self, key: &str, value: Value) {
        let mark = self
            .entries
            .get(key)
            .map(|(_, v)| v.mark)
            .unwrap_or_default();
        self.insert(
            Node::new(Value::Str(key.to_string()), mark),
            Node::new(value, mark),
        );
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries.get(key).map(|(_, v)| v)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        self.entries.get_mut(key).map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Remove a key, keeping the order of the others.
    pub fn shift_remove(&mut self, key: &str) -> Option<Node> {
        self.entries.shift_remove(key).map(|(_, v)| v)
    }

    /// The `i`-th entry (key, value), in insertion order.
    pub fn get_index(&self, i: usize) -> Option<(&Node, &Node)> {
        self.entries.get_index(i).map(|(_, (k, v))| (k, v))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Node, &Node)> {
        self.entries.values().map(|(k, v)| (k, v))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Node, &mut Node)> {
        self.entries.values_mut().map(|(k, v)| (&*k, v))
    }

    pub fn values(&self) -> impl Iterator<Item = &Node> {
        self.entries.values().map(|(_, v)| v)
    }

    pub fn keys(&self) -> impl Iterator<Item = &Node> {
        self.entries.values().map(|(k, _)| k)
    }
}

impl Node {
    pub fn new(value: Value, mark: Mark) -> Self {
        Node { value, mark }
    }

    /// A node made by the program (no source position).
    pub fn synthetic(value: Value) -> Self {
        Node::new(value, Mark::default())
    }
}

impl Value {
    pub fn str(s: impl Into<String>) -> Value {
        Value::Str(s.into())
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&Mapping> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_map_mut(&mut self) -> Option<&mut Mapping> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_seq(&self) -> Option<&[Node]> {
        match self {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// An integer that is not a boolean.
    pub fn as_int(&self) -> Option<i128> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Python truthiness (`if value:`).
    pub fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) | Value::Timestamp(s) => !s.is_empty(),
            Value::Seq(s) => !s.is_empty(),
            Value::Map(m) => !m.is_empty(),
        }
    }

    /// Python's `type(value).__name__`, as the reference's messages print it.
    pub fn py_type(&self) -> &'static str {
        match self {
            Value::Null => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Timestamp(t) if t.len() <= 10 => "date",
            Value::Timestamp(_) => "datetime",
            Value::Seq(_) => "list",
            Value::Map(_) => "dict",
        }
    }

    /// A plain-words kind for our own messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Timestamp(_) => "a timestamp",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// Python equality between two values (`1 == 1.0 == True`).
    pub fn py_eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Seq(a), Value::Seq(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.value.py_eq(&y.value))
            }
            (Value::Map(a), Value::Map(b)) => {
                a.len() == b.len()
                    && a.iter().all(|(k, v)| {
                        let key = Key::of(&k.value);
                        b.entries
                            .get(key.as_ref().expect("scalar key"))
                            .is_some_and(|(_, w)| v.value.py_eq(&w.value))
                    })
            }
            (Value::Seq(_) | Value::Map(_), _) | (_, Value::Seq(_) | Value::Map(_)) => false,
            (a, b) => Key::of(a) == Key::of(b),
        }
    }

    /// Equality with a string constant.
    pub fn is_str(&self, s: &str) -> bool {
        self.as_str() == Some(s)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<Mapping> for Value {
    fn from(m: Mapping) -> Self {
        Value::Map(m)
    }
}
