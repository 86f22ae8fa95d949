//! `concord.v1.Admin`: the operator API behind `concord tx …`. Thin like the
//! other adapters: parse the request, ask the operator rules
//! ([`crate::machine::operator`]) what a command means, persist it with a
//! compare-and-set in [`crate::store::admin`], wake the recovery loop when
//! there is work. Every call needs an identity with the admin scope, checked
//! by the guard in front of every service ([`crate::api::guard`]); its name
//! is the actor of every operator action.

pub mod convert;

use std::sync::Arc;

use concord_proto::v1 as pb;
use concord_proto::v1::admin_server::{Admin, AdminServer};
use tonic::{Request, Response, Status};

use super::guarded;
use crate::domain::MAX_REASON;
use crate::domain::{BranchId, Gid, ParticipantName};
use crate::engine::operator::{Acted, Operator};
use crate::error::{Error, Result};
use crate::machine::operator::{BranchOp, OperatorOp};
use crate::store::admin::{ListCursor, TxFilter};

/// Page size when the request gives none, and the largest allowed.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

pub struct AdminApi {
    operator: Arc<Operator>,
}

/// The Admin service (the guard authenticates its calls).
pub type AdminService = AdminServer<AdminApi>;

impl AdminApi {
    pub fn new(operator: Arc<Operator>) -> Self {
        Self { operator }
    }

    /// The service with its message size limits.
    pub fn service(self, max_message_bytes: usize) -> AdminService {
        AdminServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }

    /// Runs an operator command and answers with its result.
    async fn act(
        &self,
        gid: &str,
        op: OperatorOp,
        actor: Result<String>,
        note: Option<String>,
    ) -> Result<pb::OperatorActionResponse> {
        let Acted {
            changed,
            message,
            tx,
        } = self
            .operator
            .act(&self::gid(gid)?, op, &actor?, note)
            .await?;
        Ok(pb::OperatorActionResponse {
            changed,
            message,
            transaction: Some(convert::summary(&tx)),
        })
    }
}

impl AdminApi {
    /// Runs a command on one branch and answers with its result.
    async fn act_on_branch(
        &self,
        gid: &str,
        branch: &str,
        op: BranchOp,
        actor: Result<String>,
        note: Option<String>,
    ) -> Result<pb::OperatorActionResponse> {
        let branch = BranchId::parse(branch.to_string())
            .map_err(|e| Error::InvalidArgument(format!("branch_id: {}", e.0)))?;
        let Acted {
            changed,
            message,
            tx,
        } = self
            .operator
            .act_on_branch(&self::gid(gid)?, &branch, op, &actor?, note)
            .await?;
        Ok(pb::OperatorActionResponse {
            changed,
            message,
            transaction: Some(convert::summary(&tx)),
        })
    }
}

fn gid(raw: &str) -> Result<Gid> {
    Ok(Gid::parse(raw)?)
}

/// The operator: the admin identity the guard let in.
fn actor<T>(request: &Request<T>) -> Result<String> {
    let caller = crate::api::guard::caller(request)?;
    caller.require(crate::auth::Scope::Admin)?;
    Ok(caller.name.clone())
}

/// A required free-text field, trimmed and bounded.
pub(crate) fn required_text(field: &str, value: &str) -> Result<String> {
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

pub(crate) fn optional_text(field: &str, value: &str) -> Result<Option<String>> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    required_text(field, value).map(Some)
}

/// The list filter of a request, and its `stuck_for`.
fn filter(req: pb::ListTransactionsRequest) -> Result<(TxFilter, Option<std::time::Duration>)> {
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
                convert::from_timestamp(t)
                    .ok_or_else(|| Error::InvalidArgument(format!("{field} is not a valid time")))
            })
            .transpose()
    };
    let stuck_for = req
        .stuck_for
        .as_ref()
        .map(|d| {
            crate::api::convert::duration(d)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| Error::InvalidArgument("stuck_for must be positive".into()))
        })
        .transpose()?;
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
    let filter = TxFilter {
        statuses,
        mode: convert::mode_from_wire(req.mode).map_err(Error::InvalidArgument)?,
        participant,
        created_before: ts(&req.created_before, "created_before")?,
        created_after: ts(&req.created_after, "created_after")?,
        updated_before: ts(&req.updated_before, "updated_before")?,
        needs_attention: req.needs_attention,
        stuck_since: None,
        gid_prefix: (!req.gid_prefix.is_empty()).then_some(req.gid_prefix),
        oldest_first: req.oldest_first,
        after,
        limit: match req.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        },
    };
    Ok((filter, stuck_for))
}

#[tonic::async_trait]
impl Admin for AdminApi {
    async fn list_transactions(
        &self,
        request: Request<pb::ListTransactionsRequest>,
    ) -> std::result::Result<Response<pb::ListTransactionsResponse>, Status> {
        let req = request.into_inner();
        guarded("Admin.ListTransactions", "", async {
            let (filter, stuck_for) = filter(req)?;
            let (page, next) = self.operator.list(filter, stuck_for).await?;
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
            let (row, branches, events) = self.operator.detail(&gid(&req.gid)?).await?;
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
            self.act(&req.gid, OperatorOp::RetryNow, actor, note).await
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
            self.act(&req.gid, op, actor, Some(reason)).await
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
            self.act(&req.gid, op, actor, Some(note)).await
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
            self.act(&req.gid, OperatorOp::Pause, actor, note).await
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
            self.act(&req.gid, OperatorOp::Resume, actor, note).await
        })
        .await
    }

    async fn list_participant_health(
        &self,
        _request: Request<pb::ListParticipantHealthRequest>,
    ) -> std::result::Result<Response<pb::ListParticipantHealthResponse>, Status> {
        guarded("Admin.ListParticipantHealth", "", async {
            let participants = self.operator.participants().await?;
            Ok(pb::ListParticipantHealthResponse {
                participants: participants.iter().map(convert::participant).collect(),
                instance_id: self.operator.instance_id().to_string(),
            })
        })
        .await
    }

    async fn get_stats(
        &self,
        _request: Request<pb::GetStatsRequest>,
    ) -> std::result::Result<Response<pb::Stats>, Status> {
        guarded("Admin.GetStats", "", async {
            Ok(convert::stats(&self.operator.stats().await?))
        })
        .await
    }

    async fn bulk_act(
        &self,
        request: Request<pb::BulkActRequest>,
    ) -> std::result::Result<Response<pb::BulkActResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        guarded("Admin.BulkAct", "", async {
            let actor = actor?;
            let f = req.filter.unwrap_or_default();
            let narrowed = !f.statuses.is_empty()
                || !f.participant.is_empty()
                || f.needs_attention
                || f.stuck_for.is_some()
                || f.created_before.is_some()
                || f.updated_before.is_some()
                || !f.gid_prefix.is_empty();
            if !narrowed {
                return Err(Error::InvalidArgument(
                    "give at least one filter (statuses, participant, needs_attention, stuck_for, created_before, updated_before or gid_prefix)".into(),
                ));
            }
            let (filter, stuck_for) = filter(f)?;
            let op = match pb::BulkAction::try_from(req.action) {
                Ok(pb::BulkAction::Retry) => OperatorOp::RetryNow,
                Ok(pb::BulkAction::Pause) => OperatorOp::Pause,
                Ok(pb::BulkAction::Resume) => OperatorOp::Resume,
                Ok(pb::BulkAction::Resolve) => OperatorOp::Resolve {
                    note: required_text("note", &req.note)?,
                },
                _ => {
                    return Err(Error::InvalidArgument(
                        "action must be retry, pause, resume or resolve".into(),
                    ));
                }
            };
            let note = optional_text("note", &req.note)?;
            let only = req
                .gids
                .iter()
                .map(|g| gid(g))
                .collect::<Result<Vec<_>>>()?;
            let limit = match req.limit {
                0 => crate::engine::operator::MAX_BULK,
                n => n,
            };
            let (results, truncated) = self
                .operator
                .bulk(filter, stuck_for, op, &only, &actor, note, req.dry_run, limit)
                .await?;
            Ok(pb::BulkActResponse {
                results: results
                    .into_iter()
                    .map(|r| pb::BulkResult {
                        gid: r.gid.to_string(),
                        outcome: r.outcome.as_str().to_string(),
                        message: r.message,
                        status: crate::api::convert::status(r.status) as i32,
                    })
                    .collect(),
                truncated,
            })
        })
        .await
    }

    async fn retry_branch(
        &self,
        request: Request<pb::RetryBranchRequest>,
    ) -> std::result::Result<Response<pb::OperatorActionResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        guarded("Admin.RetryBranch", &req.gid.clone(), async {
            let note = optional_text("note", &req.note)?;
            self.act_on_branch(&req.gid, &req.branch_id, BranchOp::Retry, actor, note)
                .await
        })
        .await
    }

    async fn skip_branch(
        &self,
        request: Request<pb::SkipBranchRequest>,
    ) -> std::result::Result<Response<pb::OperatorActionResponse>, Status> {
        let actor = actor(&request);
        let req = request.into_inner();
        guarded("Admin.SkipBranch", &req.gid.clone(), async {
            let note = required_text("note", &req.note)?;
            let op = BranchOp::Skip { note: note.clone() };
            self.act_on_branch(&req.gid, &req.branch_id, op, actor, Some(note))
                .await
        })
        .await
    }
}
