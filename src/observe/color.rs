//! Whether output is coloured: `--color auto|always|never` and `NO_COLOR`, decided once by `main` for stdout
//! and stderr.
//!
//! The decision is stored in the `console` crate's switches, which indicatif's bars read, and is handed to the
//! logger and the summary explicitly. A flag beats the environment: `--color always` colours even with
//! `NO_COLOR` set, as <https://no-color.org> allows.

use std::io::IsTerminal;

/// The `--color` setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ColorChoice {
    /// Colour a terminal, unless `NO_COLOR` is set to a non-empty value.
    #[default]
    Auto,
    Always,
    Never,
}

/// Whether one stream is coloured. `no_color` is the value of `NO_COLOR`, if set (an empty value does not
/// count, as the convention says).
pub fn resolve(choice: ColorChoice, no_color: Option<&str>, is_terminal: bool) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => is_terminal && no_color.is_none_or(str::is_empty),
    }
}

/// What [`apply`] decided, per stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Colors {
    pub stdout: bool,
    pub stderr: bool,
}

/// Decides for stdout and stderr and sets the `console` switches that progress bars read. Call once, from
/// `main`, before anything is drawn.
pub fn apply(choice: ColorChoice, no_color: Option<&str>) -> Colors {
    let colors = Colors {
        stdout: resolve(choice, no_color, std::io::stdout().is_terminal()),
        stderr: resolve(choice, no_color, std::io::stderr().is_terminal()),
    };
    console::set_colors_enabled(colors.stdout);
    console::set_colors_enabled_stderr(colors.stderr);
    colors
}

/// Whether stdout is coloured, as [`apply`] decided (without `apply`: a terminal without `CLICOLOR=0`).
pub fn is_stdout_colored() -> bool {
    console::colors_enabled()
}

/// Whether stderr is coloured, as [`apply`] decided.
pub fn is_stderr_colored() -> bool {
    console::colors_enabled_stderr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_over_no_color_over_terminal() {
        use ColorChoice::*;
        for (choice, no_color, is_terminal, expected) in [
            (Auto, None, true, true),
            (Auto, None, false, false),
            (Auto, Some("1"), true, false),
            (Auto, Some("anything"), true, false),
            // An empty NO_COLOR does not count.
            (Auto, Some(""), true, true),
            (Always, Some("1"), false, true),
            (Never, None, true, false),
        ] {
            assert_eq!(
                resolve(choice, no_color, is_terminal),
                expected,
                "{choice:?} NO_COLOR={no_color:?} terminal={is_terminal}"
            );
        }
    }
}
