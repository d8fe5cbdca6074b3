//! `imaged price …` and `imaged market …`: the price table, providers, reviews (operator);
//! usage and earnings (client).

use clap::Subcommand;
use imaged::open_service;

use super::{account_id, load, print_json, ClientArgs, Common};

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

/// `imaged market …` (operator).
#[derive(Subcommand)]
pub(crate) enum MarketCommand {
    /// Providers.
    #[command(subcommand)]
    Provider(ProviderCommand),
    /// Approve or reject the version of a listing that waits for review.
    Review {
        /// The listing id (`lst-…`).
        id: String,
        /// Put it on sale.
        #[arg(long, conflicts_with = "reject", required_unless_present = "reject")]
        approve: bool,
        /// Refuse it (with --reason, which the provider reads).
        #[arg(long, requires = "reason")]
        reject: bool,
        /// Why it is rejected.
        #[arg(long)]
        reason: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// What a listing's version under review holds: format, size, OS, blocks re-verified, the
    /// filesystems' os-release.
    Inspect {
        /// The listing id (`lst-…`).
        id: String,
        #[command(flatten)]
        common: Common,
    },
    /// Every listing, every state.
    Listings {
        #[command(flatten)]
        common: Common,
    },
    /// Your usage and what it costs over a range (`DescribeUsage`).
    Usage {
        /// Start (ISO 8601 UTC).
        #[arg(long)]
        start: String,
        /// End (ISO 8601 UTC).
        #[arg(long)]
        end: String,
        /// Only INSTANCE, IMAGE_FEE or LICENCE.
        #[arg(long)]
        category: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// What buyers paid you per listing over a range (`DescribeProviderEarnings`).
    Earnings {
        /// Start (ISO 8601 UTC).
        #[arg(long)]
        start: String,
        /// End (ISO 8601 UTC).
        #[arg(long)]
        end: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `imaged market provider …`.
#[derive(Subcommand)]
pub(crate) enum ProviderCommand {
    /// Let an account list images on the marketplace.
    Add {
        /// The account id.
        account: String,
        #[command(flatten)]
        common: Common,
    },
}

/// Runs `imaged market …`.
pub(crate) async fn market(cmd: MarketCommand) -> anyhow::Result<()> {
    match cmd {
        MarketCommand::Provider(ProviderCommand::Add { account, common }) => {
            let svc = open_service(&load(&common, None)?).await?;
            let id = account_id(&account)?;
            let added = svc.add_provider(id).await?;
            print_json(&serde_json::json!({"AccountId": id.to_string(), "Added": added}))
        }
        MarketCommand::Review { id, approve, reason, common, .. } => {
            let svc = open_service(&load(&common, None)?).await?;
            let l = svc.review_listing(&id, approve, reason.as_deref()).await?;
            print_json(&serde_json::json!({"ListingId": l.id.as_str(), "State": l.state.as_str(),
                "RejectReason": l.reject_reason, "PublishedImageId": l.published.map(|v| v.image.to_string())}))
        }
        MarketCommand::Inspect { id, common } => {
            let svc = open_service(&load(&common, None)?).await?;
            print_json(&svc.inspect_listing(&id).await?)
        }
        MarketCommand::Listings { common } => {
            let svc = open_service(&load(&common, None)?).await?;
            print_json(&svc.all_listings().await?)
        }
        MarketCommand::Usage { start, end, category, client } => {
            let mut params = serde_json::json!({"StartTime": start, "EndTime": end});
            if let Some(c) = category {
                params["Category"] = c.into();
            }
            print_json(&client.client()?.call_extension("DescribeUsage", &params).await?)
        }
        MarketCommand::Earnings { start, end, client } => {
            let params = serde_json::json!({"StartTime": start, "EndTime": end});
            print_json(&client.client()?.call_extension("DescribeProviderEarnings", &params).await?)
        }
    }
}
