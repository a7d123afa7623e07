//! Credentials: the [`Secret`] wrapper and the url redactor.
//!
//! A password lives only inside a [`Secret`] (or inside a `tokio_postgres::Config`, whose `Debug` masks it).
//! Every url goes through [`redact_url`] before it reaches a message, a log line, the ledger or a metric.

use std::fmt;
use std::ops::Range;

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
/// Handles `postgres://user:pw@host/db` and `postgresql://` urls (and any other `scheme://`) (the password ends at
/// the first `@`, as tokio-postgres parses it), `password=` query parameters, and `password=...` in key=value
/// conninfo strings (quoted or not). The key matches in any letter case and, in a url, percent-encoded
/// (`pass%77ord`): libpq and tokio-postgres decode query keys, and a key they refuse is still masked. Anything
/// else passes through unchanged.
pub fn redact_url(url: &str) -> String {
    redact(url).0
}

/// Masks in `message` every password that `url` holds, as written and as decoded (percent escapes, conninfo
/// quotes), for text built from `url` by someone else, such as the driver's parse errors.
pub fn redact_message(message: &str, url: &str) -> String {
    let mut out = message.to_string();
    let mut secrets = Vec::new();
    for raw in redact(url).1 {
        secrets.push(raw.to_string());
        secrets.push(super::url::percent_decode(raw));
        secrets.push(super::url::unquote(raw));
    }
    // Longer first, so a password that contains another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret.as_str(), MASK);
    }
    out
}

/// The redacted text and the password values it masked, as written in `url`.
fn redact(url: &str) -> (String, Vec<&str>) {
    let Some(rest) = strip_url_scheme(url) else {
        return redact_conninfo(url);
    };
    let offset = url.len() - rest.len();
    let mut ranges: Vec<Range<usize>> = Vec::new();
    // tokio-postgres ends the credentials at the first `@`, libpq at the first `@` before any `/`: mask both.
    for creds_end in [
        rest.find('@'),
        rest.find(['@', '/']).filter(|&i| rest[i..].starts_with('@')),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(colon) = rest[..creds_end].find(':') {
            ranges.push(offset + colon + 1..offset + creds_end);
        }
    }
    // Any `key=value` after a `?` or `&` may be a query parameter, wherever the parsers put the query.
    let mut i = 0;
    while let Some(n) = rest[i..].find(['?', '&']) {
        let start = i + n + 1;
        let end = rest[start..].find('&').map_or(rest.len(), |n| start + n);
        if let Some((key, _)) = rest[start..end].split_once('=') {
            if is_password_key(key) {
                ranges.push(offset + start + key.len() + 1..offset + end);
            }
        }
        i = start;
    }
    mask(url, ranges)
}

/// `s` with each of `ranges` replaced by [`MASK`] (overlapping ranges merged), and the masked text.
fn mask(s: &str, mut ranges: Vec<Range<usize>>) -> (String, Vec<&str>) {
    ranges.sort_by_key(|r| (r.start, r.end));
    let mut merged: Vec<Range<usize>> = Vec::new();
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    let mut out = String::with_capacity(s.len());
    let mut secrets = Vec::with_capacity(merged.len());
    let mut at = 0;
    for r in merged {
        out.push_str(&s[at..r.start]);
        out.push_str(MASK);
        secrets.push(&s[r.clone()]);
        at = r.end;
    }
    out.push_str(&s[at..]);
    (out, secrets)
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

/// Whether a url query key names the password: any letter case, percent escapes decoded.
fn is_password_key(key: &str) -> bool {
    if key.contains('%') {
        super::url::percent_decode(key).eq_ignore_ascii_case("password")
    } else {
        key.eq_ignore_ascii_case("password")
    }
}

/// Masks the value of every `password` keyword (any letter case) of a key=value conninfo string, read as
/// tokio-postgres reads it (Unicode whitespace between pairs). A `password` keyword without its `=` still
/// has its next word masked: the string is malformed, and the error that follows would print it.
fn redact_conninfo(s: &str) -> (String, Vec<&str>) {
    let skip_ws = |i: usize| s[i..].find(|c: char| !c.is_whitespace()).map_or(s.len(), |n| i + n);
    let mut ranges = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let start = skip_ws(i);
        let key_end = s[start..]
            .find(|c: char| c.is_whitespace() || c == '=')
            .map_or(s.len(), |n| start + n);
        let is_password = s[start..key_end].eq_ignore_ascii_case("password");
        let mut j = skip_ws(key_end);
        let has_eq = s[j..].starts_with('=');
        if has_eq {
            j = skip_ws(j + 1);
        }
        if has_eq || is_password {
            let end = skip_conninfo_value(s, j);
            if is_password && end > j {
                ranges.push(j..end);
            }
            i = end.max(j).max(key_end);
        } else {
            i = key_end.max(start + 1).min(s.len());
        }
    }
    mask(s, ranges)
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
    // Unquoted, the value ends at any Unicode whitespace, as tokio-postgres reads it.
    let mut chars = s[start..].char_indices();
    while let Some((n, c)) = chars.next() {
        if c.is_whitespace() {
            return start + n;
        }
        if c == '\\' {
            chars.next();
        }
    }
    s.len()
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
        // A password parameter in any letter case, its key percent-encoded (libpq and tokio-postgres decode keys).
        check("postgres://h/d?Password=hunter2", "postgres://h/d?Password=***");
        check("postgres://h/d?PASSWORD=hunter2&x=1", "postgres://h/d?PASSWORD=***&x=1");
        check("postgres://h/d?pass%77ord=hunter2", "postgres://h/d?pass%77ord=***");
        check(
            "postgres://h/d?x=1&%50ass%57ORD=hun%26ter2",
            "postgres://h/d?x=1&%50ass%57ORD=***",
        );
        check("postgres://h/d?passwordx=1&pass=2", "postgres://h/d?passwordx=1&pass=2");
        // An `@` in the query: tokio-postgres reads credentials up to it, libpq finds the query; both are masked.
        check(
            "postgres://h/d?user=a@b&password=hunter2",
            "postgres://h/d?user=a@b&password=***",
        );
        check("postgres://h:1/d?u=a@b&password=pw", "postgres://h:***@b&password=***");
    }

    #[test]
    fn redacts_conninfo() {
        check("host=h password=hunter2 user=u", "host=h password=*** user=u");
        check("password = hunter2", "password = ***");
        check("host=h password='hun ter\\'2' dbname=d", "host=h password=*** dbname=d");
        check("host=h passwordx=1", "host=h passwordx=1");
        check("host=h dbname=password=1", "host=h dbname=password=1");
        check("host=h", "host=h");
        check("host=h PASSWORD=hunter2", "host=h PASSWORD=***");
        check("Password = 'hun ter2' host=h", "Password = *** host=h");
        // tokio-postgres needs no space after a quoted value, and takes any Unicode whitespace between pairs.
        check("host='h'password=hunter2", "host='h'password=***");
        check("host=h\u{3000}password=hunter2", "host=h\u{3000}password=***");
        // Malformed (no `=`), but the parse error would print it.
        check("host=h password hunter2", "host=h password ***");
    }

    #[test]
    fn redact_message_masks_every_form() {
        let url = "postgres://u:p%40ss@h/d?Password='q w'";
        assert_eq!(
            redact_message("user p@ss, p%40ss, 'q w' and q w", url),
            "user ***, ***, *** and ***"
        );
        assert_eq!(
            redact_message("unknown option `x`", "host=h password=''"),
            "unknown option `x`"
        );
    }

    #[test]
    fn secret_is_masked() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }

    mod prop {
        use proptest::prelude::*;

        use super::super::*;
        use crate::config::DbUrl;

        /// Percent-encodes everything but unreserved characters, as a user writes a password into a url.
        fn encode(s: &str) -> String {
            let mut out = String::new();
            for b in s.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        }

        /// `password` with each letter's case from `upper` and each letter percent-encoded where `encoded` says.
        fn key(upper: &[bool], encoded: &[bool]) -> String {
            let mut out = String::new();
            for (i, c) in "password".chars().enumerate() {
                let c = if upper[i] { c.to_ascii_uppercase() } else { c };
                if encoded[i] {
                    out.push_str(&format!("%{:02X}", c as u8));
                } else {
                    out.push(c);
                }
            }
            out
        }

        /// Every place a connection string can hold `pw`, as libpq and tokio-postgres read it.
        fn forms(pw: &str, upper: &[bool], encoded: &[bool], position: usize) -> Vec<String> {
            let enc = encode(pw);
            let url_key = key(upper, encoded);
            let conninfo_key = key(upper, &[false; 8]);
            let quoted = format!("'{}'", pw.replace('\\', "\\\\").replace('\'', "\\'"));
            let mut params = vec!["application_name=x".to_string(), "connect_timeout=5".to_string()];
            params.insert(position % 3, format!("{url_key}={enc}"));
            let mut out = vec![
                format!("postgres://migrator:{enc}@db.internal:5432/app?sslmode=disable"),
                format!("postgresql://migrator:{enc}@db.internal/app"),
                format!("postgres://migrator@db.internal/app?{}", params.join("&")),
                format!("host=db.internal {conninfo_key}={quoted} dbname=app"),
                format!("{conninfo_key} = {quoted}"),
                format!("host=db.internal user=u {conninfo_key}={quoted}"),
            ];
            if !pw.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
                out.push(format!("host=db.internal {conninfo_key}={pw} dbname=app"));
            }
            out
        }

        proptest! {
            #[test]
            fn password_never_shown(
                tail in "[ -~\u{e9}\u{3000}\u{1F600}]{0,16}",
                upper in proptest::collection::vec(any::<bool>(), 8),
                encoded in proptest::collection::vec(any::<bool>(), 8),
                position in 0usize..3,
            ) {
                // A marker keeps the password from matching the url's other text by chance.
                let pw = format!("Zq9{tail}");
                let hidden = [pw.clone(), encode(&pw)];
                for s in forms(&pw, &upper, &encoded, position) {
                    let mut shown = vec![redact_url(&s)];
                    match DbUrl::parse(&s) {
                        Ok(u) => shown.push(format!("{u} {u:?} {:?}", u.pg_config())),
                        Err(kind) => shown.push(format!("{kind} {kind:?}")),
                    }
                    for text in &shown {
                        for secret in &hidden {
                            prop_assert!(!text.contains(secret.as_str()), "{secret:?} shown in {text:?} (from {s:?})");
                        }
                    }
                }
            }
        }
    }
}
