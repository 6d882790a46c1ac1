//! The trainer behind the `train` command: configuration, devices, training runs, benchmarks.

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod curves;
pub mod device;
pub mod fit;
pub mod inference;
pub mod progress;
pub mod tiny;
pub mod weights;

pub use config::{ConfigError, Overrides, RunConfig};
pub use device::BackendName;
