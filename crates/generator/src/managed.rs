//! The `=== MANAGED BY infra.yml ===` section of a generated file.
//!
//! Only the first managed section is replaced; everything outside it (user
//! variables, comments) is kept byte for byte. The replacement is literal:
//! unlike the reference's `re.sub`, backslashes in the new content are
//! never read as escapes.

pub const BEGIN: &str = "# === MANAGED BY infra.yml ===";
pub const END: &str = "# === END MANAGED ===";
pub const NOTICE: &str = "# Do not edit this section — it will be overwritten by `make sync`";
/// The trailer of a file we create.
pub const USER_TRAILER: &str = "# Your custom variables below:\n";

/// The managed block around a YAML dump.
pub fn block(yaml: &str) -> String {
    format!("{BEGIN}\n{NOTICE}\n{}\n{END}", yaml.trim_end())
}

/// The byte range of the first managed section (`BEGIN.*?END`).
pub fn find(text: &str) -> Option<(usize, usize)> {
    let start = text.find(BEGIN)?;
    let end = text[start + BEGIN.len()..].find(END)? + start + BEGIN.len() + END.len();
    Some((start, end))
}

/// The new content of a file whose managed section becomes `block`.
pub fn merge(existing: Option<&str>, block: &str) -> String {
    match existing {
        None => format!("---\n{block}\n\n{USER_TRAILER}"),
        Some(text) => match find(text) {
            Some((s, e)) => {
                let mut out = String::with_capacity(text.len() + block.len());
                out.push_str(&text[..s]);
                out.push_str(block);
                out.push_str(&text[e..]);
                out
            }
            None => {
                let prefix = if text.starts_with("---") { "" } else { "---\n" };
                format!("{prefix}{block}\n\n{text}")
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_file_layout() {
        let b = block("a: 1\n");
        assert_eq!(
            merge(None, &b),
            format!("---\n{BEGIN}\n{NOTICE}\na: 1\n{END}\n\n# Your custom variables below:\n")
        );
    }

    #[test]
    fn replaces_only_the_first_section_and_keeps_the_rest() {
        let old = format!("---\n{BEGIN}\nold: 1\n{END}\n\nmine: 2\n{BEGIN}\nx\n{END}\n");
        let new = merge(Some(&old), &block("new: '\\t\\\\'"));
        assert_eq!(
            new,
            format!(
                "---\n{BEGIN}\n{NOTICE}\nnew: '\\t\\\\'\n{END}\n\nmine: 2\n{BEGIN}\nx\n{END}\n"
            )
        );
    }

    #[test]
    fn prepends_to_a_hand_written_file() {
        assert_eq!(merge(Some("k: v\n"), "B"), "---\nB\n\nk: v\n");
        assert_eq!(
            merge(Some("--- # doc\nk: v\n"), "B"),
            "B\n\n--- # doc\nk: v\n"
        );
    }
}
