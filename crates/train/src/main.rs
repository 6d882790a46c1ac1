//! `train`: trains, evaluates, times and exports the course's CNNs from a TOML config.

use std::io::Write;
use std::process::ExitCode;

// Training allocates and frees activation-sized buffers at every step. glibc's malloc hands the
// large ones back to the kernel and faults them in again (zeroed pages, TLB shootdowns); mimalloc
// keeps them for reuse once told never to purge freed memory (see `keep_freed_memory`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the `mi_option_e` enum of the mimalloc 3 header that
/// libmimalloc-sys 0.1.49 builds (its Rust bindings do not name it; the version is pinned).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never returns freed memory to the system: a run's working set is allocated again at every
/// step, and purging it after mimalloc's default delay made each step fault it back in.
fn keep_freed_memory() {
    // SAFETY: sets a process-wide allocator option; mimalloc allows this at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// Mesa's Vulkan drivers look for a display server when wgpu opens them, and where
/// XDG_RUNTIME_DIR is unset (a headless machine, a container) print "error: XDG_RUNTIME_DIR is
/// invalid or not set" although compute needs no display. Pointing it at the temporary folder,
/// which holds no display socket, keeps that error-looking line out of runs with nothing wrong.
fn quiet_display_lookup() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: the first call in `main`, before any other thread exists.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
}

fn main() -> ExitCode {
    quiet_display_lookup();
    keep_freed_memory();
    let args: Vec<_> = std::env::args_os().collect();
    if let Some(message) = train::misspelt_command(&args) {
        let _ = writeln!(std::io::stderr(), "error: {message}");
        return ExitCode::from(2);
    }
    let cli = train::parse(&args).unwrap_or_else(|error| error.exit());
    match train::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // `{:#}` prints the whole chain: what failed, then why. A closed stderr cannot be
            // told; the exit code still says it.
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
