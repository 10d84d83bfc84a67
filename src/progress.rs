//! The progress bar of `sum` on standard error: files, bytes read (all threads), rate, ETA.
//!
//! Whether it is drawn is the plan's decision (`--progress`: always, never, or when standard
//! error is a terminal). On a terminal indicatif draws it in place. `--progress always` must
//! also work when standard error is a pipe or a log file, where indicatif's own terminal target
//! stays silent; there the bar is redrawn after a carriage return, which log viewers and
//! `less -r` show as updates.

use indicatif::{
    HumanBytes, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle, TermLike,
};
use std::io::{self, IsTerminal, Write};
use std::time::Duration;

/// A bar for `len` records of `total` bytes (0 if unknown), or a hidden one when `draw` is
/// false. `bytes_read` counts the bytes read so far by every thread (the engine's counter:
/// `engine::source::bytes_read`).
pub fn bar(draw: bool, len: usize, total: u64, bytes_read: fn() -> u64) -> ProgressBar {
    if !draw {
        return ProgressBar::hidden();
    }
    let target = if io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::term_like(Box::new(PlainStderr))
    };
    let bar = ProgressBar::with_draw_target(Some(len as u64), target);
    let start = bytes_read();
    let bytes = move || bytes_read().saturating_sub(start);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} files, {bytes_read}, {byte_rate}, ETA {byte_eta}",
        )
        .expect("valid template")
        .with_key("bytes_read", move |_: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = if total > 0 {
                write!(w, "{} of {}", HumanBytes(bytes()), HumanBytes(total))
            } else {
                write!(w, "{}", HumanBytes(bytes()))
            };
        })
        .with_key("byte_rate", move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let secs = state.elapsed().as_secs_f64().max(1e-3);
            let _ = write!(w, "{}/s", HumanBytes((bytes() as f64 / secs) as u64));
        })
        .with_key("byte_eta", move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            // From bytes, not files: one large file would otherwise show no estimate at all.
            let done = bytes();
            let secs = state.elapsed().as_secs_f64();
            let eta = if total > done && done > 0 {
                HumanDuration(Duration::from_secs_f64(secs * (total - done) as f64 / done as f64)).to_string()
            } else {
                "-".to_string()
            };
            let _ = write!(w, "{eta}");
        })
        .progress_chars("=> "),
    );
    // Redraw while a large file is hashed, not only when a record completes.
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

/// Draws the final state and leaves it on its own line.
pub fn finish(bar: &ProgressBar) {
    if bar.is_hidden() {
        return;
    }
    bar.finish();
    if !io::stderr().is_terminal() {
        let _ = writeln!(io::stderr());
    }
}

/// Standard error that is not a terminal: no cursor movement, a carriage return per redraw.
#[derive(Debug)]
struct PlainStderr;

impl TermLike for PlainStderr {
    fn width(&self) -> u16 {
        160
    }
    fn move_cursor_up(&self, _n: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _n: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _n: usize) -> io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _n: usize) -> io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> io::Result<()> {
        writeln!(io::stderr(), "{s}")
    }
    fn write_str(&self, s: &str) -> io::Result<()> {
        write!(io::stderr(), "{s}")
    }
    fn clear_line(&self) -> io::Result<()> {
        write!(io::stderr(), "\r")
    }
    fn flush(&self) -> io::Result<()> {
        io::stderr().flush()
    }
}
