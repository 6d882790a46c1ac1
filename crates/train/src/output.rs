//! Printing that a closed pipe cannot crash. `println!` panics when standard output has gone
//! away (`train ... | head`); these macros write the same lines and drop them instead, so the
//! command goes on (a run finishes, a server keeps serving) as the shell expects. Output that
//! fails otherwise (a full disk) fails the command when it ends ([`failure`]).

use std::io::{ErrorKind, Write};
use std::sync::OnceLock;

/// Prints a line to standard output, like `println!`, ignoring a closed pipe.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::output::line(&mut std::io::stdout(), format_args!($($arg)*))
    };
}

/// Prints a line to standard error, like `eprintln!`, ignoring a closed pipe.
macro_rules! say_err {
    ($($arg:tt)*) => {
        $crate::output::line(&mut std::io::stderr(), format_args!($($arg)*))
    };
}

/// The first failed write other than to a closed pipe (a full disk, a device that refuses).
static FAILED: OnceLock<String> = OnceLock::new();

/// Writes `text` and a newline to `stream`. A closed pipe drops the line: its reader has what it
/// wanted. Any other failure drops it too, so that the command goes on, and is kept for
/// [`failure`] to report when it ends.
pub fn line(stream: &mut impl Write, text: std::fmt::Arguments) {
    if let Err(e) = writeln!(stream, "{text}")
        && e.kind() != ErrorKind::BrokenPipe
    {
        let _ = FAILED.set(e.to_string());
    }
}

/// Why output could not be written, if it could not (a closed pipe is no failure).
pub fn failure() -> Option<&'static str> {
    FAILED.get().map(String::as_str)
}

/// `1234567` as `1,234,567`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream whose reader has gone away.
    struct ClosedPipe;

    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn a_line_to_a_closed_pipe_is_dropped() {
        line(&mut ClosedPipe, format_args!("epoch {}", 1));
        assert_eq!(failure(), None);
        let mut open = Vec::new();
        line(&mut open, format_args!("epoch {}", 1));
        assert_eq!(open, b"epoch 1\n");
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_256_080), "1,256,080");
    }
}
