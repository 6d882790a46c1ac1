//! Panics during a command, through one hook ([`install_hook`]):
//! - A panic on a data-loader thread fails the run. Burn's loader ends its epoch early when one
//!   of its worker threads dies, and its learner goes on: without this, a run whose loader
//!   panicked would train on epochs of no images, save checkpoints and a summary, and exit 0.
//!   Only Burn's loader threads are watched: CubeCL catches panics of its own on other threads
//!   (kernel definitions it cannot compile, for one) and goes on correctly.
//! - Burn's remote backend panics when a worker goes away. The commands run on workers under
//!   [`catch`], quietly: it keeps those panics from stderr, and the command names the worker in
//!   its own error; a panic it cannot explain is printed as Rust prints it, and goes on.
//! - Every panic goes into the run's `experiment.log` when one is open ([`RunLog`]).

use std::any::Any;
use std::fs::OpenOptions;
use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once, OnceLock};

use burn::train::{ApplicationLoggerInstaller, Interrupter};
use tracing_subscriber::filter::{LevelFilter, filter_fn};
use tracing_subscriber::prelude::*;

/// The name Burn's data loader gives each of its worker threads, followed by the index.
const LOADER_THREAD: &str = "dataloader-";

/// The first loader panic's message, and the run to stop when one happens.
static FIRST: Mutex<Option<String>> = Mutex::new(None);
static RUN: Mutex<Option<Interrupter>> = Mutex::new(None);

/// The last epoch that ended before any loader panic: epochs up to it are whole.
static WHOLE_EPOCHS: AtomicUsize = AtomicUsize::new(0);

/// How many quiet [`catch`] calls are running, and what the panics they kept from stderr would
/// have printed.
static QUIET: AtomicUsize = AtomicUsize::new(0);
static KEPT: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Installs the process's panic hook, once: it logs every panic, records a loader thread's and
/// stops the run ([`stop_on_loader_panic`]), and keeps panics from stderr while a quiet
/// [`catch`] runs. Other panics are printed as before.
pub fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let print = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Into the run's experiment.log, where one is open; nowhere otherwise.
            tracing::error!("PANIC => {info}");
            let thread = std::thread::current();
            let on_loader = thread.name().is_some_and(|n| n.starts_with(LOADER_THREAD));
            if on_loader {
                lock(&FIRST).get_or_insert(format!("{}{}", message(info.payload()), at(info)));
                if let Some(run) = lock(&RUN).as_ref() {
                    run.stop(Some("a data-loader thread panicked"));
                }
            } else if QUIET.load(Ordering::SeqCst) > 0 {
                lock(&KEPT).push(report(info));
                return;
            }
            print(info);
        }));
    });
}

/// From now on, a panic on a loader thread is recorded ([`loader_panic`]) and stops
/// `interrupter`'s run after its current step. The panic is still printed as Rust prints it.
pub fn stop_on_loader_panic(interrupter: &Interrupter) {
    install_hook();
    *lock(&RUN) = Some(interrupter.clone());
}

/// A panic that ended [`catch`]'s closure.
pub struct Caught {
    payload: Box<dyn Any + Send>,
    /// What Rust would have printed for each panic kept from stderr meanwhile.
    reports: Vec<String>,
}

impl Caught {
    /// The panic's message.
    pub fn message(&self) -> String {
        message(&*self.payload)
    }

    /// Prints what was kept from stderr and goes on unwinding: for a panic the caller cannot
    /// explain.
    pub fn resume(self) -> ! {
        print_reports(self.reports);
        std::panic::resume_unwind(self.payload)
    }
}

/// `f`'s result, or the panic that ended it. `quietly`, panics on any thread but a loader's
/// are not printed while `f` runs: the caller explains the panic in its own error, or prints
/// them with [`Caught::resume`]; those of a closure that still returns are printed afterwards.
/// Only for runs on workers, where a panic is expected: elsewhere, a thread's panic that left
/// the run waiting would say nothing.
pub fn catch<T>(quietly: bool, f: impl FnOnce() -> T) -> Result<T, Caught> {
    install_hook();
    let quiet = usize::from(quietly);
    QUIET.fetch_add(quiet, Ordering::SeqCst);
    let result = std::panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.fetch_sub(quiet, Ordering::SeqCst);
    let reports = std::mem::take(&mut *lock(&KEPT));
    match result {
        Ok(value) => {
            print_reports(reports);
            Ok(value)
        }
        Err(payload) => Err(Caught { payload, reports }),
    }
}

/// What Rust prints for a panic: the thread, the place, the message, and the backtrace where
/// `RUST_BACKTRACE` asks for one.
fn report(info: &PanicHookInfo) -> String {
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("<unnamed>");
    let backtrace = std::backtrace::Backtrace::capture();
    let backtrace = match backtrace.status() {
        std::backtrace::BacktraceStatus::Captured => format!("stack backtrace:\n{backtrace}"),
        _ => String::new(),
    };
    format!(
        "thread '{name}' panicked{}:\n{}\n{backtrace}",
        at(info),
        message(info.payload())
    )
}

/// ` at file:line:column`, where the panic says.
fn at(info: &PanicHookInfo) -> String {
    info.location()
        .map(|l| format!(" at {l}"))
        .unwrap_or_default()
}

fn print_reports(reports: Vec<String>) {
    for report in reports {
        eprintln!("\n{report}");
    }
}

/// Burn's `experiment.log` in a run's folder, written as Burn's own logger writes it but without
/// the panic hook Burn installs with it, whose notice about the log came before the project's
/// own error (a lost worker's, say). Panics reach the log through [`install_hook`]'s hook,
/// which [`stop_on_loader_panic`] installs before a run starts.
pub struct RunLog(pub PathBuf);

impl ApplicationLoggerInstaller for RunLog {
    fn install(&self) -> Result<(), String> {
        let file = (OpenOptions::new().create(true).append(true))
            .open(&self.0)
            .map_err(|e| format!("{}: {e}", self.0.display()))?;
        // As Burn's: info and above, but wgpu's only from warnings up (it logs every resource).
        let layer = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(Mutex::new(file))
            .with_filter(LevelFilter::INFO)
            .with_filter(filter_fn(|m| {
                let wgpu = m.module_path().is_some_and(|p| p.starts_with("wgpu"));
                !wgpu || *m.level() < tracing::Level::INFO
            }));
        tracing_subscriber::registry()
            .with(layer)
            .try_init()
            .map_err(|e| e.to_string())
    }
}

/// A panic's message, from its payload.
fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|m| m.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Says that epoch `epoch` ended (its validation done, its checkpoint not yet asked for): it is
/// whole unless a loader thread has panicked.
pub fn epoch_ended(epoch: usize) {
    if lock(&FIRST).is_none() {
        WHOLE_EPOCHS.fetch_max(epoch, Ordering::SeqCst);
    }
}

/// The loader panic that cut epoch `epoch` short, if one did. Burn saves an epoch's checkpoint
/// on a thread of its own, which may run after a later epoch's loader has panicked: that epoch
/// was whole all the same.
pub fn loader_panic_during(epoch: usize) -> Option<String> {
    match WHOLE_EPOCHS.load(Ordering::SeqCst) >= epoch {
        true => None,
        false => loader_panic(),
    }
}

/// The message of the first panic on a loader thread, if there was one.
pub fn loader_panic() -> Option<String> {
    lock(&FIRST).clone()
}

/// Panics at the `n`th batch made when the environment variable `TRAIN_FAULT_LOADER_PANIC_AT`
/// says `n`: how the tests make a loader thread panic, as a bug would.
pub fn injected_fault() {
    static AT: OnceLock<Option<usize>> = OnceLock::new();
    static BATCHES: AtomicUsize = AtomicUsize::new(0);
    let at = *AT.get_or_init(|| {
        let at = std::env::var("TRAIN_FAULT_LOADER_PANIC_AT").ok();
        at.and_then(|n| n.parse().ok())
    });
    let Some(at) = at else {
        return;
    };
    let batch = BATCHES.fetch_add(1, Ordering::Relaxed) + 1;
    if batch == at {
        panic!("fault injected by TRAIN_FAULT_LOADER_PANIC_AT at batch {batch}");
    }
}

/// What `value` guards, also after a thread panicked while holding it: every lock in this
/// crate guards plain data that a panic cannot leave half-written.
pub(crate) fn lock<T>(value: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    value
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
