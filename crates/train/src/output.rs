//! Printing that a closed pipe cannot crash. `println!` panics when standard output has gone
//! away (`train ... | head`); these macros write the same lines and drop them instead, so the
//! command goes on (a run finishes, a server keeps serving) as the shell expects.

use std::io::Write;

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

/// Writes `text` and a newline to `stream`. A failed write is dropped: there is nowhere left to
/// report it.
pub fn line(stream: &mut impl Write, text: std::fmt::Arguments) {
    let _ = writeln!(stream, "{text}");
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
        let mut open = Vec::new();
        line(&mut open, format_args!("epoch {}", 1));
        assert_eq!(open, b"epoch 1\n");
    }
}
