//! Section checksums: a persistent, versioned format stored next to every applied revision.
//!
//! Changing anything here changes every stored checksum, so a change needs a new version prefix, and the
//! old version must stay computable.

use sha2::{Digest, Sha256};

/// Prefix of checksums computed by [`checksum`].
pub const CHECKSUM_VERSION: &str = "v1";

/// Checksum of one section's text: `v1:` followed by the lowercase hex SHA-256 of [`normalise`]`(text)`.
///
/// Whitespace at line ends, line-ending style, a byte-order mark, and blank lines before or after the SQL do
/// not change it; any other edit does (including comments and blank lines between statements).
pub fn checksum(text: &str) -> String {
    let digest = Sha256::digest(normalise(text).as_bytes());
    format!("{CHECKSUM_VERSION}:{}", hex::encode(digest))
}

/// Normalisation for checksum version `v1`, in this order:
///
/// 1. strip one leading UTF-8 byte-order mark (U+FEFF);
/// 2. replace every CRLF with LF;
/// 3. split at LF and remove trailing spaces, tabs, CRs, vertical tabs and form feeds from each line;
/// 4. drop lines that are empty after step 3 at the start and at the end;
/// 5. join the remaining lines with LF, with no final LF.
pub fn normalise(text: &str) -> String {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let text = text.replace("\r\n", "\n");
    let lines: Vec<&str> = text
        .split('\n')
        .map(|line| line.trim_end_matches([' ', '\t', '\r', '\x0b', '\x0c']))
        .collect();
    let first = lines.iter().position(|l| !l.is_empty());
    let last = lines.iter().rposition(|l| !l.is_empty());
    match (first, last) {
        (Some(first), Some(last)) => lines[first..=last].join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected_normalised: &str) {
        assert_eq!(normalise(input), expected_normalised, "input: {input:?}");
        assert_eq!(checksum(input), checksum(expected_normalised));
    }

    #[test]
    fn normalisation() {
        check("", "");
        check("\n\n  \n", "");
        check("SELECT 1;", "SELECT 1;");
        check("\u{feff}SELECT 1;\r\n", "SELECT 1;");
        check("\n\nSELECT 1;  \t\n\nSELECT 2;\n\n\n", "SELECT 1;\n\nSELECT 2;");
        check("a\r\nb\r\n", "a\nb");
        check("  indented\n", "  indented");
    }

    #[test]
    fn format_is_versioned_sha256() {
        // Pinned: this value is stored in databases, so it must never change.
        assert_eq!(
            checksum(""),
            "v1:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            checksum("SELECT 1;\n"),
            format!("v1:{}", hex::encode(Sha256::digest(b"SELECT 1;")))
        );
    }

    #[test]
    fn real_edits_change_it() {
        let base = checksum("SELECT 1;\nSELECT 2;");
        assert_ne!(base, checksum("SELECT 1;\n\nSELECT 2;"));
        assert_ne!(base, checksum("SELECT 1;\n SELECT 2;"));
        assert_ne!(base, checksum("SELECT 1; -- x\nSELECT 2;"));
        assert_ne!(base, checksum("select 1;\nSELECT 2;"));
    }
}
