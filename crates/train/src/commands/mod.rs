//! One module per command, named as the command; `train` is the default command (a config
//! file and no subcommand).

pub mod bench;
pub mod devices;
pub mod eval;
pub mod export;
pub mod predict;
pub mod serve;
pub mod show;
pub mod summary;
pub mod tiny_cnn;
pub mod train;
pub mod worker;
