//! The operator CLI (`concord tx …`, `concord participants list`,
//! `concord stats`): a client of the admin API. Data goes to stdout (an
//! aligned table, or one JSON document with `--output json`, shapes in
//! [`model`]); messages and errors go to stderr. Exit codes: 0 ok, 1 error,
//! 2 usage, 3 not found.

#[cfg(test)]
mod golden_tests;
pub mod model;
pub mod render;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use concord_proto::v1 as pb;
use concord_proto::v1::admin_client::AdminClient;
use tonic::Code;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use self::model::{ActionResult, Participants, Stats, TxDetail, TxList, TxSummary};
use self::render::Paint;
use crate::api::convert::timestamp;
use crate::config::parse_duration;

/// Exit codes.
const EXIT_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_NOT_FOUND: u8 = 3;

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
    /// Admin token (one of the coordinator's admin_tokens secrets).
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
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only these statuses (trying, confirming, confirmed, cancelling,
    /// cancelled, running, succeeded, compensating, compensated); repeat or
    /// separate with commas.
    #[arg(long, value_delimiter = ',')]
    pub status: Vec<String>,
    /// Only tcc or saga transactions.
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

/// A failed command: what to print and the exit code.
#[derive(Debug)]
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn error(message: impl Into<String>) -> Self {
        Self {
            code: EXIT_ERROR,
            message: message.into(),
        }
    }
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Self {
        let (code, message) = match s.code() {
            Code::NotFound => (EXIT_NOT_FOUND, s.message().to_string()),
            Code::InvalidArgument => (EXIT_USAGE, s.message().to_string()),
            Code::FailedPrecondition => (EXIT_ERROR, format!("refused: {}", s.message())),
            Code::Unauthenticated => (
                EXIT_ERROR,
                format!(
                    "{} (give an admin token with --token or CONCORD_TOKEN)",
                    s.message()
                ),
            ),
            Code::Unavailable => (EXIT_ERROR, format!("unavailable: {}", s.message())),
            other => (EXIT_ERROR, format!("{other:?}: {}", s.message())),
        };
        Self { code, message }
    }
}

/// Adds the bearer token to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    /// `None` when the token cannot be sent in a header.
    pub fn new(token: Option<&str>) -> Option<Self> {
        match token {
            Some(t) => format!("Bearer {t}").parse().ok().map(|v| Self(Some(v))),
            None => Some(Self(None)),
        }
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

type Client = AdminClient<InterceptedService<Channel, Bearer>>;

async fn connect(c: &Connection) -> Result<Client, Failure> {
    let url = if c.endpoint.contains("://") {
        c.endpoint.clone()
    } else {
        format!("http://{}", c.endpoint)
    };
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| Failure {
            code: EXIT_USAGE,
            message: format!("bad --endpoint {url}: {e}"),
        })?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Failure::error(format!("cannot connect to {url}: {e}")))?;
    let bearer = Bearer::new(c.token.as_deref()).ok_or_else(|| Failure {
        code: EXIT_USAGE,
        message: "the token contains characters not allowed in a header".into(),
    })?;
    Ok(AdminClient::with_interceptor(channel, bearer))
}

/// Runs one operator command; the binary's `main` returns what this does.
pub fn main(command: AdminCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match runtime.block_on(run(command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let paint = Paint(std::io::stderr().is_terminal() && no_color_unset());
            eprintln!(
                "{} {}",
                paint.paint(Some(render::Style::Red), "error:"),
                f.message
            );
            ExitCode::from(f.code)
        }
    }
}

fn no_color_unset() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Prints one document on stdout, as JSON or as text.
fn emit<T: serde::Serialize>(output: Output, value: &T, text: impl FnOnce(Paint) -> String) {
    let mut stdout = std::io::stdout().lock();
    let result = match output {
        Output::Json => serde_json::to_writer_pretty(&mut stdout, value)
            .map_err(std::io::Error::other)
            .and_then(|_| writeln!(stdout)),
        Output::Text => {
            let paint = Paint(std::io::stdout().is_terminal() && no_color_unset());
            write!(stdout, "{}", text(paint))
        }
    };
    // A closed pipe (`| head`) is not worth an error.
    let _ = result.and_then(|_| stdout.flush());
}

/// Asks on the terminal; without one (scripts) the command goes ahead.
fn confirm(question: &str, yes: bool) -> Result<(), Failure> {
    if yes || !std::io::stdin().is_terminal() {
        return Ok(());
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| Failure::error(format!("cannot read the answer: {e}")))?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(Failure::error("not confirmed; nothing changed")),
    }
}

fn status_filter(raw: &[String]) -> Result<Vec<i32>, Failure> {
    raw.iter()
        .map(|s| {
            let wire = format!("TRANSACTION_STATUS_{}", s.trim().to_ascii_uppercase());
            pb::TransactionStatus::from_str_name(&wire)
                .filter(|s| *s != pb::TransactionStatus::Unspecified)
                .map(|s| s as i32)
                .ok_or_else(|| Failure {
                    code: EXIT_USAGE,
                    message: format!("unknown status {s:?}"),
                })
        })
        .collect()
}

fn mode_filter(raw: &Option<String>) -> Result<i32, Failure> {
    Ok(match raw.as_deref() {
        None => pb::TransactionMode::Unspecified as i32,
        Some("tcc") => pb::TransactionMode::Tcc as i32,
        Some("saga") => pb::TransactionMode::Saga as i32,
        Some(other) => {
            return Err(Failure {
                code: EXIT_USAGE,
                message: format!("unknown mode {other:?} (tcc or saga)"),
            });
        }
    })
}

async fn run(command: AdminCommand) -> Result<(), Failure> {
    match command {
        AdminCommand::Tx(args) => tx(args).await,
        AdminCommand::Participants(args) => {
            let mut client = connect(&args.connection).await?;
            match args.command {
                ParticipantsCommand::List => {
                    let reply = client
                        .list_participant_health(pb::ListParticipantHealthRequest {})
                        .await?
                        .into_inner();
                    let view = Participants::from_wire(&reply);
                    let now = Utc::now();
                    emit(args.connection.output, &view, |p| {
                        render::participants(&view, now, p)
                    });
                    if args.connection.output == Output::Text {
                        eprintln!(
                            "call statistics and breakers are those of instance {} (kept in memory per instance)",
                            view.instance_id
                        );
                    }
                    Ok(())
                }
            }
        }
        AdminCommand::Stats(connection) => {
            let mut client = connect(&connection).await?;
            let reply = client.get_stats(pb::GetStatsRequest {}).await?.into_inner();
            let view = Stats::from_wire(&reply);
            let now = Utc::now();
            emit(connection.output, &view, |p| render::stats(&view, now, p));
            Ok(())
        }
    }
}

async fn tx(args: TxArgs) -> Result<(), Failure> {
    let output = args.connection.output;
    let mut client = connect(&args.connection).await?;
    let (gid, action, reply) = match args.command {
        TxCommand::List(l) => {
            let request = pb::ListTransactionsRequest {
                statuses: status_filter(&l.status)?,
                mode: mode_filter(&l.mode)?,
                participant: l.participant.unwrap_or_default(),
                created_before: l.created_before.map(timestamp),
                created_after: l.created_after.map(timestamp),
                updated_before: l.updated_before.map(timestamp),
                needs_attention: l.needs_attention,
                stuck_for: l.stuck.map(|d| prost_types::Duration {
                    seconds: d.as_secs() as i64,
                    nanos: d.subsec_nanos() as i32,
                }),
                gid_prefix: l.gid_prefix.unwrap_or_default(),
                page_size: l.limit.unwrap_or(0),
                cursor: l.cursor.unwrap_or_default(),
                oldest_first: l.oldest_first,
            };
            let reply = client.list_transactions(request).await?.into_inner();
            let view = TxList {
                transactions: reply
                    .transactions
                    .iter()
                    .map(TxSummary::from_wire)
                    .collect(),
                next_cursor: (!reply.next_cursor.is_empty()).then_some(reply.next_cursor),
            };
            let now = Utc::now();
            if output == Output::Text && view.transactions.is_empty() {
                eprintln!("no transaction matches");
                return Ok(());
            }
            emit(output, &view, |p| {
                render::tx_list(&view.transactions, now, p)
            });
            if output == Output::Text
                && let Some(c) = &view.next_cursor
            {
                eprintln!("more: add --cursor {c}");
            }
            return Ok(());
        }
        TxCommand::Show { gid } => {
            let reply = client
                .get_transaction_detail(pb::GetTransactionDetailRequest { gid })
                .await?
                .into_inner();
            let now = Utc::now();
            let view = TxDetail::from_wire(&reply, now);
            emit(output, &view, |p| render::tx_detail(&view, now, p));
            return Ok(());
        }
        TxCommand::Retry { gid, note } => {
            let reply = client
                .retry_transaction(pb::RetryTransactionRequest {
                    gid: gid.clone(),
                    note: note.unwrap_or_default(),
                })
                .await?;
            (gid, "retry", reply.into_inner())
        }
        TxCommand::Rollback { gid, reason, yes } => {
            confirm(
                &format!("roll back transaction {gid}? every branch will be cancelled."),
                yes,
            )?;
            let reply = client
                .rollback_transaction(pb::RollbackTransactionRequest {
                    gid: gid.clone(),
                    reason,
                })
                .await?;
            (gid, "rollback", reply.into_inner())
        }
        TxCommand::Resolve { gid, note, yes } => {
            confirm(
                &format!(
                    "resolve transaction {gid} by hand? it will never be retried again; \
                     make sure every participant is consistent."
                ),
                yes,
            )?;
            let reply = client
                .resolve_transaction(pb::ResolveTransactionRequest {
                    gid: gid.clone(),
                    note,
                })
                .await?;
            (gid, "resolve", reply.into_inner())
        }
        TxCommand::Pause { gid, note } => {
            let reply = client
                .pause_transaction(pb::PauseTransactionRequest {
                    gid: gid.clone(),
                    note: note.unwrap_or_default(),
                })
                .await?;
            (gid, "pause", reply.into_inner())
        }
        TxCommand::Resume { gid, note } => {
            let reply = client
                .resume_transaction(pb::ResumeTransactionRequest {
                    gid: gid.clone(),
                    note: note.unwrap_or_default(),
                })
                .await?;
            (gid, "resume", reply.into_inner())
        }
    };
    let view = ActionResult {
        gid,
        action: action.into(),
        changed: reply.changed,
        message: reply.message,
        transaction: reply.transaction.as_ref().map(TxSummary::from_wire),
    };
    emit(output, &view, |p| render::action(&view, p));
    Ok(())
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

    #[test]
    fn status_names_map_to_the_wire() {
        assert_eq!(
            status_filter(&["confirming".into(), "Cancelled".into()]).unwrap(),
            vec![
                pb::TransactionStatus::Confirming as i32,
                pb::TransactionStatus::Cancelled as i32
            ]
        );
        assert_eq!(
            status_filter(&["done".into()]).unwrap_err().code,
            EXIT_USAGE
        );
        assert_eq!(
            status_filter(&["unspecified".into()]).unwrap_err().code,
            EXIT_USAGE
        );
    }

    #[test]
    fn grpc_codes_become_exit_codes() {
        assert_eq!(Failure::from(tonic::Status::not_found("x")).code, 3);
        assert_eq!(Failure::from(tonic::Status::invalid_argument("x")).code, 2);
        let refused = Failure::from(tonic::Status::failed_precondition("no"));
        assert_eq!((refused.code, refused.message.as_str()), (1, "refused: no"));
        assert_eq!(Failure::from(tonic::Status::unauthenticated("x")).code, 1);
    }
}
