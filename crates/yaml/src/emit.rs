//! PyYAML's emitter, as the reference generator configures it:
//! `yaml.dump(data, default_flow_style=False, sort_keys=False,
//! allow_unicode=True)` with a dumper that indents sequences inside
//! mappings and writes `None` as an empty scalar.
//!
//! The state (column, whitespace, indention, indent stack) and every
//! decision (scalar style, folding at 80 columns, simple keys) follow
//! PyYAML's `emitter.py`, so that the bytes match.

use std::borrow::Cow;

use super::pyfmt::yaml_float;
use super::resolve::{resolve_plain, Implicit};
use super::Value;

const BEST_WIDTH: usize = 80;
const BEST_INDENT: usize = 2;

/// Serialize a value as a YAML document, byte-compatible with PyYAML.
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    to_yaml_into(v, &mut out);
    out
}

/// [`to_yaml`], appended to `out` (the generator writes each file into one
/// buffer: header, document, trailer). The emitter's state does not depend
/// on what `out` already holds.
pub fn to_yaml_into(v: &Value, out: &mut String) {
    let mut e = Emitter {
        out: std::mem::take(out),
        column: 0,
        whitespace: true,
        indention: true,
        indent: None,
        indents: Vec::new(),
        flow_level: 0,
    };
    e.node(v, false);
    e.write_indent();
    *out = e.out;
}

struct Emitter {
    out: String,
    column: usize,
    whitespace: bool,
    indention: bool,
    indent: Option<usize>,
    indents: Vec<Option<usize>>,
    flow_level: usize,
}

struct Analysis {
    empty: bool,
    multiline: bool,
    allow_flow_plain: bool,
    allow_block_plain: bool,
    allow_single_quoted: bool,
}

/// One character of a scalar's text: PyYAML works on code points. Nearly
/// every scalar is ASCII, whose bytes are its code points, so the emitter
/// runs on the bytes of the `str` then; other text is decoded to `char`s
/// first.
trait Ch: Copy {
    fn ch(self) -> char;
    /// Append these characters to `out`.
    fn put(out: &mut String, s: &[Self]);
}

impl Ch for u8 {
    fn ch(self) -> char {
        char::from(self)
    }
    fn put(out: &mut String, s: &[u8]) {
        // Only ever called with slices of ASCII text (see `Ch`).
        out.push_str(std::str::from_utf8(s).expect("ASCII text"));
    }
}

impl Ch for char {
    fn ch(self) -> char {
        self
    }
    fn put(out: &mut String, s: &[char]) {
        out.extend(s.iter());
    }
}

fn is_break(c: char) -> bool {
    matches!(c, '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

fn is_ws_or_break(c: char) -> bool {
    matches!(
        c,
        '\0' | ' ' | '\t' | '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

/// PyYAML's `analyze_scalar` (allow_unicode=True).
fn analyze<C: Ch>(s: &[C]) -> Analysis {
    if s.is_empty() {
        return Analysis {
            empty: true,
            multiline: false,
            allow_flow_plain: false,
            allow_block_plain: true,
            allow_single_quoted: true,
        };
    }
    let mut block_ind = false;
    let mut flow_ind = false;
    let mut line_breaks = false;
    let mut special = false;
    let (mut leading_space, mut leading_break) = (false, false);
    let (mut trailing_space, mut trailing_break) = (false, false);
    let (mut break_space, mut space_break) = (false, false);

    let starts = |p: &str| s.len() >= 3 && s[..3].iter().map(|c| c.ch()).eq(p.chars());
    if starts("---") || starts("...") {
        block_ind = true;
        flow_ind = true;
    }
    let mut preceded_by_ws = true;
    let mut followed_by_ws = s.len() == 1 || is_ws_or_break(s[1].ch());
    let (mut prev_space, mut prev_break) = (false, false);
    let n = s.len();
    for (i, ch) in s.iter().map(|c| c.ch()).enumerate() {
        if i == 0 {
            if matches!(
                ch,
                '#' | ','
                    | '['
                    | ']'
                    | '{'
                    | '}'
                    | '&'
                    | '*'
                    | '!'
                    | '|'
                    | '>'
                    | '\''
                    | '"'
                    | '%'
                    | '@'
                    | '`'
            ) {
                flow_ind = true;
                block_ind = true;
            }
            if ch == '?' || ch == ':' {
                flow_ind = true;
                if followed_by_ws {
                    block_ind = true;
                }
            }
            if ch == '-' && followed_by_ws {
                flow_ind = true;
                block_ind = true;
            }
        } else {
            if matches!(ch, ',' | '?' | '[' | ']' | '{' | '}') {
                flow_ind = true;
            }
            if ch == ':' {
                flow_ind = true;
                if followed_by_ws {
                    block_ind = true;
                }
            }
            if ch == '#' && preceded_by_ws {
                flow_ind = true;
                block_ind = true;
            }
        }
        if is_break(ch) {
            line_breaks = true;
        }
        if !(ch == '\n' || ('\u{20}'..='\u{7E}').contains(&ch)) {
            let unicode_ok = (ch == '\u{85}'
                || ('\u{A0}'..='\u{D7FF}').contains(&ch)
                || ('\u{E000}'..='\u{FFFD}').contains(&ch)
                || ('\u{10000}'..'\u{10FFFF}').contains(&ch))
                && ch != '\u{FEFF}';
            if !unicode_ok {
                special = true;
            }
        }
        if ch == ' ' {
            if i == 0 {
                leading_space = true;
            }
            if i == n - 1 {
                trailing_space = true;
            }
            if prev_break {
                break_space = true;
            }
            prev_space = true;
            prev_break = false;
        } else if is_break(ch) {
            if i == 0 {
                leading_break = true;
            }
            if i == n - 1 {
                trailing_break = true;
            }
            if prev_space {
                space_break = true;
            }
            prev_space = false;
            prev_break = true;
        } else {
            prev_space = false;
            prev_break = false;
        }
        preceded_by_ws = is_ws_or_break(ch);
        followed_by_ws = i + 2 >= n || is_ws_or_break(s[i + 2].ch());
    }
    let mut a = Analysis {
        empty: false,
        multiline: line_breaks,
        allow_flow_plain: true,
        allow_block_plain: true,
        allow_single_quoted: true,
    };
    if leading_space || leading_break || trailing_space || trailing_break {
        a.allow_flow_plain = false;
        a.allow_block_plain = false;
    }
    if break_space {
        a.allow_flow_plain = false;
        a.allow_block_plain = false;
        a.allow_single_quoted = false;
    }
    if space_break || special {
        a.allow_flow_plain = false;
        a.allow_block_plain = false;
        a.allow_single_quoted = false;
    }
    if line_breaks {
        a.allow_flow_plain = false;
        a.allow_block_plain = false;
    }
    if flow_ind {
        a.allow_flow_plain = false;
    }
    if block_ind {
        a.allow_block_plain = false;
    }
    a
}

/// Whether a plain scalar `s` resolves to a string: [`resolve_plain`],
/// answered without it when the first character selects no resolver
/// (`resolve_plain` tries a pattern only for the first characters listed
/// here), which is most keys and values.
fn plain_is_str(s: &str) -> bool {
    match s.as_bytes().first() {
        None => false,
        Some(
            b'y'
            | b'Y'
            | b'n'
            | b'N'
            | b't'
            | b'T'
            | b'f'
            | b'F'
            | b'o'
            | b'O'
            | b'-'
            | b'+'
            | b'0'..=b'9'
            | b'.'
            | b'<'
            | b'~'
            | b'=',
        ) => resolve_plain(s) == Implicit::Str,
        Some(_) => true,
    }
}

/// The scalar text PyYAML's representer produces, and whether a plain
/// scalar with that text would resolve back to the same type.
fn scalar_text(v: &Value) -> (Cow<'_, str>, bool) {
    match v {
        Value::Null => (Cow::Borrowed(""), true),
        Value::Bool(b) => (Cow::Borrowed(if *b { "true" } else { "false" }), true),
        Value::Int(i) => (Cow::Owned(i.to_string()), true),
        Value::Float(f) => (Cow::Owned(yaml_float(*f)), true),
        Value::Timestamp(t) => (
            Cow::Borrowed(t.as_str()),
            resolve_plain(t) == Implicit::Timestamp,
        ),
        Value::Str(s) => (Cow::Borrowed(s.as_str()), plain_is_str(s)),
        Value::Seq(_) | Value::Map(_) => unreachable!("collections are not scalars"),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Style {
    Plain,
    Single,
    Double,
}

impl Emitter {
    fn push(&mut self, s: &str) {
        self.column += s.chars().count();
        self.out.push_str(s);
    }

    fn increase_indent(&mut self, flow: bool) {
        self.indents.push(self.indent);
        self.indent = Some(match self.indent {
            None if flow => BEST_INDENT,
            None => 0,
            Some(i) => i + BEST_INDENT,
        });
    }

    fn pop_indent(&mut self) {
        self.indent = self.indents.pop().expect("balanced indents");
    }

    fn write_indicator(&mut self, ind: &str, need_ws: bool, whitespace: bool, indention: bool) {
        if self.whitespace || !need_ws {
            self.push(ind);
        } else {
            self.push(" ");
            self.push(ind);
        }
        self.whitespace = whitespace;
        self.indention = self.indention && indention;
    }

    fn write_indent(&mut self) {
        let indent = self.indent.unwrap_or(0);
        if !self.indention || self.column > indent || (self.column == indent && !self.whitespace) {
            self.write_line_break(None);
        }
        if self.column < indent {
            self.whitespace = true;
            for _ in self.column..indent {
                self.out.push(' ');
            }
            self.column = indent;
        }
    }

    fn write_line_break(&mut self, br: Option<char>) {
        self.out.push(br.unwrap_or('\n'));
        self.whitespace = true;
        self.indention = true;
        self.column = 0;
    }

    fn node(&mut self, v: &Value, simple_key: bool) {
        match v {
            Value::Seq(items) if items.is_empty() || self.flow_level > 0 => {
                self.flow_empty("[", "]");
            }
            Value::Map(m) if m.is_empty() || self.flow_level > 0 => {
                self.flow_empty("{", "}");
            }
            Value::Seq(items) => {
                self.increase_indent(false);
                for item in items {
                    self.write_indent();
                    self.write_indicator("-", true, false, true);
                    self.node(&item.value, false);
                }
                self.pop_indent();
            }
            Value::Map(m) => {
                self.increase_indent(false);
                for (k, val) in m.iter() {
                    self.write_indent();
                    match &k.value {
                        // Only empty collections are simple keys.
                        Value::Seq(_) | Value::Map(_) => {
                            let simple = match &k.value {
                                Value::Seq(s) => s.is_empty(),
                                Value::Map(m) => m.is_empty(),
                                _ => unreachable!("matched a collection"),
                            };
                            if simple {
                                self.node(&k.value, true);
                                self.write_indicator(":", false, false, false);
                            } else {
                                self.write_indicator("?", true, false, true);
                                self.node(&k.value, false);
                                self.write_indent();
                                self.write_indicator(":", true, false, true);
                            }
                            self.node(&val.value, false);
                        }
                        scalar => {
                            let (text, implicit) = scalar_text(scalar);
                            if text.is_ascii() {
                                self.scalar_key(text.as_bytes(), implicit, &val.value);
                            } else {
                                let chars: Vec<char> = text.chars().collect();
                                self.scalar_key(&chars, implicit, &val.value);
                            }
                        }
                    }
                }
                self.pop_indent();
            }
            scalar => {
                self.increase_indent(true);
                self.scalar(scalar, simple_key);
                self.pop_indent();
            }
        }
    }

    /// A mapping entry whose key is a scalar: the key is analysed once,
    /// both to decide whether it is a simple key and to choose its style.
    fn scalar_key<C: Ch>(&mut self, key: &[C], implicit: bool, val: &Value) {
        let a = analyze(key);
        if key.len() < 128 && !a.empty && !a.multiline {
            self.increase_indent(true);
            self.styled(key, implicit, &a, true);
            self.pop_indent();
            self.write_indicator(":", false, false, false);
        } else {
            self.write_indicator("?", true, false, true);
            self.increase_indent(true);
            self.styled(key, implicit, &a, false);
            self.pop_indent();
            self.write_indent();
            self.write_indicator(":", true, false, true);
        }
        self.node(val, false);
    }

    /// Only empty collections are written in flow style.
    fn flow_empty(&mut self, open: &str, close: &str) {
        self.write_indicator(open, true, true, false);
        self.flow_level += 1;
        self.increase_indent(true);
        self.pop_indent();
        self.flow_level -= 1;
        self.write_indicator(close, false, false, false);
    }

    fn scalar(&mut self, v: &Value, simple_key: bool) {
        let (text, implicit) = scalar_text(v);
        if text.is_ascii() {
            let t = text.as_bytes();
            self.styled(t, implicit, &analyze(t), simple_key);
        } else {
            let chars: Vec<char> = text.chars().collect();
            self.styled(&chars, implicit, &analyze(&chars), simple_key);
        }
    }

    fn styled<C: Ch>(&mut self, chars: &[C], implicit: bool, a: &Analysis, simple_key: bool) {
        let mut style = if a.allow_single_quoted && !(simple_key && a.multiline) {
            Style::Single
        } else {
            Style::Double
        };
        if implicit
            && !(simple_key && (a.empty || a.multiline))
            && ((self.flow_level > 0 && a.allow_flow_plain)
                || (self.flow_level == 0 && a.allow_block_plain))
        {
            style = Style::Plain;
        }
        let split = !simple_key;
        match style {
            Style::Plain => self.write_plain(chars, split),
            Style::Single => self.write_single_quoted(chars, split),
            Style::Double => self.write_double_quoted(chars, split),
        }
    }

    fn write_chars<C: Ch>(&mut self, s: &[C]) {
        self.column += s.len();
        C::put(&mut self.out, s);
    }

    fn write_breaks<C: Ch>(&mut self, text: &[C], start: usize, end: usize) {
        if text[start].ch() == '\n' {
            self.write_line_break(None);
        }
        for br in text[start..end].iter().map(|c| c.ch()) {
            self.write_line_break(if br == '\n' { None } else { Some(br) });
        }
        self.write_indent();
    }

    fn write_plain<C: Ch>(&mut self, text: &[C], split: bool) {
        if text.is_empty() {
            return;
        }
        if !self.whitespace {
            self.push(" ");
        }
        self.whitespace = false;
        self.indention = false;
        let (mut spaces, mut breaks) = (false, false);
        let (mut start, mut end) = (0usize, 0usize);
        while end <= text.len() {
            let ch = text.get(end).map(|c| c.ch());
            if spaces {
                if ch != Some(' ') {
                    if start + 1 == end && self.column > BEST_WIDTH && split {
                        self.write_indent();
                        self.whitespace = false;
                        self.indention = false;
                    } else {
                        self.write_chars(&text[start..end]);
                    }
                    start = end;
                }
            } else if breaks {
                if !ch.is_some_and(is_break) {
                    self.write_breaks(text, start, end);
                    self.whitespace = false;
                    self.indention = false;
                    start = end;
                }
            } else if ch.is_none_or(|c| c == ' ' || is_break(c)) {
                self.write_chars(&text[start..end]);
                start = end;
            }
            if let Some(c) = ch {
                spaces = c == ' ';
                breaks = is_break(c);
            }
            end += 1;
        }
    }

    fn write_single_quoted<C: Ch>(&mut self, text: &[C], split: bool) {
        self.write_indicator("'", true, false, false);
        let (mut spaces, mut breaks) = (false, false);
        let (mut start, mut end) = (0usize, 0usize);
        while end <= text.len() {
            let ch = text.get(end).map(|c| c.ch());
            if spaces {
                if ch != Some(' ') {
                    if start + 1 == end
                        && self.column > BEST_WIDTH
                        && split
                        && start != 0
                        && end != text.len()
                    {
                        self.write_indent();
                    } else {
                        self.write_chars(&text[start..end]);
                    }
                    start = end;
                }
            } else if breaks {
                if !ch.is_some_and(is_break) {
                    self.write_breaks(text, start, end);
                    start = end;
                }
            } else if ch.is_none_or(|c| c == ' ' || is_break(c) || c == '\'') && start < end {
                self.write_chars(&text[start..end]);
                start = end;
            }
            if ch == Some('\'') {
                self.push("''");
                start = end + 1;
            }
            if let Some(c) = ch {
                spaces = c == ' ';
                breaks = is_break(c);
            }
            end += 1;
        }
        self.write_indicator("'", false, false, false);
    }

    fn write_double_quoted<C: Ch>(&mut self, text: &[C], split: bool) {
        self.write_indicator("\"", true, false, false);
        let (mut start, mut end) = (0usize, 0usize);
        while end <= text.len() {
            let ch = text.get(end).map(|c| c.ch());
            let needs_escape = |c: char| {
                "\"\\\u{85}\u{2028}\u{2029}\u{FEFF}".contains(c)
                    || !(('\u{20}'..='\u{7E}').contains(&c)
                        || ('\u{A0}'..='\u{D7FF}').contains(&c)
                        || ('\u{E000}'..='\u{FFFD}').contains(&c))
            };
            if ch.is_none_or(needs_escape) {
                if start < end {
                    self.write_chars(&text[start..end]);
                    start = end;
                }
                if let Some(c) = ch {
                    let esc = match c {
                        '\0' => "\\0".to_string(),
                        '\u{07}' => "\\a".to_string(),
                        '\u{08}' => "\\b".to_string(),
                        '\t' => "\\t".to_string(),
                        '\n' => "\\n".to_string(),
                        '\u{0B}' => "\\v".to_string(),
                        '\u{0C}' => "\\f".to_string(),
                        '\r' => "\\r".to_string(),
                        '\u{1B}' => "\\e".to_string(),
                        '"' => "\\\"".to_string(),
                        '\\' => "\\\\".to_string(),
                        '\u{85}' => "\\N".to_string(),
                        '\u{A0}' => "\\_".to_string(),
                        '\u{2028}' => "\\L".to_string(),
                        '\u{2029}' => "\\P".to_string(),
                        c if (c as u32) <= 0xFF => format!("\\x{:02X}", c as u32),
                        c if (c as u32) <= 0xFFFF => format!("\\u{:04X}", c as u32),
                        c => format!("\\U{:08X}", c as u32),
                    };
                    self.push(&esc);
                    start = end + 1;
                }
            }
            if 0 < end
                && end + 1 < text.len()
                && (ch == Some(' ') || start >= end)
                && self.column as isize + (end as isize - start as isize) > BEST_WIDTH as isize
                && split
            {
                let mut data = String::new();
                C::put(&mut data, &text[start.min(end)..end]);
                data.push('\\');
                if start < end {
                    start = end;
                }
                self.push(&data);
                self.write_indent();
                self.whitespace = false;
                self.indention = false;
                if text[start].ch() == ' ' {
                    self.push("\\");
                }
            }
            end += 1;
        }
        self.write_indicator("\"", false, false, false);
    }
}

#[cfg(test)]
mod tests {
    use super::super::load::load_bytes;
    use super::*;

    fn round(src: &str) -> String {
        to_yaml(&load_bytes(src.as_bytes(), 0).unwrap().root.value)
    }

    #[test]
    fn block_style_like_pyyaml() {
        let out = round("a: 1\nb:\n  - x\n  - {k: v, l: [1, 2]}\nc: {}\nd: []\ne:\nf: 'true'\n");
        assert_eq!(
            out,
            "a: 1\nb:\n  - x\n  - k: v\n    l:\n      - 1\n      - 2\nc: {}\nd: []\ne:\nf: 'true'\n"
        );
    }

    #[test]
    fn quoting_rules() {
        let out = round(concat!(
            "a: ''\nb: '#x'\nc: 'k: v'\nd: '012'\ne: \"it's\"\nf: 'yes'\n",
            "g: ' lead'\nh: \"tab\\there\"\ni: \"line\\nbreak\"\nj: '- x'\nk: 'a #b'\n",
            "l: '<<'\nm: '1:30'\nn: 1.0e+16\no: \"caf\\u00e9\"\n"
        ));
        assert_eq!(
            out,
            concat!(
                "a: ''\nb: '#x'\nc: 'k: v'\nd: '012'\ne: it's\nf: 'yes'\n",
                "g: ' lead'\nh: \"tab\\there\"\ni: 'line\n\n  break'\nj: '- x'\nk: 'a #b'\n",
                "l: '<<'\nm: '1:30'\nn: 1.0e+16\no: café\n"
            )
        );
    }

    #[test]
    fn folds_long_plain_scalars_at_80_columns() {
        let long = "word ".repeat(30);
        let out = round(&format!("key: {}\n", long.trim()));
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.len() > 1);
        assert!(lines[1].starts_with("  word"));
        assert!(lines[0].len() <= 84, "{}", lines[0]);
    }

    #[test]
    fn plain_is_str_agrees_with_the_resolver() {
        let samples = [
            "",
            "a",
            "yes",
            "Yes",
            "y",
            "no",
            "on",
            "off",
            "Off",
            "true",
            "False",
            "null",
            "Null",
            "~",
            "nothing",
            "1",
            "012",
            "0x1F",
            "1_000",
            "1:30",
            "1.5",
            ".5",
            ".inf",
            "-.inf",
            ".nan",
            "+1",
            "-",
            "2001-12-14",
            "2001-12-14 21:59:43.10 -5",
            "<<",
            "<",
            "=",
            "==",
            "é",
            "éa",
            "dom0001",
            "10.100.0.1",
            "images:debian/13",
            "'q'",
            " x",
            "#c",
            "<<\n",
            "=\n",
            "yes\n",
            "ON",
            "tRUE",
            "o",
            "O",
            "f",
            "F",
            "t",
            "T",
            "n",
            "N",
            "Y",
        ];
        let mut all: Vec<String> = samples.iter().map(|s| s.to_string()).collect();
        for c in (0u8..128).map(char::from).chain(['é', '\u{2028}', '😀']) {
            all.push(c.to_string());
            all.push(format!("{c}1"));
            all.push(format!("{c}es"));
        }
        for s in &all {
            assert_eq!(plain_is_str(s), resolve_plain(s) == Implicit::Str, "{s:?}");
        }
    }

    #[test]
    fn appends_to_a_buffer_like_a_fresh_document() {
        let doc = load_bytes("a: [1, 'x y']\nb: {c: é}\n".as_bytes(), 0)
            .unwrap()
            .root
            .value;
        let mut out = String::from("# head\n");
        to_yaml_into(&doc, &mut out);
        assert_eq!(out, format!("# head\n{}", to_yaml(&doc)));
    }

    #[test]
    fn long_keys_use_the_complex_form() {
        let k = "k".repeat(130);
        assert_eq!(round(&format!("{k}: 1\n")), format!("? {k}\n: 1\n"));
    }
}
