//! One module per subcommand: an `Args` struct and `run()`, which resolves settings and calls the
//! library. Nothing here touches tensors.
pub mod data;
pub mod grid;
pub mod plot;
pub mod train;

#[derive(Clone, Copy, Debug, Default)]
pub struct Verbosity {
    pub quiet: bool,
    pub verbose: bool,
}

impl Verbosity {
    pub fn new(quiet: bool, verbose: bool) -> Self {
        Verbosity { quiet, verbose }
    }
}
