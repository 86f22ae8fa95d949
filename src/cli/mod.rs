//! The operator CLI (`concord tx …`, `concord participants list`,
//! `concord stats`): a client of the admin API. Data goes to stdout (an
//! aligned table, or one JSON document with `--output json`, shapes in
//! [`model`]); messages and errors go to stderr. Exit codes: 0 ok, 1 error,
//! 2 usage, 3 not found.

mod args;
#[cfg(test)]
mod golden_tests;
pub mod model;
pub mod render;
mod tx;
mod when;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use concord_proto::v1 as pb;
use concord_proto::v1::admin_client::AdminClient;
use tonic::Code;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

pub use self::args::{
    AdminCommand, Connection, ListArgs, Output, ParticipantsArgs, ParticipantsCommand, TxArgs,
    TxCommand,
};
use self::model::{Participants, Stats};
use self::render::Paint;

/// Exit codes.
const EXIT_ERROR: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_NOT_FOUND: u8 = 3;

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

async fn run(command: AdminCommand) -> Result<(), Failure> {
    match command {
        AdminCommand::Tx(args) => tx::run(args).await,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes_become_exit_codes() {
        assert_eq!(Failure::from(tonic::Status::not_found("x")).code, 3);
        assert_eq!(Failure::from(tonic::Status::invalid_argument("x")).code, 2);
        let refused = Failure::from(tonic::Status::failed_precondition("no"));
        assert_eq!((refused.code, refused.message.as_str()), (1, "refused: no"));
        assert_eq!(Failure::from(tonic::Status::unauthenticated("x")).code, 1);
    }
}
