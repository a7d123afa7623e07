//! Finding the `[[KEY]]` entries of a TOML file without parsing it, so a large array of tables can be parsed a
//! slice at a time.
//!
//! The `toml` crate keeps every token, every parser event and the whole tree of a document in memory at once
//! (about 2 KiB per four-line `[[tenants]]` entry), which made a tenants file of 100,000 listed tenants cost
//! 237 MB. [`split`] walks the document's tokens once, streaming, and returns where the entries are; the caller
//! parses the rest of the file and each run of entries on its own. It only recognises layouts whose meaning
//! cannot change when the entries are parsed apart (each entry one `[[KEY]]` header and its keys), and returns
//! `None` for anything else, so the caller can parse the whole document as one.

use std::ops::Range;

use toml_parser::lexer::TokenKind;
use toml_parser::Source;

/// Where the `[[KEY]]` entries of a document are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Split {
    /// The text outside the entries, as byte ranges in order; together they are a document without `KEY`.
    pub rest: Vec<Range<usize>>,
    /// Runs of consecutive entries, each at most `per_chunk` entries, in order.
    pub chunks: Vec<Range<usize>>,
    /// How many entries there are.
    pub n_entries: usize,
}

/// A header at the start of a line, outside any value.
struct Header {
    start: usize,
    is_entry: bool,
}

/// Splits `text` at its top-level table headers. `None` when a header's first key is `key` without being
/// exactly `[[key]]` (a sub-table such as `[key.tags]` belongs to the entry above it), when a header cannot be
/// read with certainty (escapes in a quoted key, a line break inside it), or when the document has no `[[key]]`
/// entry at all: then the caller parses the whole document, which also reports every syntax error.
pub(crate) fn split(text: &str, key: &str, per_chunk: usize) -> Option<Split> {
    let per_chunk = per_chunk.max(1);
    let mut out = Split {
        rest: Vec::new(),
        chunks: Vec::new(),
        n_entries: 0,
    };
    let mut in_chunk = 0usize;
    // The section being read: where it starts and whether it is an entry. The text before the first header
    // is the document's root table.
    let mut section = Header {
        start: 0,
        is_entry: false,
    };
    let mut close = |out: &mut Split, section: &Header, end: usize| {
        let range = section.start..end;
        if range.is_empty() {
            return;
        }
        if section.is_entry {
            out.n_entries += 1;
            match out.chunks.last_mut() {
                Some(last) if last.end == range.start && in_chunk < per_chunk => {
                    last.end = range.end;
                    in_chunk += 1;
                }
                _ => {
                    out.chunks.push(range);
                    in_chunk = 1;
                }
            }
        } else {
            match out.rest.last_mut() {
                Some(last) if last.end == range.start => last.end = range.end,
                _ => out.rest.push(range),
            }
            // A non-entry section between two entries ends the run.
            in_chunk = per_chunk;
        }
    };

    let source = Source::new(text);
    let mut tokens = source.lex().peekable();
    let mut depth = 0usize;
    let mut line_start = true;
    while let Some(token) = tokens.next() {
        let span = token.span();
        match token.kind() {
            TokenKind::Newline => {
                line_start = true;
                continue;
            }
            TokenKind::Whitespace | TokenKind::Comment => continue,
            TokenKind::LeftSquareBracket if depth == 0 && line_start => {
                let header = read_header(text, span.start(), &mut tokens, key)?;
                close(&mut out, &section, header.start);
                section = header;
            }
            TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket => depth += 1,
            TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket => depth = depth.saturating_sub(1),
            TokenKind::Eof => break,
            _ => {}
        }
        line_start = false;
    }
    close(&mut out, &section, text.len());
    (out.n_entries > 0).then_some(out)
}

/// Reads a header whose first `[` starts at `start` and has just been taken from `tokens`, through its last `]`.
/// `None` when its first key is `key` without it being `[[key]]`, or when it cannot be read with certainty.
fn read_header(
    text: &str,
    start: usize,
    tokens: &mut std::iter::Peekable<toml_parser::lexer::Lexer<'_>>,
    key: &str,
) -> Option<Header> {
    let mut is_array = false;
    if let Some(next) = tokens.peek() {
        if next.kind() == TokenKind::LeftSquareBracket && next.span().start() == start + 1 {
            is_array = true;
            tokens.next();
        }
    }
    let mut keys: Vec<&str> = Vec::new();
    loop {
        let token = tokens.next()?;
        let raw = text.get(token.span().start()..token.span().end())?;
        match token.kind() {
            TokenKind::Whitespace | TokenKind::Dot => {}
            TokenKind::Atom => keys.push(raw),
            TokenKind::BasicString | TokenKind::LiteralString => {
                let inner = raw.get(1..raw.len().checked_sub(1)?)?;
                if inner.contains('\\') || raw.len() < 2 {
                    return None;
                }
                keys.push(inner);
            }
            TokenKind::RightSquareBracket => {
                if is_array {
                    let close = tokens.next()?;
                    if close.kind() != TokenKind::RightSquareBracket || close.span().start() != token.span().end() {
                        return None;
                    }
                }
                break;
            }
            _ => return None,
        }
    }
    let first = *keys.first()?;
    let is_entry = is_array && keys.len() == 1 && first == key;
    if first == key && !is_entry {
        return None;
    }
    Some(Header { start, is_entry })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pieces of `text` as strings: the rest joined, then each chunk.
    fn pieces(text: &str, per_chunk: usize) -> Option<(String, Vec<&str>)> {
        let split = split(text, "tenants", per_chunk)?;
        let rest: String = split.rest.iter().map(|r| &text[r.clone()]).collect();
        Some((rest, split.chunks.iter().map(|r| &text[r.clone()]).collect()))
    }

    #[test]
    fn entries_are_cut_at_their_headers() {
        let text = "a = 1\n[[servers]]\nname = \"x\"\n[[tenants]]\nid = \"t1\"\ntags = { a = [1, [2]] }\n\
                    [[tenants]] # two\nid = \"t2\"\nlist = [\n  [1],\n  \"[[tenants]]\",\n]\n\
                    [[tenants]]\nid = '''\n[[tenants]]\n'''\n[[sources]]\nserver = \"x\"\n";
        let (rest, chunks) = pieces(text, 2).expect("split");
        assert_eq!(rest, "a = 1\n[[servers]]\nname = \"x\"\n[[sources]]\nserver = \"x\"\n");
        assert_eq!(
            chunks,
            [
                "[[tenants]]\nid = \"t1\"\ntags = { a = [1, [2]] }\n[[tenants]] # two\nid = \"t2\"\nlist = [\n  [1],\n  \"[[tenants]]\",\n]\n",
                "[[tenants]]\nid = '''\n[[tenants]]\n'''\n",
            ]
        );
        let split = split(text, "tenants", 2).expect("split");
        assert_eq!(split.n_entries, 3);
    }

    #[test]
    fn a_section_between_entries_ends_the_chunk() {
        let text = "[[tenants]]\nid = \"a\"\n[[servers]]\nname = \"x\"\n[[ \"tenants\" ]]\nid = \"b\"\n";
        let (rest, chunks) = pieces(text, 10).expect("split");
        assert_eq!(rest, "[[servers]]\nname = \"x\"\n");
        assert_eq!(chunks, ["[[tenants]]\nid = \"a\"\n", "[[ \"tenants\" ]]\nid = \"b\"\n"]);
    }

    #[test]
    fn other_layouts_are_left_whole() {
        for text in [
            "[[tenants]]\nid = \"a\"\n[tenants.tags]\nring = \"1\"\n",
            "[tenants]\nid = \"a\"\n",
            "[[tenants.x]]\nid = \"a\"\n",
            "[[\"ten\\u0061nts\"]]\nid = \"a\"\n",
            "[[tenants]\nid = \"a\"\n",
            "[ [tenants]]\nid = \"a\"\n",
            "[[servers]]\nname = \"x\"\n",
            "tenants = [{ id = \"a\" }]\n",
        ] {
            assert_eq!(pieces(text, 10), None, "{text}");
        }
    }
}
