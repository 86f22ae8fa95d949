//! The operator commands as clap reads them: `tx …`, `participants
//! list`, `stats`, and how to reach the admin API.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};

use crate::config::parse_duration;

/// The operator commands, flattened into the binary's subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Find, inspect and unstick transactions (admin API).
    Tx(TxArgs),
    /// Participants, their endpoints and the endpoints' health (admin API).
    Participants(ParticipantsArgs),
    /// Summary counts: by status, needs attention, retry backlog, oldest
    /// unfinished (admin API).
    Stats(Connection),
}

/// How to reach the admin API, and how to print.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Coordinator gRPC address.
    #[arg(
        long,
        env = "CONCORD_ENDPOINT",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub endpoint: String,
    /// Token of an identity with the admin scope (an admin_tokens secret, or
    /// an admin of the coordinator's identities file).
    #[arg(long, env = "CONCORD_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Output format: an aligned table, or one JSON document for scripts.
    #[arg(long, short = 'o', value_enum, default_value = "text", global = true)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct TxArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: TxCommand,
}

#[derive(Debug, Args)]
pub struct ParticipantsArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: ParticipantsCommand,
}

#[derive(Debug, Subcommand)]
pub enum ParticipantsCommand {
    /// Every registered participant with endpoint health.
    List,
}

#[derive(Debug, Subcommand)]
pub enum TxCommand {
    /// Transactions matching every filter given, newest first.
    List(ListArgs),
    /// One transaction: why it is not finished, its branches, its history.
    Show { gid: String },
    /// Drive a transaction now instead of after its backoff delay.
    Retry {
        gid: String,
        /// Recorded in the transaction's history.
        #[arg(long)]
        note: Option<String>,
    },
    /// Roll back a transaction that is still trying (never after a commit
    /// decision).
    Rollback {
        gid: String,
        /// Why; recorded as the rollback reason.
        #[arg(long)]
        reason: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Mark a transaction that needs attention as resolved by hand; it is
    /// not retried again.
    Resolve {
        gid: String,
        /// What was done by hand; required.
        #[arg(long)]
        note: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Stop retrying a transaction until resumed.
    Pause {
        gid: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Retry a paused transaction again.
    Resume {
        gid: String,
        #[arg(long)]
        note: Option<String>,
    },
    /// Act on one branch of a transaction: retry it now, or skip its stuck
    /// Confirm, Cancel or compensation after doing its work by hand.
    #[command(subcommand)]
    Branch(BranchCommand),
    /// Retry, pause, resume or resolve every transaction matching the
    /// filters (at least one), oldest first. Lists what would change and
    /// asks first on a terminal; `--dry-run` only lists.
    Bulk(BulkArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BulkAction {
    Retry,
    Pause,
    Resume,
    Resolve,
}

#[derive(Debug, Args)]
pub struct BulkArgs {
    /// What to do to each transaction.
    #[arg(value_enum)]
    pub action: BulkAction,
    /// Only these statuses; repeat or separate with commas.
    #[arg(long, value_delimiter = ',')]
    pub status: Vec<String>,
    /// Only tcc, saga or msg transactions.
    #[arg(long)]
    pub mode: Option<String>,
    /// Only transactions with a branch on this participant.
    #[arg(long)]
    pub participant: Option<String>,
    /// Only transactions flagged as needing attention.
    #[arg(long)]
    pub needs_attention: bool,
    /// Only unfinished transactions older than this (for example 5m).
    #[arg(long, value_parser = parse_duration)]
    pub stuck: Option<Duration>,
    /// Created before this time (RFC 3339, or a duration meaning "ago").
    #[arg(long, value_parser = parse_time)]
    pub created_before: Option<DateTime<Utc>>,
    /// Only gids starting with this.
    #[arg(long)]
    pub gid_prefix: Option<String>,
    /// Recorded in each transaction's history; required for resolve.
    #[arg(long)]
    pub note: Option<String>,
    /// Only list what each transaction would come to; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Most transactions to act on (default and at most 1000).
    #[arg(long)]
    pub limit: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum BranchCommand {
    /// Call the branch's owed call now instead of after the backoff.
    Retry {
        gid: String,
        /// Branch id, as `tx show` lists them.
        branch: String,
        /// Recorded in the transaction's history.
        #[arg(long)]
        note: Option<String>,
    },
    /// Mark the branch's stuck Confirm, Cancel or compensation as done by
    /// hand: it is not called again and shows as skipped; the transaction
    /// finishes once every branch is done or skipped.
    Skip {
        gid: String,
        /// Branch id, as `tx show` lists them.
        branch: String,
        /// What was done by hand instead of the call; required.
        #[arg(long)]
        note: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only these statuses (trying, confirming, confirmed, cancelling,
    /// cancelled, running, succeeded, compensating, compensated); repeat or
    /// separate with commas.
    #[arg(long, value_delimiter = ',')]
    pub status: Vec<String>,
    /// Only tcc, saga or msg (2-phase message) transactions.
    #[arg(long)]
    pub mode: Option<String>,
    /// Only transactions with a branch on this participant.
    #[arg(long)]
    pub participant: Option<String>,
    /// Created before this time (RFC 3339, or a duration meaning "ago": 1h).
    #[arg(long, value_parser = parse_time)]
    pub created_before: Option<DateTime<Utc>>,
    /// Created after this time (RFC 3339, or a duration meaning "ago").
    #[arg(long, value_parser = parse_time)]
    pub created_after: Option<DateTime<Utc>>,
    /// Last changed before this time (RFC 3339, or a duration meaning "ago").
    #[arg(long, value_parser = parse_time)]
    pub updated_before: Option<DateTime<Utc>>,
    /// Only transactions flagged as needing attention.
    #[arg(long)]
    pub needs_attention: bool,
    /// Only unfinished transactions older than this (for example 5m).
    #[arg(long, value_parser = parse_duration)]
    pub stuck: Option<Duration>,
    /// Only gids starting with this.
    #[arg(long)]
    pub gid_prefix: Option<String>,
    /// Oldest first.
    #[arg(long)]
    pub oldest_first: bool,
    /// Largest page (default 50, at most 500).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Continue after a previous page.
    #[arg(long)]
    pub cursor: Option<String>,
}

fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let ago = parse_duration(s)
        .map_err(|_| format!("{s:?} is neither an RFC 3339 time nor a duration such as 30m"))?;
    Ok(Utc::now() - chrono::Duration::from_std(ago).map_err(|e| e.to_string())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_ago() {
        let t = parse_time("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-01T00:00:00+00:00");
        let ago = parse_time("1h").unwrap();
        let d = Utc::now() - ago;
        assert!(d >= chrono::Duration::minutes(59) && d <= chrono::Duration::minutes(61));
        assert!(parse_time("yesterday").is_err());
    }
}
