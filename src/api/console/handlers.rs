//! The console's JSON API under `/ui/api/`: sign-in and sign-out, and the
//! operator views and commands, each a few lines over [`Operator`]. The
//! answers are the CLI's JSON documents (`crate::cli::model`), converted
//! through the admin API's wire types exactly as `concord tx … -o json`
//! does, so the two can never describe a transaction differently.
//!
//! Every route but sign-in needs a session; every `POST` and `DELETE` also
//! needs this origin ([`session::same_origin`]) and a JSON body type, which
//! a form on another site cannot send without a CORS preflight.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::refusal;
use super::session::{self, Sessions};
use crate::api::admin::{convert, optional_text, required_text};
use crate::api::http_status;
use crate::auth::{Authenticator, Scope};
use crate::cli::model::{ActionResult, Participants, Stats, TxDetail, TxList, TxSummary};
use crate::domain::{Gid, ParticipantName};
use crate::engine::operator::Operator;
use crate::error::Error;
use crate::machine::operator::OperatorOp;
use crate::machine::{Mode, Status};
use crate::store::admin::{ListCursor, TxFilter};

/// Page size when the request gives none, and the largest allowed (as the
/// admin API).
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

/// The overview's charts cover this much.
const CHART_WINDOW: Duration = Duration::from_secs(3600);

/// Why a console request was refused.
enum Refusal {
    /// From the engine (or its input checks): mapped by [`http_status`].
    Engine(Error),
    /// A request another origin could have forged.
    Forbidden(&'static str),
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        Refusal::Engine(e)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Engine(e) => {
                let (status, message) = http_status(&e);
                refusal(status, message)
            }
            Refusal::Forbidden(why) => refusal(StatusCode::FORBIDDEN, why.to_string()),
        }
    }
}

type Answer<T> = Result<Json<T>, Refusal>;

/// What every handler shares.
#[derive(Clone)]
pub(super) struct Console(Arc<Inner>);

struct Inner {
    operator: Arc<Operator>,
    auth: Arc<Authenticator>,
    sessions: Sessions,
}

impl Console {
    pub(super) fn new(
        operator: Arc<Operator>,
        auth: Arc<Authenticator>,
        sessions: Sessions,
    ) -> Self {
        Self(Arc::new(Inner {
            operator,
            auth,
            sessions,
        }))
    }

    /// The actor of the request's session.
    fn actor(&self, headers: &HeaderMap) -> Result<String, Refusal> {
        session::session_id(headers)
            .and_then(|id| {
                let by_operator = session::by_operator(headers);
                self.0.sessions.actor(id, Instant::now(), by_operator)
            })
            .ok_or_else(|| {
                Refusal::Engine(Error::Unauthenticated(
                    "not signed in, or the session ended; sign in again".into(),
                ))
            })
    }

    /// The actor of a mutating request: this origin, a JSON body and a
    /// session.
    fn acting(&self, headers: &HeaderMap) -> Result<String, Refusal> {
        session::same_origin(headers).map_err(Refusal::Forbidden)?;
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !json {
            return Err(Refusal::Forbidden(
                "a console command must be sent as application/json",
            ));
        }
        self.actor(headers)
    }
}

pub(super) fn routes(console: Console) -> Router {
    Router::new()
        .route("/session", get(whoami).post(sign_in).delete(sign_out))
        .route("/overview", get(overview))
        .route("/transactions", get(list))
        .route("/transactions/{gid}", get(detail))
        .route("/transactions/{gid}/{action}", post(act))
        .route("/participants", get(participants))
        .with_state(console)
}

#[derive(Serialize)]
struct Me {
    /// The name of the admin token signed in with.
    actor: String,
    idle_timeout_seconds: u64,
}

async fn whoami(State(c): State<Console>, headers: HeaderMap) -> Answer<Me> {
    Ok(Json(Me {
        actor: c.actor(&headers)?,
        idle_timeout_seconds: c.0.sessions.idle().as_secs(),
    }))
}

#[derive(Deserialize)]
struct SignIn {
    token: String,
}

/// Checks the token and opens a session. The body is read by hand so that
/// a malformed one is refused with a message that never echoes it.
async fn sign_in(State(c): State<Console>, headers: HeaderMap, body: String) -> Response {
    let signed = || -> Result<String, Refusal> {
        session::same_origin(&headers).map_err(Refusal::Forbidden)?;
        let SignIn { token } = serde_json::from_str(&body).map_err(|_| {
            Error::InvalidArgument("sign-in expects the JSON body {\"token\": \"...\"}".into())
        })?;
        // The identities in force now (a reload may have rotated them).
        let identity =
            c.0.auth
                .identities()
                .by_token(token.trim().as_bytes())
                .ok_or_else(|| Error::Unauthenticated("invalid admin token".into()))?;
        identity.require(Scope::Admin)?;
        Ok(identity.name.clone())
    };
    match signed() {
        Ok(actor) => {
            let id = c.0.sessions.open(&actor, Instant::now());
            tracing::info!(actor, "console sign-in");
            let me = Me {
                actor,
                idle_timeout_seconds: c.0.sessions.idle().as_secs(),
            };
            ([(header::SET_COOKIE, session::set_cookie(&id))], Json(me)).into_response()
        }
        Err(refused) => refused.into_response(),
    }
}

async fn sign_out(State(c): State<Console>, headers: HeaderMap) -> Response {
    if let Err(why) = session::same_origin(&headers) {
        return Refusal::Forbidden(why).into_response();
    }
    if let Some(id) = session::session_id(&headers) {
        c.0.sessions.close(id);
    }
    (
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, session::clear_cookie())],
    )
        .into_response()
}

/// Transactions finished in one minute.
#[derive(Serialize)]
struct Minute {
    minute: DateTime<Utc>,
    finished: u64,
    /// Ended rolled back: cancelled or compensated.
    failed: u64,
}

#[derive(Serialize)]
struct Overview {
    stats: Stats,
    /// The last hour, oldest first, every minute present.
    per_minute: Vec<Minute>,
}

async fn overview(State(c): State<Console>, headers: HeaderMap) -> Answer<Overview> {
    c.actor(&headers)?;
    let operator = &c.0.operator;
    let stats = Stats::from_wire(&convert::stats(&operator.stats().await?));
    let per_minute = operator
        .finished_per_minute(CHART_WINDOW)
        .await?
        .into_iter()
        .map(|m| Minute {
            minute: m.minute,
            finished: m.finished,
            failed: m.failed,
        })
        .collect();
    Ok(Json(Overview { stats, per_minute }))
}

async fn list(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Answer<TxList> {
    c.actor(&headers)?;
    let (filter, stuck) = filter(query, Utc::now())?;
    let (page, next) = c.0.operator.list(filter, stuck).await?;
    Ok(Json(TxList {
        transactions: page
            .iter()
            .map(|t| TxSummary::from_wire(&convert::summary(t)))
            .collect(),
        next_cursor: next.map(|c| c.encode()),
    }))
}

/// The list's filters from the query string, with the CLI's names
/// (`status=a,b`, `mode`, `participant`, `needs_attention=true`,
/// `stuck=5m`, `created_after=1h` (ago), `gid_prefix`, `cursor`, `limit`,
/// `oldest_first=true`); an unknown name or a bad value is refused.
fn filter(
    query: HashMap<String, String>,
    now: DateTime<Utc>,
) -> Result<(TxFilter, Option<Duration>), Error> {
    let bad = |name: &str, why: &str| Error::InvalidArgument(format!("filter {name}: {why}"));
    let duration = |name: &str, raw: &str| {
        crate::config::parse_duration(raw)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| bad(name, "expects a positive duration such as 5m"))
    };
    let flag = |name: &str, raw: &str| match raw {
        "true" | "1" => Ok(true),
        "false" | "0" | "" => Ok(false),
        _ => Err(bad(name, "expects true or false")),
    };
    let mut f = TxFilter {
        limit: DEFAULT_PAGE,
        ..TxFilter::default()
    };
    let mut stuck = None;
    for (name, raw) in query {
        let raw = raw.trim();
        if raw.is_empty() {
            continue;
        }
        match name.as_str() {
            "status" => {
                for s in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    f.statuses
                        .push(Status::parse(s).ok_or_else(|| bad("status", "unknown status"))?);
                }
            }
            "mode" => {
                f.mode = Some(Mode::parse(raw).ok_or_else(|| bad("mode", "expects tcc or saga"))?)
            }
            "participant" => f.participant = Some(ParticipantName::parse(raw)?.to_string()),
            "needs_attention" => f.needs_attention = flag("needs_attention", raw)?,
            "oldest_first" => f.oldest_first = flag("oldest_first", raw)?,
            "stuck" => stuck = Some(duration("stuck", raw)?),
            "created_after" => {
                let ago = chrono::Duration::from_std(duration("created_after", raw)?)
                    .map_err(|_| bad("created_after", "too long"))?;
                f.created_after = Some(now - ago);
            }
            "gid_prefix" => f.gid_prefix = Some(raw.to_string()),
            "cursor" => {
                f.after = Some(
                    ListCursor::decode(raw).ok_or_else(|| bad("cursor", "not a valid cursor"))?,
                )
            }
            "limit" => {
                f.limit = match raw.parse::<u32>() {
                    Ok(n) if n > 0 => n.min(MAX_PAGE),
                    _ => return Err(bad("limit", "expects a positive number")),
                }
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown filter {other:?}; known: status, mode, participant, \
                     needs_attention, stuck, created_after, gid_prefix, cursor, limit, \
                     oldest_first"
                )));
            }
        }
    }
    Ok((f, stuck))
}

fn gid_of(raw: &str) -> Result<Gid, Error> {
    Ok(Gid::parse(raw)?)
}

async fn detail(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(gid): Path<String>,
) -> Answer<TxDetail> {
    c.actor(&headers)?;
    let (row, branches, events) = c.0.operator.detail(&gid_of(&gid)?).await?;
    let wire = convert::detail(&row, &branches, &events);
    Ok(Json(TxDetail::from_wire(&wire, Utc::now())))
}

/// The body of a command; which fields count depends on the command.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Command {
    #[serde(default)]
    note: String,
    #[serde(default)]
    reason: String,
}

async fn act(
    State(c): State<Console>,
    headers: HeaderMap,
    Path((gid, action)): Path<(String, String)>,
    body: String,
) -> Answer<ActionResult> {
    let actor = c.acting(&headers)?;
    let cmd: Command = if body.trim().is_empty() {
        Command::default()
    } else {
        serde_json::from_str(&body)
            .map_err(|e| Error::InvalidArgument(format!("the command's body is not valid: {e}")))?
    };
    let (op, note) = match action.as_str() {
        "retry" => (OperatorOp::RetryNow, optional_text("note", &cmd.note)?),
        "pause" => (OperatorOp::Pause, optional_text("note", &cmd.note)?),
        "resume" => (OperatorOp::Resume, optional_text("note", &cmd.note)?),
        "rollback" => {
            let reason = required_text("reason", &cmd.reason)?;
            let op = OperatorOp::Rollback {
                reason: reason.clone(),
            };
            (op, Some(reason))
        }
        "resolve" => {
            let note = required_text("note", &cmd.note)?;
            (OperatorOp::Resolve { note: note.clone() }, Some(note))
        }
        other => {
            return Err(Error::NotFound(format!(
                "unknown command {other:?}; known: retry, pause, resume, rollback, resolve"
            ))
            .into());
        }
    };
    let gid = gid_of(&gid)?;
    let acted = c.0.operator.act(&gid, op, &actor, note).await?;
    Ok(Json(ActionResult {
        gid: gid.to_string(),
        action,
        changed: acted.changed,
        message: acted.message,
        transaction: Some(TxSummary::from_wire(&convert::summary(&acted.tx))),
    }))
}

async fn participants(State(c): State<Console>, headers: HeaderMap) -> Answer<Participants> {
    c.actor(&headers)?;
    let operator = &c.0.operator;
    let wire = concord_proto::v1::ListParticipantHealthResponse {
        participants: operator
            .participants()
            .await?
            .iter()
            .map(convert::participant)
            .collect(),
        instance_id: operator.instance_id().to_string(),
    };
    Ok(Json(Participants::from_wire(&wire)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_read_the_cli_names() {
        let now = Utc::now();
        let (f, stuck) = filter(
            query(&[
                ("status", "confirming, cancelling"),
                ("mode", "tcc"),
                ("participant", "bank-a"),
                ("needs_attention", "true"),
                ("stuck", "5m"),
                ("created_after", "1h"),
                ("gid_prefix", "order-"),
                ("limit", "9999"),
                ("cursor", ""),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(f.statuses, [Status::Confirming, Status::Cancelling]);
        assert_eq!(f.mode, Some(Mode::Tcc));
        assert_eq!(f.participant.as_deref(), Some("bank-a"));
        assert!(f.needs_attention && !f.oldest_first);
        assert_eq!(stuck, Some(Duration::from_secs(300)));
        assert_eq!(f.created_after, Some(now - chrono::Duration::hours(1)));
        assert_eq!(f.gid_prefix.as_deref(), Some("order-"));
        assert_eq!(f.limit, MAX_PAGE);
        assert!(f.after.is_none());
        assert_eq!(filter(query(&[]), now).unwrap().0.limit, DEFAULT_PAGE);
    }

    #[test]
    fn bad_filters_are_refused_with_their_name() {
        for (name, value) in [
            ("status", "stuck"),
            ("mode", "xa"),
            ("needs_attention", "maybe"),
            ("stuck", "0s"),
            ("stuck", "soon"),
            ("limit", "0"),
            ("cursor", "garbage"),
            ("participant", "a b"),
            ("colour", "red"),
        ] {
            let err = filter(query(&[(name, value)]), Utc::now()).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidArgument(m) if m.contains(name)),
                "{name}={value}: {err}"
            );
        }
    }
}
