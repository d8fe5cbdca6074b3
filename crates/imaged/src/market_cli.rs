//! `imaged price …`: the price table (operator).

use clap::Subcommand;

use super::{load, print_json, Common};

/// `imaged price …`.
#[derive(Subcommand)]
pub(crate) enum PriceCommand {
    /// Print the price table in force (the config file's `[prices]`, else the built-in one), in
    /// minor units of its currency.
    Show {
        #[command(flatten)]
        common: Common,
    },
}

/// Runs `imaged price …`.
pub(crate) fn run(cmd: PriceCommand) -> anyhow::Result<()> {
    match cmd {
        PriceCommand::Show { common } => print_json(&load(&common, None)?.prices),
    }
}
