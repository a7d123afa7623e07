//! The SQL statement splitter: cuts a section's text into statements at top-level semicolons.
//!
//! It follows psql's lexer closely enough to never split inside a literal, quoted identifier, comment or
//! function body: standard strings (`'it''s'`), escape strings (`E'it\'s'`), quoted identifiers (`"a;b"`),
//! dollar-quoted bodies (`$body$ ... $body$`, while `$1` stays a parameter), `--` line comments, nested
//! `/* */` block comments, parentheses (`CREATE RULE ... DO (a; b)`), and psql's heuristic for
//! `CREATE [OR REPLACE] FUNCTION|PROCEDURE ... BEGIN ATOMIC ... END` bodies.
//! It assumes `standard_conforming_strings = on` (the default since PostgreSQL 9.1).
//! It does not parse SQL: whether a statement is valid is the server's business.

use std::fmt;

/// One SQL statement (without its terminating semicolon) and the 1-based file line where it starts.
///
/// `sql` runs from the first to the last character that is neither whitespace nor part of a comment, so
/// comments before and after a statement are dropped and comments inside it are kept; appending `;` to
/// `sql` is always safe. `line` is the file line of the first character of `sql`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    pub line: usize,
}

/// A quoted construct that can swallow the rest of a file when its closing delimiter is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Construct {
    StringLiteral,
    EscapeStringLiteral,
    QuotedIdentifier,
    DollarQuotedBody,
    BlockComment,
}

impl fmt::Display for Construct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Construct::StringLiteral => "string literal",
            Construct::EscapeStringLiteral => "escape string literal",
            Construct::QuotedIdentifier => "quoted identifier",
            Construct::DollarQuotedBody => "dollar-quoted body",
            Construct::BlockComment => "block comment",
        })
    }
}

/// A construct opened on `line` was never closed; everything after it would be swallowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unterminated {construct} starting on line {line}")]
pub struct SplitError {
    pub construct: Construct,
    pub line: usize,
}

/// Split `text` into statements; `first_line` is the file line of the first line of `text`.
///
/// Statements holding nothing but whitespace and comments are dropped. A final statement without `;` is
/// still a statement. Returns [`SplitError`] for an unterminated string, escape string, quoted identifier,
/// dollar-quoted body or block comment, naming the line where it starts.
pub fn split_statements(text: &str, first_line: usize) -> Result<Vec<Statement>, SplitError> {
    let b = text.as_bytes();
    let lines = LineIndex::new(text, first_line);
    let unterminated = |construct, at| SplitError {
        construct,
        line: lines.line_of(at),
    };
    let mut statements = Vec::new();
    let mut cur = Current::default();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        match c {
            b'-' if next == Some(b'-') => {
                i = b[i..].iter().position(|&x| x == b'\n').map_or(b.len(), |p| i + p);
            }
            b'/' if next == Some(b'*') => {
                i = skip_block_comment(b, i).ok_or_else(|| unterminated(Construct::BlockComment, i))?;
            }
            b'\'' => {
                let end =
                    skip_quoted(b, i + 1, b'\'', false).ok_or_else(|| unterminated(Construct::StringLiteral, i))?;
                cur.mark(i, end);
                i = end;
            }
            b'"' => {
                let end =
                    skip_quoted(b, i + 1, b'"', false).ok_or_else(|| unterminated(Construct::QuotedIdentifier, i))?;
                cur.mark(i, end);
                i = end;
            }
            b'$' => {
                let end = if let Some(tag_end) = dollar_tag_end(b, i) {
                    let tag = &text[i..tag_end];
                    let close = text[tag_end..]
                        .find(tag)
                        .ok_or_else(|| unterminated(Construct::DollarQuotedBody, i))?;
                    tag_end + close + tag.len()
                } else {
                    // A positional parameter such as `$1`, or a lone `$`.
                    i + 1 + b[i + 1..].iter().take_while(|x| x.is_ascii_digit()).count()
                };
                cur.mark(i, end);
                i = end;
            }
            b';' if cur.paren_depth == 0 && cur.begin_depth == 0 => {
                cur.finish(text, &lines, &mut statements);
                i += 1;
            }
            b'(' | b')' => {
                if c == b'(' {
                    cur.paren_depth += 1;
                } else {
                    cur.paren_depth = cur.paren_depth.saturating_sub(1);
                }
                cur.mark(i, i + 1);
                i += 1;
            }
            _ if is_ident_start(c) => {
                let word_end = i + b[i..].iter().take_while(|&&x| is_ident_cont(x)).count();
                let word = &text[i..word_end];
                if word.eq_ignore_ascii_case("e") && b.get(word_end) == Some(&b'\'') {
                    let end = skip_quoted(b, word_end + 1, b'\'', true)
                        .ok_or_else(|| unterminated(Construct::EscapeStringLiteral, i))?;
                    cur.mark(i, end);
                    i = end;
                } else {
                    cur.identifier(word);
                    cur.mark(i, word_end);
                    i = word_end;
                }
            }
            _ if c.is_ascii_digit() => {
                // Numbers are consumed whole so `1$` and `1e5` never look like the start of anything else.
                let end = i + b[i..].iter().take_while(|&&x| x != b'$' && is_ident_cont(x)).count();
                cur.mark(i, end);
                i = end;
            }
            _ if c.is_ascii_whitespace() => i += 1,
            _ => {
                cur.mark(i, i + 1);
                i += 1;
            }
        }
    }
    cur.finish(text, &lines, &mut statements);
    Ok(statements)
}

/// The statement being scanned.
#[derive(Default)]
struct Current {
    /// Byte range of its significant text, once it has any.
    start: Option<usize>,
    end: usize,
    paren_depth: usize,
    /// psql's `begin_depth`: open `BEGIN`/`CASE` blocks inside `CREATE FUNCTION|PROCEDURE`.
    begin_depth: usize,
    /// First letters of the first four identifiers when they are `create`, `or`, `replace`, `function` or
    /// `procedure`, else 0 (psql's `identifiers`).
    leading: [u8; 4],
    n_identifiers: usize,
}

impl Current {
    fn mark(&mut self, start: usize, end: usize) {
        self.start.get_or_insert(start);
        self.end = end;
    }

    /// psql's heuristic for SQL-standard function bodies (`BEGIN ATOMIC ... END`), whose semicolons do not
    /// end the `CREATE FUNCTION` statement.
    fn identifier(&mut self, word: &str) {
        if self.n_identifiers < self.leading.len() {
            let lower = word.to_ascii_lowercase();
            if matches!(lower.as_str(), "create" | "or" | "replace" | "function" | "procedure") {
                self.leading[self.n_identifiers] = lower.as_bytes()[0];
            }
        }
        self.n_identifiers += 1;
        let l = self.leading;
        let is_routine = l[0] == b'c'
            && (l[1] == b'f' || l[1] == b'p' || (l[1] == b'o' && l[2] == b'r' && (l[3] == b'f' || l[3] == b'p')));
        if !is_routine || self.paren_depth != 0 {
            return;
        }
        if word.eq_ignore_ascii_case("begin") {
            self.begin_depth += 1;
        } else if word.eq_ignore_ascii_case("case") {
            // CASE also ends with END, and only matters inside a BEGIN block.
            if self.begin_depth >= 1 {
                self.begin_depth += 1;
            }
        } else if word.eq_ignore_ascii_case("end") {
            self.begin_depth = self.begin_depth.saturating_sub(1);
        }
    }

    fn finish(&mut self, text: &str, lines: &LineIndex, out: &mut Vec<Statement>) {
        if let Some(start) = self.start {
            out.push(Statement {
                sql: text[start..self.end].to_string(),
                line: lines.line_of(start),
            });
        }
        *self = Current::default();
    }
}

/// Maps byte offsets to file lines.
struct LineIndex {
    first_line: usize,
    newlines: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str, first_line: usize) -> Self {
        let newlines = text
            .bytes()
            .enumerate()
            .filter(|&(_, c)| c == b'\n')
            .map(|(i, _)| i)
            .collect();
        LineIndex { first_line, newlines }
    }

    fn line_of(&self, offset: usize) -> usize {
        self.first_line + self.newlines.partition_point(|&nl| nl < offset)
    }
}

/// PostgreSQL identifiers start with a letter, `_`, or any non-ASCII byte.
fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

/// Identifiers continue with those, digits, and `$` (so `a$b$` is one identifier, not a dollar quote).
fn is_ident_cont(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
}

/// If a dollar-quote opening tag (`$$` or `$tag$`) starts at `i`, the offset just past it.
fn dollar_tag_end(b: &[u8], i: usize) -> Option<usize> {
    let first = *b.get(i + 1)?;
    if first == b'$' {
        return Some(i + 2);
    }
    if !is_ident_start(first) {
        return None;
    }
    // Tags follow identifier rules, except that they cannot contain `$`.
    let len = b[i + 1..]
        .iter()
        .take_while(|&&x| x != b'$' && is_ident_cont(x))
        .count();
    (b.get(i + 1 + len) == Some(&b'$')).then_some(i + 2 + len)
}

/// Offset just past the closing `quote`, scanning from `i` (just inside the opening quote).
/// A doubled quote is an escaped quote; with `backslash_escapes`, so is anything after a backslash.
fn skip_quoted(b: &[u8], mut i: usize, quote: u8, backslash_escapes: bool) -> Option<usize> {
    while i < b.len() {
        let c = b[i];
        if backslash_escapes && c == b'\\' {
            i += 2;
        } else if c == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return Some(i + 1);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// Offset just past the `*/` closing the block comment opened at `i`; PostgreSQL block comments nest.
fn skip_block_comment(b: &[u8], i: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut j = i;
    while j + 1 < b.len() {
        match (b[j], b[j + 1]) {
            (b'/', b'*') => {
                depth += 1;
                j += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                j += 2;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => j += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `expected` lists `(line, sql)` for text whose first line is line 1.
    fn check(input: &str, expected: &[(usize, &str)]) {
        let got = split_statements(input, 1).unwrap_or_else(|e| panic!("{e} in {input:?}"));
        let got: Vec<(usize, &str)> = got.iter().map(|s| (s.line, s.sql.as_str())).collect();
        assert_eq!(got, expected, "input: {input:?}");
    }

    fn check_err(input: &str, construct: Construct, line: usize) {
        assert_eq!(
            split_statements(input, 1),
            Err(SplitError { construct, line }),
            "input: {input:?}"
        );
    }

    #[test]
    fn plain() {
        check("", &[]);
        check("  \n ; ;; \n", &[]);
        check("SELECT 1", &[(1, "SELECT 1")]);
        check("SELECT 1;SELECT 2;", &[(1, "SELECT 1"), (1, "SELECT 2")]);
        check(
            "\n\n  SELECT 1\n  FROM t ;\n\nSELECT 2",
            &[(3, "SELECT 1\n  FROM t"), (6, "SELECT 2")],
        );
    }

    #[test]
    fn first_line_offsets_lines() {
        let got = split_statements("\nSELECT 1;\nSELECT 2;", 10).unwrap();
        assert_eq!(got.iter().map(|s| s.line).collect::<Vec<_>>(), vec![11, 12]);
    }

    #[test]
    fn comments() {
        check("-- only a comment\n/* and another */", &[]);
        check("-- lead ; in comment\nSELECT 1; -- trailing ;\n", &[(2, "SELECT 1")]);
        check("SELECT /* inside; */ 1 -- tail;\n;", &[(1, "SELECT /* inside; */ 1")]);
        check("/* a /* nested; */ still comment; */ SELECT 1;", &[(1, "SELECT 1")]);
        check("SELECT 1 /* x */;/* y */", &[(1, "SELECT 1")]);
        check("SELECT 2 - -1; SELECT 3 -- 4", &[(1, "SELECT 2 - -1"), (1, "SELECT 3")]);
        check("SELECT 1 */ 2;", &[(1, "SELECT 1 */ 2")]);
    }

    #[test]
    fn strings_and_identifiers() {
        check(
            "SELECT 'a;b', 'it''s;';SELECT 2",
            &[(1, "SELECT 'a;b', 'it''s;'"), (1, "SELECT 2")],
        );
        check("SELECT '-- not a comment;' ;", &[(1, "SELECT '-- not a comment;'")]);
        check("SELECT '/* not a comment';", &[(1, "SELECT '/* not a comment'")]);
        check(
            r"SELECT E'\'' ; SELECT e'a\\'; SELECT 3",
            &[(1, r"SELECT E'\''"), (1, r"SELECT e'a\\'"), (1, "SELECT 3")],
        );
        check(r"SELECT E'x'';\'y';", &[(1, r"SELECT E'x'';\'y'")]);
        // Without the E prefix a backslash is an ordinary character.
        check(r"SELECT 'a\'; SELECT 2", &[(1, r"SELECT 'a\'"), (1, "SELECT 2")]);
        check(
            r"SELECT some'a\'; SELECT 2",
            &[(1, r"SELECT some'a\'"), (1, "SELECT 2")],
        );
        check(
            r#"CREATE TABLE "a;b" ("x""y;" int);"#,
            &[(1, r#"CREATE TABLE "a;b" ("x""y;" int)"#)],
        );
        check(
            "SELECT U&'d\\0061t;a'; SELECT 2",
            &[(1, "SELECT U&'d\\0061t;a'"), (1, "SELECT 2")],
        );
    }

    #[test]
    fn dollar_quotes() {
        check(
            "DO $$ BEGIN PERFORM 1; END $$;",
            &[(1, "DO $$ BEGIN PERFORM 1; END $$")],
        );
        check(
            "CREATE FUNCTION f() RETURNS int AS $body$\nSELECT 1;\n$body$ LANGUAGE sql;\nSELECT 2;",
            &[
                (
                    1,
                    "CREATE FUNCTION f() RETURNS int AS $body$\nSELECT 1;\n$body$ LANGUAGE sql",
                ),
                (4, "SELECT 2"),
            ],
        );
        check(
            "SELECT $a$ $b$ ; $b$ $a$; SELECT 2",
            &[(1, "SELECT $a$ $b$ ; $b$ $a$"), (1, "SELECT 2")],
        );
        check("SELECT $a$ $$ ; $$ $a$;", &[(1, "SELECT $a$ $$ ; $$ $a$")]);
        check(
            "PREPARE p AS SELECT $1; SELECT $2",
            &[(1, "PREPARE p AS SELECT $1"), (1, "SELECT $2")],
        );
        check("SELECT $1$2; SELECT 3", &[(1, "SELECT $1$2"), (1, "SELECT 3")]);
        check("SELECT a$b$c; SELECT 2", &[(1, "SELECT a$b$c"), (1, "SELECT 2")]);
        check("SELECT $_x9$ ; $_x9$;", &[(1, "SELECT $_x9$ ; $_x9$")]);
        check("SELECT $tag$ $TAG$ ; $tag$;", &[(1, "SELECT $tag$ $TAG$ ; $tag$")]);
        check("SELECT $é$;$é$;", &[(1, "SELECT $é$;$é$")]);
        check("SELECT '$$'; SELECT 2", &[(1, "SELECT '$$'"), (1, "SELECT 2")]);
        check("SELECT $$it's -- /*;$$;", &[(1, "SELECT $$it's -- /*;$$")]);
    }

    #[test]
    fn parentheses_and_atomic_bodies() {
        check(
            "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); DELETE FROM b); SELECT 2",
            &[
                (
                    1,
                    "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO a VALUES (1); DELETE FROM b)",
                ),
                (1, "SELECT 2"),
            ],
        );
        check(
            "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END; SELECT 3",
            &[
                (1, "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END"),
                (1, "SELECT 3"),
            ],
        );
        check(
            "CREATE PROCEDURE p() BEGIN ATOMIC INSERT INTO t VALUES (1); END;\nBEGIN;\nEND;",
            &[
                (1, "CREATE PROCEDURE p() BEGIN ATOMIC INSERT INTO t VALUES (1); END"),
                (2, "BEGIN"),
                (3, "END"),
            ],
        );
        // Outside a routine definition, BEGIN and CASE are ordinary words.
        check(
            "SELECT CASE WHEN true THEN 1 END; BEGIN; SELECT 2",
            &[(1, "SELECT CASE WHEN true THEN 1 END"), (1, "BEGIN"), (1, "SELECT 2")],
        );
    }

    #[test]
    fn unterminated() {
        check_err("SELECT 1;\nSELECT 'abc;\n", Construct::StringLiteral, 2);
        check_err("SELECT 1;\n\nSELECT E'abc\\';", Construct::EscapeStringLiteral, 3);
        check_err("SELECT \"a\"\"", Construct::QuotedIdentifier, 1);
        check_err("SELECT 1;\nDO $x$ BEGIN END $y$;", Construct::DollarQuotedBody, 2);
        check_err("SELECT 1;\nDO $$ BEGIN END $ $;", Construct::DollarQuotedBody, 2);
        check_err("\n/* a /* b */ c", Construct::BlockComment, 2);
        check_err("SELECT 1; /* x", Construct::BlockComment, 1);
    }

    /// A statement fragment that contains no top-level `;` and starts and ends with significant text.
    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "SELECT", "x", "tbl_1", "$1", "1.5", "-", "+", "=", ",", "*", "a$b"
            ])
            .prop_map(str::to_string),
            "[a-z ;$\\\\\"]{0,8}".prop_map(|s| format!("'{}'", s.replace('\'', "''"))),
            "[a-z ;'\\\\]{0,8}".prop_map(|s| format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))),
            "[a-z ;'\"]{0,8}".prop_map(|s| format!("\"{}\"", s.replace('"', "\"\""))),
            ("[a-z]{0,3}", "[a-z ;'\"\n]{0,12}").prop_map(|(tag, body)| format!("${tag}${body}${tag}$")),
            "[a-z ;'\"]{0,8}".prop_map(|s| format!("x /* {s} /* {s} */ */ y")),
            "[a-z ;'\"]{0,8}".prop_map(|s| format!("x -- {s}\ny")),
        ]
    }

    fn statement() -> impl Strategy<Value = String> {
        prop::collection::vec(fragment(), 1..6).prop_map(|parts| parts.join(" "))
    }

    proptest! {
        #[test]
        fn split_inverts_join(
            statements in prop::collection::vec(statement(), 0..6),
            separator in prop::sample::select(vec![";", ";\n", " ;\n\n", ";\n-- note;\n", ";/* c; */"]),
            has_final_semicolon in any::<bool>(),
        ) {
            let mut text = statements.join(separator);
            if has_final_semicolon {
                text.push(';');
            }
            let got = split_statements(&text, 1).unwrap();
            let got: Vec<String> = got.into_iter().map(|s| s.sql).collect();
            prop_assert_eq!(got, statements);
        }
    }
}
