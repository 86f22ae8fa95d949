//! The one path from the engine to a participant. Before a branch exists:
//! the checks that a participant and its actions are registered and that a
//! payload fits ([`Engine::check_actions`], [`Engine::check_payload`]), the
//! same for a Try and for a saga step. After the branch is durable: one call
//! of one phase ([`Engine::call_participant`]), whoever makes it (a Try, a
//! phase-2 round, a saga action or compensation).

use std::time::{Duration, Instant};

use concord_proto::participant::v1::BranchRequest;

use super::Engine;
use crate::clock::CALL_MARGIN;
use crate::domain::metadata::Metadata;
use crate::domain::{
    ActionName, BranchId, Endpoint, EndpointUrl, Gid, ParticipantName, Protocol, UrlCall,
};
use crate::error::{Error, Result};
use crate::machine::{Outcome, Phase};
use crate::participant::client::{CallReply, UrlCallShape};
use crate::participant::registry::Entry;
use crate::store::BranchRecord;

/// The branches that `calls` name.
pub(crate) fn called<'a>(
    branches: &'a [BranchRecord],
    calls: &'a [(BranchId, Phase)],
) -> impl Iterator<Item = &'a BranchRecord> {
    calls
        .iter()
        .filter_map(|(id, _)| branches.iter().find(|b| &b.branch_id == id))
}

/// A call with less time than this left is not worth sending.
const MIN_CALL: Duration = Duration::from_millis(10);

/// One call of one phase of a durable branch.
pub(crate) struct BranchCall<'a> {
    pub gid: &'a Gid,
    pub branch: &'a BranchRecord,
    pub phase: Phase,
    /// The action named in the call: the branch's action, or its
    /// compensation for a saga's Compensate.
    pub action: &'a ActionName,
    pub attempt: u32,
    pub metadata: &'a Metadata,
    /// The latest moment the call may still be running at the participant
    /// (local clock): the lease's cover, or the Try's `call_until`. The
    /// call's deadline is cut to end [`CALL_MARGIN`] before it, and a call
    /// that would have no time left is not sent.
    pub until: Instant,
}

impl Engine {
    /// Refuses a payload over `max_payload_bytes`.
    pub(crate) fn check_payload(&self, payload: &[u8]) -> Result<()> {
        let max = self.settings.max_payload_bytes;
        if payload.len() > max {
            return Err(Error::InvalidArgument(format!(
                "payload is {} bytes, the limit is {max}",
                payload.len()
            )));
        }
        Ok(())
    }

    /// The registry entry of `participant`, which must offer every one of
    /// `actions`: `NOT_FOUND` naming what is missing otherwise.
    pub(crate) async fn check_actions(
        &self,
        participant: &ParticipantName,
        actions: &[&ActionName],
    ) -> Result<Entry> {
        let entry = self.registry.lookup(participant).await?.ok_or_else(|| {
            Error::NotFound(format!("participant {participant} is not registered"))
        })?;
        if let Some(missing) = actions.iter().find(|a| !entry.actions.contains(**a)) {
            let mut known: Vec<&str> = entry.actions.iter().map(ActionName::as_str).collect();
            known.sort_unstable();
            return Err(Error::NotFound(format!(
                "participant {participant} has no action {missing} (registered: {})",
                known.join(", ")
            )));
        }
        Ok(entry)
    }

    /// Calls one phase of a branch on one of its participant's registered
    /// endpoints, with the branch's deadline. An unknown participant or an
    /// unreachable registry is an unknown outcome, retried like any other:
    /// the branch is durable and its call is owed.
    pub(crate) async fn call_participant(&self, call: BranchCall<'_>) -> CallReply {
        let branch = call.branch;
        if let Some(url_call) = &branch.url_call {
            return self.call_url(&call, url_call).await;
        }
        let endpoints = match self.registry.lookup(&branch.participant).await {
            Ok(Some(entry)) => entry.endpoints,
            Ok(None) => {
                return CallReply::unknown(
                    "NOT_FOUND",
                    format!("participant {} is not registered", branch.participant),
                );
            }
            Err(e) => {
                return CallReply::unknown("UNAVAILABLE", format!("registry unavailable: {e}"));
            }
        };
        let request = call.request();
        let timeout = match self.covered_timeout(&call) {
            Ok(t) => t,
            Err(reply) => return reply,
        };
        let reply = self
            .clients
            .call(
                &branch.participant,
                &endpoints,
                call.phase,
                request,
                timeout,
            )
            .await;
        tracing::debug!(gid = %call.gid, branch_id = %branch.branch_id, participant = %branch.participant,
            action = %call.action, phase = call.phase.as_str(), attempt = call.attempt,
            code = reply.outcome.code(), "participant replied");
        reply
    }

    /// The call's deadline: the branch's call timeout, cut to what the
    /// cover leaves; an unknown outcome when nothing is left.
    fn covered_timeout(&self, call: &BranchCall<'_>) -> std::result::Result<Duration, CallReply> {
        let budget = call
            .until
            .saturating_duration_since(Instant::now())
            .saturating_sub(CALL_MARGIN);
        let timeout = self.call_timeout_of(call.branch).min(budget);
        if timeout < MIN_CALL {
            // Cannot happen when the caller covered the call first; if it
            // does, not calling is the safe side: the branch stays owed.
            tracing::warn!(gid = %call.gid, branch_id = %call.branch.branch_id, "call not sent: nothing covers its deadline");
            return Err(CallReply::unknown(
                "UNAVAILABLE",
                "not called: the lease did not cover the call's deadline".to_string(),
            ));
        }
        Ok(timeout)
    }

    /// One call of a branch given as a URL (the DTM-compatible API), in
    /// DTM's convention. A phase without a URL succeeds without a call, as
    /// in DTM (a saga step with nothing to compensate).
    async fn call_url(&self, call: &BranchCall<'_>, url_call: &UrlCall) -> CallReply {
        let branch = call.branch;
        let Some(url) = url_call.url(call.phase.as_str()) else {
            return CallReply {
                outcome: Outcome::Succeeded,
                payload: Vec::new(),
                endpoint: None,
            };
        };
        let timeout = match self.covered_timeout(call) {
            Ok(t) => t,
            Err(reply) => return reply,
        };
        let endpoint = Endpoint {
            url: EndpointUrl::from_trusted(url.to_string()),
            protocol: Protocol::Dtm,
        };
        let request = call.request();
        let shape = UrlCallShape {
            trans_type: &url_call.trans_type,
            branch_id: &url_call.branch_id,
            headers: &url_call.headers,
        };
        let reply = self
            .clients
            .call_url(
                &branch.participant,
                endpoint,
                call.phase,
                request,
                timeout,
                shape,
            )
            .await;
        tracing::debug!(gid = %call.gid, branch_id = %branch.branch_id, url, phase = call.phase.as_str(),
            attempt = call.attempt, code = reply.outcome.code(), "url branch replied");
        reply
    }
}

impl BranchCall<'_> {
    /// What the participant receives for this call, whatever the protocol.
    fn request(&self) -> BranchRequest {
        BranchRequest {
            gid: self.gid.to_string(),
            branch_id: self.branch.branch_id.to_string(),
            action: self.action.to_string(),
            payload: self.branch.payload.clone(),
            attempt: self.attempt,
            metadata: self.metadata.clone().into_iter().collect(),
        }
    }
}
