//! Credentials: the [`Secret`] wrapper and the url redactor.
//!
//! A password lives only inside a [`Secret`] (or inside a `tokio_postgres::Config`, whose `Debug` masks it).
//! Every url goes through [`redact_url`] before it reaches a message, a log line, the ledger or a metric.

use std::fmt;

/// The mask printed in place of a credential.
pub const MASK: &str = "***";

/// A credential. `Debug` and `Display` print `***`; only [`Secret::expose`] reveals the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The plain value. Call it only where the value is handed to the database driver.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// Replaces every password in a PostgreSQL connection string with `***`.
///
/// Handles `postgres://user:pw@host/db` and `postgresql://` urls (and any other `scheme://`) (the password ends at the first `@`, as
/// tokio-postgres parses it), `password=` query parameters, and `password=...` in key=value conninfo strings
/// (quoted or not). Anything else passes through unchanged.
pub fn redact_url(url: &str) -> String {
    if let Some(rest) = strip_url_scheme(url) {
        let scheme_len = url.len() - rest.len();
        let mut out = String::with_capacity(url.len());
        out.push_str(&url[..scheme_len]);
        let rest = match rest.find('@') {
            Some(at) => {
                let creds = &rest[..at];
                match creds.find(':') {
                    Some(colon) => {
                        out.push_str(&creds[..colon + 1]);
                        out.push_str(MASK);
                    }
                    None => out.push_str(creds),
                }
                out.push('@');
                &rest[at + 1..]
            }
            None => rest,
        };
        out.push_str(&redact_query(rest));
        out
    } else {
        redact_conninfo(url)
    }
}

/// The part after `scheme://`, for any scheme, so a mistyped scheme is still redacted.
fn strip_url_scheme(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    let is_scheme = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    is_scheme.then_some(rest)
}

fn redact_query(rest: &str) -> String {
    let Some(q) = rest.find('?') else {
        return rest.to_string();
    };
    let mut out = rest[..=q].to_string();
    let params: Vec<String> = rest[q + 1..]
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((key, _)) if key == "password" => format!("{key}={MASK}"),
            _ => param.to_string(),
        })
        .collect();
    out.push_str(&params.join("&"));
    out
}

fn redact_conninfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let at_word_start = i == 0 || bytes[i - 1].is_ascii_whitespace();
        if at_word_start && s[i..].starts_with("password") {
            let mut j = i + "password".len();
            while j < s.len() && bytes[j] == b' ' {
                j += 1;
            }
            if j < s.len() && bytes[j] == b'=' {
                j += 1;
                while j < s.len() && bytes[j] == b' ' {
                    j += 1;
                }
                out.push_str(&s[i..j]);
                out.push_str(MASK);
                i = skip_conninfo_value(s, j);
                continue;
            }
        }
        let ch = s[i..].chars().next().unwrap_or(' ');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Returns the byte index just past a conninfo value starting at `start`.
pub(crate) fn skip_conninfo_value(s: &str, start: usize) -> usize {
    let bytes = s.as_bytes();
    let mut i = start;
    if i < s.len() && bytes[i] == b'\'' {
        i += 1;
        while i < s.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'\'' => return i + 1,
                _ => i += 1,
            }
        }
        return s.len();
    }
    while i < s.len() && !bytes[i].is_ascii_whitespace() {
        if bytes[i] == b'\\' {
            i += 1;
        }
        i += 1;
    }
    i.min(s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        assert_eq!(redact_url(input), expected, "input: {input}");
    }

    #[test]
    fn redacts_urls() {
        check("postgres://u:hunter2@h:5432/db", "postgres://u:***@h:5432/db");
        check(
            "postgresql://u:hunter2@h/db?sslmode=require",
            "postgresql://u:***@h/db?sslmode=require",
        );
        check("postgres://u@h/db", "postgres://u@h/db");
        check("postgres://h/db", "postgres://h/db");
        check("postgres://u:@h/db", "postgres://u:***@h/db");
        check("postgres://u:p:w@h/db", "postgres://u:***@h/db");
        check(
            "postgres://h/db?user=u&password=hunter2&x=1",
            "postgres://h/db?user=u&password=***&x=1",
        );
        check("postgres://u:a@b@h/db", "postgres://u:***@b@h/db");
        check("mysql://u:hunter2@h/db", "mysql://u:***@h/db");
    }

    #[test]
    fn redacts_conninfo() {
        check("host=h password=hunter2 user=u", "host=h password=*** user=u");
        check("password = hunter2", "password = ***");
        check("host=h password='hun ter\\'2' dbname=d", "host=h password=*** dbname=d");
        check("host=h passwordx=1", "host=h passwordx=1");
        check("host=h dbname=password=1", "host=h dbname=password=1");
        check("host=h", "host=h");
    }

    #[test]
    fn secret_is_masked() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }
}
