//! The message centre: each account's messages (`DescribeMessages`, `MarkMessagesRead`) and
//! their delivery through the account's webhook, as durable `notify` jobs that retry with
//! backoff (at least once: a receiver may see a message twice after a crash, with the same
//! `MessageId`).

use std::time::Duration;

use imaged_domain::time::Timestamp;
use imaged_domain::tke::Message;
use imaged_domain::{AccountId, MessageId};
use imaged_metastore::JobRecord;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::jobs::JobFailure;
use crate::service::{AppError, Service};

/// Messages one `DescribeMessages` page holds at most.
pub const MAX_MESSAGES_PAGE: u64 = 100;
/// Delays between the tries of one delivery run (then the job is retried as a whole).
const BACKOFF: &[u64] = &[1, 2, 4, 8];
/// Time one webhook call may take.
const WEBHOOK_TIMEOUT_SECS: u64 = 10;

/// The parameters of a `notify` job.
#[derive(Debug, Serialize, Deserialize)]
struct Delivery {
    message: MessageId,
    url: String,
}

/// The job that delivers `message` to `url`.
pub(crate) fn delivery_job(message: &Message, url: &str, now: Timestamp) -> Result<JobRecord, AppError> {
    let params = serde_json::to_string(&Delivery { message: message.id.clone(), url: url.to_owned() })
        .map_err(|e| AppError::Conflict(e.to_string()))?;
    Ok(JobRecord::queued("notify", "global", message.account, None, params, now))
}

/// What a webhook receives: the message as `DescribeMessages` shows it, with its account.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Payload<'a> {
    message_id: &'a str,
    account_id: String,
    category: &'a str,
    title: &'a str,
    content: &'a str,
    created_time: String,
    effective_time: Option<String>,
}

/// Why a webhook URL is refused.
#[derive(Debug, thiserror::Error)]
#[error("the webhook must be an http:// or https:// URL: {0}")]
pub struct BadWebhook(String);

impl Service {
    /// `DescribeMessages`: one page of the caller's messages (newest first), and how many.
    pub async fn describe_messages(
        &self,
        caller: AccountId,
        unread_only: bool,
        offset: u64,
        limit: u64,
    ) -> Result<(u64, Vec<Message>), AppError> {
        Ok(self.store().list_messages(caller, unread_only, offset, limit.min(MAX_MESSAGES_PAGE)).await?)
    }

    /// `MarkMessagesRead`: marks the caller's messages read; returns how many were unread.
    /// Ids of other accounts' messages change nothing.
    pub async fn mark_messages_read(&self, caller: AccountId, ids: &[MessageId]) -> Result<u64, AppError> {
        Ok(self.store().mark_messages_read(caller, ids).await?)
    }

    /// Sets or clears an account's webhook (operator).
    pub async fn set_webhook(&self, account: AccountId, url: Option<&str>) -> Result<(), AppError> {
        if self.store().get_account(account).await?.is_none() {
            return Err(AppError::NoSuchAccount(account));
        }
        if let Some(u) = url {
            let ok = url::Url::parse(u).is_ok_and(|p| matches!(p.scheme(), "http" | "https") && p.has_host());
            if !ok {
                return Err(AppError::Conflict(BadWebhook(u.to_owned()).to_string()));
            }
        }
        Ok(self.store().set_webhook(account, url).await?)
    }

    /// An account's webhook.
    pub async fn webhook(&self, account: AccountId) -> Result<Option<String>, AppError> {
        Ok(self.store().webhook(account).await?)
    }

    /// The `notify` job: POSTs the message as JSON to the webhook, trying again after 1, 2, 4
    /// and 8 s; a 2xx answer delivers it.
    pub(crate) async fn run_notify(&self, job: &JobRecord) -> Result<String, JobFailure> {
        let d: Delivery =
            serde_json::from_str(&job.params).map_err(|e| JobFailure::permanent(format!("bad job parameters: {e}")))?;
        let Some(m) = self.store().get_message(&d.message).await.map_err(JobFailure::retry)? else {
            return Ok(r#"{"Delivered":false,"Reason":"the message is gone"}"#.into());
        };
        let body = serde_json::to_vec(&Payload {
            message_id: m.id.as_str(),
            account_id: m.account.to_string(),
            category: &m.category,
            title: &m.title,
            content: &m.content,
            created_time: m.created_at.iso8601(),
            effective_time: m.effective_at.map(Timestamp::iso8601),
        })
        .map_err(JobFailure::retry)?;
        let mut last = String::new();
        for (attempt, delay) in std::iter::once(&0).chain(BACKOFF).enumerate() {
            tokio::time::sleep(Duration::from_secs(*delay)).await;
            match post_json(&d.url, &body).await {
                Ok(status) if (200..300).contains(&status) => {
                    tracing::info!(message = %m.id, attempt, "message delivered to the webhook");
                    return Ok(serde_json::json!({"Delivered": true, "Status": status}).to_string());
                }
                Ok(status) => last = format!("the webhook answered HTTP {status}"),
                Err(e) => last = e,
            }
            tracing::warn!(message = %m.id, attempt, "webhook delivery failed: {last}");
        }
        Err(JobFailure::retry(last))
    }
}

/// POSTs `body` to `url` with curl; returns the HTTP status.
async fn post_json(url: &str, body: &[u8]) -> Result<u16, String> {
    let mut child = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--proto", "=http,https", "--max-time"])
        .arg(WEBHOOK_TIMEOUT_SECS.to_string())
        .args(["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", "@-", "-o", "/dev/null"])
        .args(["-w", "%{http_code}", "--"])
        .arg(url)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("running curl: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(body).await.map_err(|e| format!("writing to curl: {e}"))?;
    }
    let out = child.wait_with_output().await.map_err(|e| format!("running curl: {e}"))?;
    let code = String::from_utf8_lossy(&out.stdout).trim().parse::<u16>().unwrap_or(0);
    if code == 0 {
        return Err(format!("the webhook did not answer: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(code)
}
