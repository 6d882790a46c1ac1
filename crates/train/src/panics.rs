//! A panic on a data-loader thread fails the run. Burn's loader ends its epoch early when one
//! of its worker threads dies, and its learner goes on: without this, a run whose loader
//! panicked would train on epochs of no images, save checkpoints and a summary, and exit 0.
//!
//! Only Burn's loader threads are watched: CubeCL catches panics of its own on other threads
//! (kernel definitions it cannot compile, for one) and goes on correctly.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use burn::train::Interrupter;

/// The name Burn's data loader gives each of its worker threads, followed by the index.
const LOADER_THREAD: &str = "dataloader-";

/// The first loader panic's message, and the run to stop when one happens.
static FIRST: Mutex<Option<String>> = Mutex::new(None);
static RUN: Mutex<Option<Interrupter>> = Mutex::new(None);

/// From now on, a panic on a loader thread is recorded ([`loader_panic`]) and stops
/// `interrupter`'s run after its current step. The panic is still printed as Rust prints it.
pub fn stop_on_loader_panic(interrupter: &Interrupter) {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let print = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            print(info);
            let thread = std::thread::current();
            if !thread.name().is_some_and(|n| n.starts_with(LOADER_THREAD)) {
                return;
            }
            let message = message(info.payload());
            let location = info
                .location()
                .map(|l| format!(" at {l}"))
                .unwrap_or_default();
            lock(&FIRST).get_or_insert(format!("{message}{location}"));
            if let Some(run) = lock(&RUN).as_ref() {
                run.stop(Some("a data-loader thread panicked"));
            }
        }));
    });
    *lock(&RUN) = Some(interrupter.clone());
}

/// A panic's message, from its payload.
pub fn message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|m| m.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
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
