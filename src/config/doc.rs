//! Reading a TOML file with positions: syntax errors, typed getters that record problems instead of stopping,
//! unknown-key checks, `${VAR}` interpolation and byte-offset to line:column conversion.
//!
//! Both `project` and `tenants` read through this module, so both report problems the same way.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;

use super::duration::parse_duration;
use super::error::{ConfigError, Location, Problem, ProblemKind};

/// Looks up an environment variable. The CLI passes [`process_env`]; tests pass a map.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Reads the real process environment. Only the CLI edge should pass this to the config loaders.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A file being read, plus the problems found so far.
pub(crate) struct Doc<'a> {
    pub path: Arc<Path>,
    text: &'a str,
    line_starts: Vec<usize>,
    env: EnvLookup<'a>,
    problems: Vec<Problem>,
    /// While a piece of the text is being read ([`Doc::parse_piece`]): where each of its segments starts, in the
    /// piece and in the text, so spans in the piece's tree report positions in the file. Empty: the whole text.
    segments: Vec<(usize, usize)>,
}

impl<'a> Doc<'a> {
    pub fn new(path: &Path, text: &'a str, env: EnvLookup<'a>) -> Doc<'a> {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Doc {
            path: Arc::from(path),
            text,
            line_starts,
            env,
            problems: Vec::new(),
            segments: Vec::new(),
        }
    }

    /// Parses `piece`, made of the ranges `segments` of the text laid end to end, and reads spans as pointing
    /// into it from now on (until the next piece). `None` when the piece has a syntax error: nothing is
    /// reported, so the caller can parse the whole text with [`Doc::parse`] for the errors as the file has them.
    pub fn parse_piece<'p>(&mut self, piece: &'p str, segments: &[Range<usize>]) -> Option<Spanned<DeTable<'p>>> {
        let (table, errors) = DeTable::parse_recoverable(piece);
        if !errors.is_empty() {
            return None;
        }
        self.read_piece(segments);
        Some(table)
    }

    /// Reads spans as pointing into the piece made of `segments` (ranges of the text laid end to end) again.
    pub fn read_piece(&mut self, segments: &[Range<usize>]) {
        self.segments.clear();
        let mut at = 0;
        for range in segments {
            self.segments.push((at, range.start));
            at += range.len();
        }
    }

    /// The offset in the text of `offset` in the piece being read.
    pub fn offset_in_text(&self, offset: usize) -> usize {
        match self.segments.partition_point(|&(piece, _)| piece <= offset) {
            0 => offset,
            i => {
                let (piece, text) = self.segments[i - 1];
                text + (offset - piece)
            }
        }
    }

    /// Parses the document. Errors: every syntax error, as [`ConfigError::Invalid`].
    pub fn parse(&mut self) -> Result<Spanned<DeTable<'a>>, ConfigError> {
        let (table, errors) = DeTable::parse_recoverable(self.text);
        for err in &errors {
            let span = err.span().unwrap_or(0..0);
            let message = err.message().trim_end().to_string();
            self.report(span, ProblemKind::Syntax { message });
        }
        if self.problems.is_empty() {
            Ok(table)
        } else {
            let mut problems = std::mem::take(&mut self.problems);
            problems.sort_by(|a, b| a.at.cmp(&b.at));
            Err(ConfigError::Invalid { problems })
        }
    }

    /// The directory relative paths in this file are resolved against.
    pub fn dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    pub fn resolve_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir().join(p)
        }
    }

    /// The file position of `offset` (in the piece being read, if any).
    pub fn loc(&self, offset: usize) -> Location {
        self.loc_in_text(self.offset_in_text(offset))
    }

    /// The file position of `offset` in the whole text.
    pub fn loc_in_text(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        Location {
            path: self.path.clone(),
            line,
            column,
        }
    }

    pub fn report(&mut self, span: Range<usize>, kind: ProblemKind) {
        let at = self.loc(span.start);
        self.report_at(at, kind);
    }

    pub fn report_at(&mut self, at: Location, kind: ProblemKind) {
        self.problems.push(Problem { at, kind });
    }

    /// `Ok` when nothing was reported, else every problem, in file order.
    pub fn finish(mut self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            return Ok(());
        }
        self.problems.sort_by(|a, b| a.at.cmp(&b.at));
        Err(ConfigError::Invalid {
            problems: self.problems,
        })
    }

    /// Expands `${NAME}` from the environment, `${NAME:-default}` falling back to `default` when unset; `$${` is a
    /// literal `${`. Records a problem (pointing into the
    /// string when it can) and returns `None` if a variable is unset or malformed.
    pub fn interpolate(&mut self, raw: &str, span: Range<usize>) -> Option<String> {
        if !raw.contains('$') {
            return Some(raw.to_string());
        }
        // Point at the `$` itself when the source text is the value verbatim (no escapes, single line).
        let start = self.offset_in_text(span.start);
        let verbatim = span.len() >= 2 && self.text.get(start + 1..start + span.len() - 1) == Some(raw);
        let at = |i: usize| {
            if verbatim {
                span.start + 1 + i..span.start + 1 + i
            } else {
                span.clone()
            }
        };
        let mut out = String::with_capacity(raw.len());
        let mut ok = true;
        let mut i = 0;
        while i < raw.len() {
            let rest = &raw[i..];
            if rest.starts_with("$${") {
                out.push_str("${");
                i += 3;
            } else if rest.starts_with("${") {
                let Some(end) = rest.find('}') else {
                    self.report(at(i), ProblemKind::BadVar { reason: "missing `}`" });
                    return None;
                };
                let (name, default) = match rest[2..end].split_once(":-") {
                    Some((name, default)) => (name, Some(default)),
                    None => (&rest[2..end], None),
                };
                let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    self.report(
                        at(i),
                        ProblemKind::BadVar {
                            reason: "variable names are letters, digits and `_`",
                        },
                    );
                    ok = false;
                } else if let Some(value) = (self.env)(name) {
                    out.push_str(&value);
                } else if let Some(default) = default {
                    out.push_str(default);
                } else {
                    self.report(at(i), ProblemKind::UnsetVar { name: name.to_string() });
                    ok = false;
                }
                i += end + 1;
            } else {
                let ch = rest.chars().next().unwrap_or('$');
                out.push(ch);
                i += ch.len_utf8();
            }
        }
        ok.then_some(out)
    }

    /// A string value, interpolated. Records a problem for any other type.
    pub fn string(&mut self, key: &str, value: &Spanned<DeValue<'_>>) -> Option<Spanned<String>> {
        match value.get_ref() {
            DeValue::String(s) => {
                let s = self.interpolate(s, value.span())?;
                Some(Spanned::new(value.span(), s))
            }
            other => {
                self.wrong_type(key, value.span(), "a string", other);
                None
            }
        }
    }

    pub fn boolean(&mut self, key: &str, value: &Spanned<DeValue<'_>>) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.wrong_type(key, value.span(), "true or false", other);
                None
            }
        }
    }

    /// A string, or an array of strings (each interpolated).
    pub fn strings(&mut self, key: &str, value: &Spanned<DeValue<'_>>) -> Option<Vec<Spanned<String>>> {
        match value.get_ref() {
            DeValue::String(_) => self.string(key, value).map(|s| vec![s]),
            DeValue::Array(items) => {
                let mut out = Vec::new();
                for item in items.iter() {
                    if let DeValue::String(_) = item.get_ref() {
                        out.extend(self.string(key, item));
                    } else {
                        self.wrong_type(key, item.span(), "an array of strings", item.get_ref());
                    }
                }
                Some(out)
            }
            other => {
                self.wrong_type(key, value.span(), "a string or an array of strings", other);
                None
            }
        }
    }

    pub fn integer(&mut self, key: &str, value: &Spanned<DeValue<'_>>) -> Option<Spanned<i64>> {
        match value.get_ref() {
            DeValue::Integer(n) => match i64::from_str_radix(n.as_str(), n.radix()) {
                Ok(v) => Some(Spanned::new(value.span(), v)),
                Err(_) => {
                    self.report(
                        value.span(),
                        ProblemKind::OutOfRange {
                            key: key.to_string(),
                            value: n.to_string(),
                        },
                    );
                    None
                }
            },
            other => {
                self.wrong_type(key, value.span(), "an integer", other);
                None
            }
        }
    }

    /// A TOML integer or float.
    pub fn number(&mut self, key: &str, value: &Spanned<DeValue<'_>>) -> Option<Spanned<f64>> {
        match value.get_ref() {
            DeValue::Integer(_) => self
                .integer(key, value)
                .map(|n| Spanned::new(n.span(), *n.get_ref() as f64)),
            DeValue::Float(f) => match f.as_str().replace('_', "").parse::<f64>() {
                Ok(v) if v.is_finite() => Some(Spanned::new(value.span(), v)),
                _ => {
                    self.report(
                        value.span(),
                        ProblemKind::OutOfRange {
                            key: key.to_string(),
                            value: f.to_string(),
                        },
                    );
                    None
                }
            },
            other => {
                self.wrong_type(key, value.span(), "a number", other);
                None
            }
        }
    }

    /// A duration string (`"5s"`, `"1h30m"`) or a bare integer of seconds.
    pub fn duration(&mut self, key: &str, value: &Spanned<DeValue<'_>>) -> Option<Duration> {
        let text = match value.get_ref() {
            DeValue::Integer(_) => self.integer(key, value)?.get_ref().to_string(),
            DeValue::String(_) => self.string(key, value)?.into_inner(),
            other => {
                self.wrong_type(key, value.span(), "a duration such as \"5s\" or \"10min\"", other);
                return None;
            }
        };
        match parse_duration(&text) {
            Ok(d) => Some(d),
            Err(reason) => {
                self.report(
                    value.span(),
                    ProblemKind::Duration {
                        key: key.to_string(),
                        value: text,
                        reason,
                    },
                );
                None
            }
        }
    }

    pub fn table<'t, 'i>(&mut self, key: &str, value: &'t Spanned<DeValue<'i>>) -> Option<&'t DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.wrong_type(key, value.span(), "a table", other);
                None
            }
        }
    }

    pub fn array<'t, 'i>(&mut self, key: &str, value: &'t Spanned<DeValue<'i>>) -> Option<&'t DeArray<'i>> {
        match value.get_ref() {
            DeValue::Array(a) => Some(a),
            other => {
                self.wrong_type(key, value.span(), "an array", other);
                None
            }
        }
    }

    fn wrong_type(&mut self, key: &str, span: Range<usize>, expected: &'static str, found: &DeValue<'_>) {
        self.report(
            span,
            ProblemKind::WrongType {
                key: key.to_string(),
                expected,
                found: found.type_str(),
            },
        );
    }

    /// Records an unknown-key problem for every key of `table` not in `allowed`.
    pub fn check_keys(&mut self, table: &DeTable<'_>, section: &str, allowed: &'static [&'static str]) {
        for (key, _) in table.iter() {
            if !allowed.contains(&key.get_ref().as_ref()) {
                self.report(
                    key.span(),
                    ProblemKind::UnknownKey {
                        key: key.get_ref().to_string(),
                        section: section.to_string(),
                        expected: allowed,
                    },
                );
            }
        }
    }
}

/// The key and value of `key` in `table`.
pub(crate) fn entry<'t, 'i>(
    table: &'t DeTable<'i>,
    key: &str,
) -> Option<(&'t Spanned<toml::de::DeString<'i>>, &'t Spanned<DeValue<'i>>)> {
    table.iter().find(|(k, _)| k.get_ref() == key)
}

pub(crate) fn get<'t, 'i>(table: &'t DeTable<'i>, key: &str) -> Option<&'t Spanned<DeValue<'i>>> {
    entry(table, key).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.internal".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    /// Interpolates the string value of `k` in `toml`; returns the result or the problems as `line:col: msg`.
    fn check(toml: &str, expected: &str) {
        let mut doc = Doc::new(Path::new("f.toml"), toml, &env);
        let table = doc.parse().expect("valid toml");
        let got = doc.string("k", get(table.get_ref(), "k").expect("key k"));
        let rendered = match doc.finish() {
            Ok(()) => got.map(|s| s.into_inner()).unwrap_or_default(),
            Err(e) => e
                .problems()
                .iter()
                .map(|p| format!("{}:{}: {}", p.at.line, p.at.column, p.kind))
                .collect::<Vec<_>>()
                .join("\n"),
        };
        assert_eq!(rendered, expected, "toml: {toml}");
    }

    #[test]
    fn interpolation() {
        check(r#"k = "postgres://${HOST}/db""#, "postgres://db.internal/db");
        check(r#"k = "a${EMPTY}b""#, "ab");
        check(
            r#"k = "${NOPE:-fallback}/${HOST:-x}/${NOPE:-}""#,
            "fallback/db.internal/",
        );
        check(r#"k = "$${HOST} $5 $""#, "${HOST} $5 $");
        check(
            "\n k = \"x ${NOPE} ${ALSO_NOPE}\"",
            "2:9: environment variable `NOPE` is not set (write `$${` for a literal `${`)\n\
             2:17: environment variable `ALSO_NOPE` is not set (write `$${` for a literal `${`)",
        );
        check(
            r#"k = "x ${HOST""#,
            "1:8: invalid `${...}` reference: missing `}` (write `$${` for a literal `${`)",
        );
        check(
            r#"k = "${1X}""#,
            "1:6: invalid `${...}` reference: variable names are letters, digits and `_` (write `$${` for a literal `${`)",
        );
        // With an escape in the source the column falls back to the start of the string.
        check(
            r#"k = "\t${NOPE}""#,
            "1:5: environment variable `NOPE` is not set (write `$${` for a literal `${`)",
        );
        check(
            "k = 'é ${NOPE}'",
            "1:8: environment variable `NOPE` is not set (write `$${` for a literal `${`)",
        );
    }

    #[test]
    fn syntax_errors_have_positions() {
        let mut doc = Doc::new(Path::new("f.toml"), "a = 1\nb = \n", &env);
        let err = doc.parse().unwrap_err();
        let p = &err.problems()[0];
        assert_eq!((p.at.line, p.at.column), (2, 5), "{err}");
    }
}
