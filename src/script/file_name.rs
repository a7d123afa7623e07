//! File names for new revisions: Alembic's `file_template` (a Python %-format string) and message slugs.

use chrono::{Datelike, NaiveDateTime, Timelike};

/// The default `file_template`: Alembic's with the seconds added, so revisions made in the same minute still
/// sort by creation time (`20260307_090502_3f2a9c1b7d4e_add_orders_table.sql`).
pub const DEFAULT_FILE_TEMPLATE: &str =
    "%(year)d%(month).2d%(day).2d_%(hour).2d%(minute).2d%(second).2d_%(rev)s_%(slug)s";

/// Alembic's own default, to the minute: what `migrations/` was named with (the repository's flotilla.toml pins
/// it), and what a project adopted from Alembic may want to keep.
pub const MINUTE_FILE_TEMPLATE: &str = "%(year)d%(month).2d%(day).2d_%(hour).2d%(minute).2d_%(rev)s_%(slug)s";

/// Longest slug [`slugify`] returns, as Alembic's default `truncate_slug_length`.
pub const TRUNCATE_SLUG_LENGTH: usize = 40;

/// Values a file template can use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileNameParts {
    pub rev: String,
    pub slug: String,
    /// Creation time; `epoch` reads it as UTC.
    pub date: NaiveDateTime,
}

/// Why a file template cannot be rendered; `at` is the byte offset of the offending `%` in the template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileTemplateError {
    #[error(
        "unknown name `{name}` in file template (known: rev, slug, year, month, day, hour, minute, second, epoch)"
    )]
    UnknownName { name: String },
    #[error("unsupported conversion `{spec}` in file template at byte {at}; use `%(name)s`, `%(name)d`, `%(name).2d` or `%(name)02d`")]
    BadSpec { spec: String, at: usize },
    #[error("`{name}` is text, so `%(name){conversion}` cannot format it; use `%({name})s`")]
    NotANumber { name: String, conversion: char },
    #[error("file template must produce a file name, not a path (it contains `{0}`)")]
    PathSeparator(char),
}

enum Value {
    Text(String),
    Number(i64),
}

impl FileNameParts {
    fn value(&self, name: &str) -> Option<Value> {
        let d = &self.date;
        let number = |n: u32| Some(Value::Number(i64::from(n)));
        match name {
            "rev" => Some(Value::Text(self.rev.clone())),
            "slug" => Some(Value::Text(self.slug.clone())),
            "year" => Some(Value::Number(i64::from(d.year()))),
            "month" => number(d.month()),
            "day" => number(d.day()),
            "hour" => number(d.hour()),
            "minute" => number(d.minute()),
            "second" => number(d.second()),
            "epoch" => Some(Value::Number(d.and_utc().timestamp())),
            _ => None,
        }
    }
}

/// Render `template` as Alembic renders `file_template`, then append `.sql`.
///
/// Supports `%%` and `%(name)<flags><width>.<precision><conversion>` with flags `0` and `-` and conversions
/// `s`, `d` and `i`, as Python's `%` operator does. Unlike Alembic's ini file, no `%%` doubling is needed for
/// the config file. Returns [`FileTemplateError`] for unknown names, other conversions, `%d` on text, or a
/// `/` or `\` in the template.
pub fn render_file_name(template: &str, parts: &FileNameParts) -> Result<String, FileTemplateError> {
    if let Some(c) = template.chars().find(|c| *c == '/' || *c == '\\') {
        return Err(FileTemplateError::PathSeparator(c));
    }
    let mut out = String::new();
    let mut rest = template;
    while let Some(percent) = rest.find('%') {
        let at = template.len() - rest.len() + percent;
        out.push_str(&rest[..percent]);
        let after = &rest[percent + 1..];
        if let Some(tail) = after.strip_prefix('%') {
            out.push('%');
            rest = tail;
            continue;
        }
        let bad_spec = |len: usize| FileTemplateError::BadSpec {
            spec: template[at..(at + 1 + len).min(template.len())].to_string(),
            at,
        };
        let Some(named) = after.strip_prefix('(') else {
            return Err(bad_spec(after.chars().next().map_or(0, char::len_utf8)));
        };
        let close = named.find(')').ok_or_else(|| bad_spec(after.len()))?;
        let name = &named[..close];
        let spec_start = &named[close + 1..];
        let spec_len = spec_start
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
            .ok_or_else(|| bad_spec(after.len()))?;
        let conversion = spec_start[spec_len..].chars().next().unwrap_or(' ');
        let consumed = 1 + close + 1 + spec_len + conversion.len_utf8();
        let spec = parse_spec(&spec_start[..spec_len]).ok_or_else(|| bad_spec(consumed))?;
        let value = parts
            .value(name)
            .ok_or_else(|| FileTemplateError::UnknownName { name: name.to_string() })?;
        let formatted = match (conversion, value) {
            ('s', Value::Text(text)) => spec.text(&text),
            ('s', Value::Number(n)) => spec.text(&n.to_string()),
            ('d' | 'i', Value::Number(n)) => spec.number(n),
            ('d' | 'i', Value::Text(_)) => {
                return Err(FileTemplateError::NotANumber {
                    name: name.to_string(),
                    conversion,
                });
            }
            _ => return Err(bad_spec(consumed)),
        };
        out.push_str(&formatted);
        rest = &after[consumed..];
    }
    out.push_str(rest);
    out.push_str(".sql");
    Ok(out)
}

/// Flags, width and precision of one conversion.
#[derive(Default)]
struct Spec {
    is_zero_padded: bool,
    is_left_aligned: bool,
    width: usize,
    precision: Option<usize>,
}

fn parse_spec(spec: &str) -> Option<Spec> {
    let mut result = Spec::default();
    let mut rest = spec;
    loop {
        if let Some(r) = rest.strip_prefix('0') {
            result.is_zero_padded = true;
            rest = r;
        } else if let Some(r) = rest.strip_prefix('-') {
            result.is_left_aligned = true;
            rest = r;
        } else {
            break;
        }
    }
    let (width, precision) = match rest.split_once('.') {
        Some((w, p)) => (w, Some(p)),
        None => (rest, None),
    };
    if !width.is_empty() {
        result.width = width.parse().ok()?;
    }
    if let Some(p) = precision {
        // Python reads `%.d` as precision 0.
        result.precision = Some(if p.is_empty() { 0 } else { p.parse().ok()? });
    }
    Some(result)
}

impl Spec {
    fn pad(&self, body: String, zero_fill_after: Option<usize>) -> String {
        let len = body.chars().count();
        if len >= self.width {
            return body;
        }
        let fill = self.width - len;
        if self.is_left_aligned {
            format!("{body}{}", " ".repeat(fill))
        } else if let Some(sign_len) = zero_fill_after.filter(|_| self.is_zero_padded) {
            format!("{}{}{}", &body[..sign_len], "0".repeat(fill), &body[sign_len..])
        } else {
            format!("{}{body}", " ".repeat(fill))
        }
    }

    fn text(&self, text: &str) -> String {
        let text: String = match self.precision {
            Some(p) => text.chars().take(p).collect(),
            None => text.to_string(),
        };
        self.pad(text, None)
    }

    fn number(&self, n: i64) -> String {
        let sign = if n < 0 { "-" } else { "" };
        let digits = n.unsigned_abs().to_string();
        let min_digits = self.precision.unwrap_or(0);
        let zeros = "0".repeat(min_digits.saturating_sub(digits.len()));
        self.pad(format!("{sign}{zeros}{digits}"), Some(sign.len()))
    }
}

/// A file-name-safe slug of a revision message, as Alembic makes it: runs of letters, digits and `_` joined
/// by `_`, lowercased. Longer than [`TRUNCATE_SLUG_LENGTH`] characters, it is cut there and then back to the
/// last `_`, so words stay whole. Unlike Alembic, leading and trailing `_` are removed.
pub fn slugify(message: &str) -> String {
    let words: Vec<&str> = message
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    let slug = words.join("_").to_lowercase();
    let slug = if slug.chars().count() > TRUNCATE_SLUG_LENGTH {
        let cut: String = slug.chars().take(TRUNCATE_SLUG_LENGTH).collect();
        match cut.rsplit_once('_') {
            Some((head, _)) => head.to_string(),
            None => cut,
        }
    } else {
        slug
    };
    slug.trim_matches('_').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> FileNameParts {
        FileNameParts {
            rev: "3f2a9c1b7d4e".to_string(),
            slug: "add_orders_table".to_string(),
            date: chrono::NaiveDate::from_ymd_opt(2026, 3, 7)
                .unwrap()
                .and_hms_micro_opt(9, 5, 2, 123_456)
                .unwrap(),
        }
    }

    fn check(template: &str, expected: Result<&str, FileTemplateError>) {
        let got = render_file_name(template, &parts());
        assert_eq!(got.as_deref().map_err(Clone::clone), expected, "template: {template:?}");
    }

    #[test]
    fn templates() {
        check(
            DEFAULT_FILE_TEMPLATE,
            Ok("20260307_090502_3f2a9c1b7d4e_add_orders_table.sql"),
        );
        check(
            MINUTE_FILE_TEMPLATE,
            Ok("20260307_0905_3f2a9c1b7d4e_add_orders_table.sql"),
        );
        check("%(rev)s", Ok("3f2a9c1b7d4e.sql"));
        check("%(epoch)d_%(rev)s", Ok("1772874302_3f2a9c1b7d4e.sql"));
        check("%(year)d-%(month)02d-%(day)02d_%(second).2d", Ok("2026-03-07_02.sql"));
        check("100%%_%(slug).3s", Ok("100%_add.sql"));
        check(
            "%(minute)4d|%(minute)-4d|%(minute)04d|%(minute).3d|%(rev)5.2s",
            Ok("   5|5   |0005|005|   3f.sql"),
        );
        check("%(year)s_%(hour)i", Ok("2026_9.sql"));
        check("plain", Ok("plain.sql"));
    }

    #[test]
    fn default_names_sort_by_creation_within_a_minute() {
        let at = |second: u32, rev: &str| FileNameParts {
            rev: rev.into(),
            slug: "x".into(),
            date: parts().date.with_second(second).unwrap(),
        };
        // The later revision has the smaller id: only the seconds can put it second.
        let first = render_file_name(DEFAULT_FILE_TEMPLATE, &at(7, "ffff")).unwrap();
        let second = render_file_name(DEFAULT_FILE_TEMPLATE, &at(41, "0000")).unwrap();
        assert!(first < second, "{first} {second}");
    }

    #[test]
    fn template_errors() {
        let unknown = |name: &str| Err(FileTemplateError::UnknownName { name: name.to_string() });
        let bad = |spec: &str, at| {
            Err(FileTemplateError::BadSpec {
                spec: spec.to_string(),
                at,
            })
        };
        check("%(revision)s", unknown("revision"));
        check("%(rev)x", bad("%(rev)x", 0));
        check("ab%(rev)", bad("%(rev)", 2));
        check("%(rev", bad("%(rev", 0));
        check("%s", bad("%s", 0));
        check("50%", bad("%", 2));
        check("%(rev)1.2.3s", bad("%(rev)1.2.3s", 0));
        check(
            "%(rev)d",
            Err(FileTemplateError::NotANumber {
                name: "rev".to_string(),
                conversion: 'd',
            }),
        );
        check("%(year)d/%(rev)s", Err(FileTemplateError::PathSeparator('/')));
    }

    #[test]
    fn slugs() {
        let check = |message: &str, expected: &str| assert_eq!(slugify(message), expected, "{message:?}");
        check("add orders table", "add_orders_table");
        check("Add ABCD data/info!", "add_abcd_data_info");
        check("  --weird   spacing--  ", "weird_spacing");
        check("__init__ things", "init___things");
        check("", "");
        check("Ünïcode Wörds ok", "ünïcode_wörds_ok");
        check(
            "this message is much longer than forty characters in total",
            "this_message_is_much_longer_than_forty",
        );
        check("x".repeat(50).as_str(), &"x".repeat(40));
        check(
            "abcdefghij abcdefghij abcdefghij abcdefghij",
            "abcdefghij_abcdefghij_abcdefghij",
        );
    }
}
