//! `concord.v1.Admin`: the operator API behind `concord tx …`. Thin like the
//! other adapters: parse the request, ask the operator rules
//! ([`crate::machine::operator`]) what a command means, persist it with a
//! compare-and-set in [`crate::store::admin`], wake the recovery loop when
//! there is work. Every call is authenticated by [`auth::AdminAuth`].

pub mod auth;
pub mod convert;

use std::collections::HashMap;
use std::sync::Arc;

use concord_proto::v1 as pb;
use concord_proto::v1::admin_server::{Admin, AdminServer};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use self::auth::{AdminAuth, AdminTokens, Operator};
use super::guarded;
use crate::domain::MAX_REASON;
use crate::domain::{Gid, ParticipantName};
use crate::engine::Engine;
use crate::engine::recovery::Wake;
use crate::error::{Error, Result};
use crate::machine::operator::{self, OperatorEffect, OperatorFlags, OperatorOp};
use crate::store::admin::{AdminChange, AdminStore, AdminTx, AdminWrite, ListCursor, TxFilter};

/// Page size when the request gives none, and the largest allowed.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;
/// Compare-and-set attempts before giving up on a transaction that keeps
/// changing under an operator command.
const CAS_ATTEMPTS: usize = 8;

pub struct AdminApi {
    store: Arc<dyn AdminStore>,
    engine: Arc<Engine>,
    wake: Wake,
}

/// The Admin service behind its authentication interceptor.
pub type AdminService = InterceptedService<AdminServer<AdminApi>, AdminAuth>;

impl AdminApi {
    pub fn new(store: Arc<dyn AdminStore>, engine: Arc<Engine>, wake: Wake) -> Self {
        Self {
            store,
            engine,
            wake,
        }
    }

    /// The service with bearer-token authentication in front of every call.
    pub fn service(self, tokens: AdminTokens, max_message_bytes: usize) -> AdminService {
        let server = AdminServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes);
        InterceptedService::new(server, AdminAuth::new(tokens))
    }

    async fn load(&self, gid: &Gid) -> Result<(AdminTx, Vec<crate::store::BranchRecord>)> {
        self.store
            .admin_get(gid)
            .await?
            .ok_or_else(|| Error::NotFound(format!("transaction {gid} not found")))
    }

    async fn summary(&self, gid: &Gid) -> Result<pb::TransactionSummary> {
        Ok(convert::summary(&self.load(gid).await?.0))
    }

    /// Runs one operator command through the rules and persists it.
    async fn operate(
        &self,
        gid: &Gid,
        op: OperatorOp,
        actor: &str,
        note: Option<String>,
    ) -> Result<pb::OperatorActionResponse> {
        let event = match op {
            OperatorOp::RetryNow => "operator_retry",
            OperatorOp::Rollback { .. } => "operator_rollback",
            OperatorOp::Resolve { .. } => "operator_resolve",
            OperatorOp::Pause => "operator_pause",
            OperatorOp::Resume => "operator_resume",
        };
        for _ in 0..CAS_ATTEMPTS {
            let (row, branches) = self.load(gid).await?;
            let tx = &row.tx;
            let flags = OperatorFlags {
                paused: tx.paused,
                resolved_by: row.resolution.as_ref().map(|r| r.by.clone()),
            };
            let now = self.engine.clock.now();
            let effect = operator::operate(&tx.state(&branches), &flags, &op, now)
                .map_err(|r| Error::FailedPrecondition(r.to_string()))?;
            let (change, message) = match effect {
                OperatorEffect::Unchanged(why) => {
                    return Ok(pb::OperatorActionResponse {
                        changed: false,
                        message: format!("nothing to do: {why}"),
                        transaction: Some(convert::summary(&row)),
                    });
                }
                OperatorEffect::Rollback { reason } => {
                    // The engine decides (compare-and-set, fencing, phase 2)
                    // exactly as for an initiator; the operator event
                    // follows once the decision is durable.
                    let status = self
                        .engine
                        .rollback(gid, format!("operator {actor}: {reason}"), None)
                        .await?;
                    self.store
                        .admin_event(gid, event, Some(&reason), actor, self.engine.clock.now())
                        .await?;
                    tracing::info!(%gid, actor, action = op.name(), status = status.as_str(), "operator action");
                    return Ok(pb::OperatorActionResponse {
                        changed: true,
                        message: "rollback decided; every branch is being cancelled".into(),
                        transaction: Some(self.summary(gid).await?),
                    });
                }
                OperatorEffect::RetryAt(at) => (
                    AdminChange::RetryAt(at),
                    "retry scheduled now; the recovery loop was woken",
                ),
                OperatorEffect::SetPaused(true) => {
                    (AdminChange::SetPaused(true), "retries paused until resumed")
                }
                OperatorEffect::SetPaused(false) => {
                    (AdminChange::SetPaused(false), "retries resumed")
                }
                OperatorEffect::Resolve { note } => (
                    AdminChange::Resolve { note },
                    "resolved by hand; it will not be retried again",
                ),
            };
            let write = AdminWrite {
                gid: gid.clone(),
                expected_status: tx.status,
                expected_paused: tx.paused,
                expected_needs_attention: tx.needs_attention,
                change,
                event,
                actor: actor.to_string(),
                note: note.clone(),
                now,
            };
            if self.store.admin_apply(write).await? {
                tracing::info!(%gid, actor, action = op.name(), "operator action");
                if matches!(op, OperatorOp::RetryNow | OperatorOp::Resume) {
                    self.wake.wake();
                }
                return Ok(pb::OperatorActionResponse {
                    changed: true,
                    message: message.into(),
                    transaction: Some(self.summary(gid).await?),
                });
            }
        }
        Err(Error::Unavailable(format!(
            "transaction {gid} kept changing during the operator command; retry"
        )))
    }
}

fn gid(raw: &str) -> Result<Gid> {
    Ok(Gid::parse(raw)?)
}

fn actor<T>(request: &Request<T>) -> Result<String> {
    request
        .extensions()
        .get::<Operator>()
        .map(|o| o.0.clone())
        .ok_or_else(|| Error::Unauthenticated("no authenticated operator".into()))
}

/// A required free-text field, trimmed and bounded.
fn required_text(field: &str, value: &str) -> Result<String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::InvalidArgument(format!("{field} is required")));
    }
    if value.len() > MAX_REASON {
        return Err(Error::InvalidArgument(format!(
            "{field} is {} bytes, the limit is {MAX_REASON}",
            value.len()
        )));
    }
    Ok(value.to_string())
}

fn optional_text(field: &str, value: &str) -> Result<Option<String>> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    required_text(field, value).map(Some)
}

impl AdminApi {
    fn filter(&self, req: pb::ListTransactionsRequest) -> Result<TxFilter> {
        let statuses = req
            .statuses
            .iter()
            .map(|&s| {
                convert::status_from_wire(s)
                    .ok_or_else(|| Error::InvalidArgument(format!("unknown status {s}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let ts = |t: &Option<prost_types::Timestamp>, field: &str| -> Result<_> {
            t.as_ref()
                .map(|t| {
                    convert::from_timestamp(t).ok_or_else(|| {
                        Error::InvalidArgument(format!("{field} is not a valid time"))
                    })
                })
                .transpose()
        };
        let stuck_since = match &req.stuck_for {
            Some(d) => {
                let d = crate::api::convert::duration(d)
                    .and_then(|d| chrono::Duration::from_std(d).ok())
                    .ok_or_else(|| Error::InvalidArgument("stuck_for must be positive".into()))?;
                Some(self.engine.clock.now() - d)
            }
            None => None,
        };
        let participant = if req.participant.is_empty() {
            None
        } else {
            Some(ParticipantName::parse(req.participant)?.to_string())
        };
        let after = if req.cursor.is_empty() {
            None
        } else {
            Some(
                ListCursor::decode(&req.cursor)
                    .ok_or_else(|| Error::InvalidArgument("cursor is not valid".into()))?,
            )
        };
        Ok(TxFilter {
            statuses,
            mode: convert::mode_from_wire(req.mode).map_err(Error::InvalidArgument)?,
            participant,
            created_before: ts(&req.created_before, "created_before")?,
            created_after: ts(&req.created_after, "created_after")?,
            updated_before: ts(&req.updated_before, "updated_before")?,
            needs_attention: req.needs_attention,
            stuck_since,
            gid_prefix: (!req.gid_prefix.is_empty()).then_some(req.gid_prefix),
            oldest_first: req.oldest_first,
            after,
            limit: match req.page_size {
                0 => DEFAULT_PAGE,
                n => n.min(MAX_PAGE),
            },
        })
    }
}

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn list_transactions(
        &self,
        request: Request<pb::ListTransactionsRequest>,
    ) -> std::result::Result<Response<pb::ListTransactionsResponse>, Status> {
        let req = request.into_inner();
        guarded("Admin.ListTransactions", "", async {
            let filter = self.filter(req)?;
            let (page, next) = self.store.admin_list(&filter).await?;
            Ok(pb::ListTransactionsResponse {
                transactions: page.iter().map(convert::summary).collect(),
                next_cursor: next.map(|c| c.encode()).unwrap_or_default(),
            })
        })
        .await
    }

    async fn get_transaction_detail(
        &self,
        request: Request<pb::GetTransactionDetailRequest>,
    ) -> std::result::Result<Response<pb::TransactionDetail>, Status> {
        let req = request.into_inner();
        guarded("Admin.GetTransactionDetail", &req.gid.clone(), async {
            let gid = gid(&req.gid)?;
            let (row, branches) = self.load(&gid).await?;
            let events = self.store.events(&gid).await?;
            Ok(convert::detail(&row, &branches, &events))
        })
        .await
    }

    async fn retry_transaction(
        &self,
        request: Request<pb::RetryTransactionRequest>,
    ) -> std::result::Result<Response<pb::OperatorActionResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        guarded("Admin.RetryTransaction", &req.gid.clone(), async {
            let note = optional_text("note", &req.note)?;
            self.operate(&gid(&req.gid)?, OperatorOp::RetryNow, &actor?, note)
                .await
        })
        .await
    }

    async fn rollback_transaction(
        &self,
        request: Request<pb::RollbackTransactionRequest>,
    ) -> std::result::Result<Response<pb::OperatorActionResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        guarded("Admin.RollbackTransaction", &req.gid.clone(), async {
            let reason = required_text("reason", &req.reason)?;
            let op = OperatorOp::Rollback {
                reason: reason.clone(),
            };
            self.operate(&gid(&req.gid)?, op, &actor?, Some(reason))
                .await
        })
        .await
    }

    async fn resolve_transaction(
        &self,
        request: Request<pb::ResolveTransactionRequest>,
    ) -> std::result::Result<Response<pb::OperatorActionResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        guarded("Admin.ResolveTransaction", &req.gid.clone(), async {
            let note = required_text("note", &req.note)?;
            let op = OperatorOp::Resolve { note: note.clone() };
            self.operate(&gid(&req.gid)?, op, &actor?, Some(note)).await
        })
        .await
    }

    async fn pause_transaction(
        &self,
        request: Request<pb::PauseTransactionRequest>,
    ) -> std::result::Result<Response<pb::OperatorActionResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        guarded("Admin.PauseTransaction", &req.gid.clone(), async {
            let note = optional_text("note", &req.note)?;
            self.operate(&gid(&req.gid)?, OperatorOp::Pause, &actor?, note)
                .await
        })
        .await
    }

    async fn resume_transaction(
        &self,
        request: Request<pb::ResumeTransactionRequest>,
    ) -> std::result::Result<Response<pb::OperatorActionResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        guarded("Admin.ResumeTransaction", &req.gid.clone(), async {
            let note = optional_text("note", &req.note)?;
            self.operate(&gid(&req.gid)?, OperatorOp::Resume, &actor?, note)
                .await
        })
        .await
    }

    async fn list_participant_health(
        &self,
        _request: Request<pb::ListParticipantHealthRequest>,
    ) -> std::result::Result<Response<pb::ListParticipantHealthResponse>, Status> {
        guarded("Admin.ListParticipantHealth", "", async {
            let registered = self.store.list_participants().await?;
            let stats: HashMap<_, _> = self
                .engine
                .clients
                .endpoint_stats()
                .into_iter()
                .map(|s| (s.url.clone(), s))
                .collect();
            let ts = crate::api::convert::timestamp;
            Ok(pb::ListParticipantHealthResponse {
                participants: registered
                    .iter()
                    .map(|p| pb::ParticipantHealth {
                        name: p.name.to_string(),
                        actions: p.actions.iter().map(|a| a.to_string()).collect(),
                        endpoints: p
                            .endpoints
                            .iter()
                            .map(|e| {
                                let s = stats.get(&e.url);
                                pb::EndpointHealth {
                                    url: e.url.to_string(),
                                    registered_at: Some(ts(e.registered_at)),
                                    last_seen_at: Some(ts(e.last_seen_at)),
                                    breaker: s
                                        .map_or("unknown", |s| s.breaker.as_str())
                                        .to_string(),
                                    last_success_at: s.and_then(|s| s.last_success_at).map(ts),
                                    recent_calls: s.map_or(0, |s| s.recent_calls),
                                    recent_failures: s.map_or(0, |s| s.recent_failures),
                                    last_failure_at: s.and_then(|s| s.last_failure_at).map(ts),
                                    last_error: s
                                        .and_then(|s| s.last_error.clone())
                                        .unwrap_or_default(),
                                }
                            })
                            .collect(),
                    })
                    .collect(),
                instance_id: self.engine.instance_id().to_string(),
            })
        })
        .await
    }

    async fn get_stats(
        &self,
        _request: Request<pb::GetStatsRequest>,
    ) -> std::result::Result<Response<pb::Stats>, Status> {
        guarded("Admin.GetStats", "", async {
            Ok(convert::stats(&self.store.admin_stats().await?))
        })
        .await
    }
}
