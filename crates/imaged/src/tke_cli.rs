//! `imaged tke …` and `imaged messages`: TKE's operator commands (beta applications,
//! image-logic changes, on the data directory) and client commands (the OS catalogue, beta
//! applications, the message centre, through the API).

use anyhow::{bail, Context};
use clap::Subcommand;
use imaged::open_service;
use imaged_domain::time::Timestamp;
use imaged_domain::tke::{BetaApplication, ChangeAction, OsChange};
use imaged_domain::ImageId;
use serde_json::{json, Value};

use super::{account_id, load, print_json, ClientArgs, Common};

/// `imaged tke …`.
#[derive(Subcommand)]
pub(crate) enum TkeCommand {
    /// Beta applications (operator).
    #[command(subcommand)]
    Beta(BetaCommand),
    /// Schedule an image-logic change at least 7 days ahead; every account with a cluster or
    /// node pool on the OS is told now (operator). Prints the change as JSON.
    ScheduleChange {
        /// The OS name (`DescribeOSImages.OsName`).
        #[arg(long)]
        os_name: String,
        /// The image the name maps to from the effective time on.
        #[arg(long, conflicts_with = "retire", required_unless_present = "retire")]
        image: Option<String>,
        /// Retire the name instead: no new node may use it from the effective time on.
        #[arg(long)]
        retire: bool,
        /// When it takes effect (RFC 3339, UTC: `2026-12-10T00:00:00Z`).
        #[arg(long)]
        effective: String,
        /// The note quoted in the announcement.
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        common: Common,
    },
    /// Every image-logic change, scheduled or in effect (operator).
    Changes {
        #[command(flatten)]
        common: Common,
    },
    /// The OS catalogue for clusters and node pools (`DescribeOSImages`).
    OsImages {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Apply to use a beta OS (`ApplyForBetaImage`).
    ApplyBeta {
        /// The beta OS name.
        #[arg(long)]
        os_name: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `imaged tke beta …`.
#[derive(Subcommand)]
pub(crate) enum BetaCommand {
    /// Every application, oldest first.
    List {
        /// Only this account's.
        #[arg(long)]
        account: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Approve a pending application.
    Approve {
        /// The application id (`app-…`).
        id: String,
        #[command(flatten)]
        common: Common,
    },
    /// Reject a pending application, with the reason the applicant reads.
    Reject {
        /// The application id (`app-…`).
        id: String,
        /// Why.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        common: Common,
    },
}

fn application_json(a: &BetaApplication) -> Value {
    json!({
        "ApplicationId": a.id.as_str(), "AccountId": a.account.to_string(), "OsName": a.os_name,
        "Reason": a.reason, "Status": a.status.as_str(), "DecisionReason": a.decision_reason,
        "CreatedTime": a.created_at.iso8601(), "DecidedTime": a.decided_at.map(Timestamp::iso8601),
    })
}

fn change_json(c: &OsChange) -> Value {
    let (action, image) = match &c.action {
        ChangeAction::Remap(image) => ("remap", Some(image.to_string())),
        ChangeAction::Retire => ("retire", None),
    };
    json!({
        "ChangeId": c.id, "OsName": c.os_name, "Action": action, "ImageId": image,
        "EffectiveTime": c.effective_at.iso8601(), "ScheduledTime": c.scheduled_at.iso8601(), "Note": c.note,
    })
}

/// Runs `imaged tke …`.
pub(crate) async fn run(cmd: TkeCommand) -> anyhow::Result<()> {
    match cmd {
        TkeCommand::Beta(BetaCommand::List { account, common }) => {
            let svc = open_service(&load(&common, None)?).await?;
            let account = account.as_deref().map(account_id).transpose()?;
            let all = svc.beta_applications(account).await?;
            print_json(&all.iter().map(application_json).collect::<Vec<_>>())
        }
        TkeCommand::Beta(BetaCommand::Approve { id, common }) => {
            let svc = open_service(&load(&common, None)?).await?;
            print_json(&application_json(&svc.decide_beta(&id, true, None).await?))
        }
        TkeCommand::Beta(BetaCommand::Reject { id, reason, common }) => {
            let svc = open_service(&load(&common, None)?).await?;
            print_json(&application_json(&svc.decide_beta(&id, false, Some(&reason)).await?))
        }
        TkeCommand::ScheduleChange { os_name, image, retire, effective, note, common } => {
            let svc = open_service(&load(&common, None)?).await?;
            let effective = Timestamp::parse_iso8601(&effective)
                .with_context(|| format!("--effective `{effective}` is not an RFC 3339 UTC time"))?;
            let action = match (image, retire) {
                (Some(image), false) => ChangeAction::Remap(
                    ImageId::parse(&image).with_context(|| format!("`{image}` is not an image id"))?,
                ),
                (None, true) => ChangeAction::Retire,
                _ => bail!("give either --image or --retire"),
            };
            let (change, told) = svc.schedule_os_change(&os_name, action, effective, &note).await?;
            let mut out = change_json(&change);
            out["AccountsNotified"] = json!(told);
            print_json(&out)
        }
        TkeCommand::Changes { common } => {
            let svc = open_service(&load(&common, None)?).await?;
            print_json(&svc.os_changes().await?.iter().map(change_json).collect::<Vec<_>>())
        }
        TkeCommand::OsImages { client } => {
            print_json(&client.client()?.call_tke("DescribeOSImages", &json!({})).await?)
        }
        TkeCommand::ApplyBeta { os_name, reason, client } => {
            let params = json!({"OsName": os_name, "Reason": reason});
            print_json(&client.client()?.call_extension("ApplyForBetaImage", &params).await?)
        }
    }
}

/// `imaged messages [--unread]`: the caller's message centre, newest first (up to 100).
pub(crate) async fn messages(unread: bool, client: &ClientArgs) -> anyhow::Result<()> {
    let params = json!({"UnreadOnly": unread, "Limit": 100});
    print_json(&client.client()?.call_extension("DescribeMessages", &params).await?)
}

/// `imaged account set-webhook`: where the account's messages are also delivered.
pub(crate) async fn set_webhook(account: &str, url: Option<&str>, common: &Common) -> anyhow::Result<()> {
    let svc = open_service(&load(common, None)?).await?;
    let id = account_id(account)?;
    svc.set_webhook(id, url).await?;
    print_json(&json!({"AccountId": id.to_string(), "Webhook": svc.webhook(id).await?}))
}
