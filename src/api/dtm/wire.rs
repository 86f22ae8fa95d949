//! DTM's HTTP wire format, read into Concord's engine requests and written
//! back from Concord's records: the transaction body its client SDKs send
//! to `prepare`, `submit` and `abort` (DTM's `TransBase` with its options),
//! the body of `registerBranch`, and the shape `query` answers. Which
//! field means what is DTM's: `timeout_to_fail`, `request_timeout` and
//! `retry_interval` are seconds; `custom_data` carries a concurrent saga's
//! `orders` (step index -> indices of the steps it waits for).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use crate::domain::metadata::Metadata;
use crate::domain::url_call::{self, UrlCall};
use crate::domain::{BranchId, Endpoint, Gid, Protocol};
use crate::engine::msg::{MsgRequest, MsgStepRequest};
use crate::engine::saga::{MAX_CONCURRENCY, SagaRequest, StepRequest};
use crate::engine::tcc::UrlBranch;
use crate::error::{Error, Result};
use crate::machine::policy::{CallPolicy, RetrySpec};
use crate::machine::{CallStatus, Mode, Phase, Status};
use crate::store::{BranchRecord, TxRecord};

/// Metadata keys under which a TCC transaction keeps the options given at
/// `prepare`, for the branches registered later (DTM's `registerBranch`
/// carries none).
pub const META_REQUEST_TIMEOUT: &str = "dtm.request_timeout";
pub const META_RETRY_INTERVAL: &str = "dtm.retry_interval";
pub const META_BRANCH_HEADERS: &str = "dtm.branch_headers";

/// The transaction types this API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransType {
    Tcc,
    Saga,
    Msg,
}

impl TransType {
    /// Reads DTM's `trans_type`; xa, workflow and anything else are
    /// refused with what is supported.
    pub fn parse(raw: &str) -> Result<Self> {
        match raw {
            "tcc" => Ok(TransType::Tcc),
            "saga" => Ok(TransType::Saga),
            "msg" => Ok(TransType::Msg),
            "" => Err(Error::InvalidArgument("trans_type is required".into())),
            other => Err(Error::FailedPrecondition(format!(
                "trans_type {other:?} is not supported by concord's dtm api; supported: tcc, saga, msg"
            ))),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TransType::Tcc => "tcc",
            TransType::Saga => "saga",
            TransType::Msg => "msg",
        }
    }
}

/// `null` reads as the default (DTM's Python SDK sends `null` for unset
/// options).
fn nullable<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The body of `prepare`, `submit` and `abort`. Unknown fields are ignored
/// (SDK versions add their own).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TransBody {
    #[serde(deserialize_with = "nullable")]
    pub gid: String,
    #[serde(deserialize_with = "nullable")]
    pub trans_type: String,
    #[serde(deserialize_with = "nullable")]
    pub steps: Vec<BTreeMap<String, String>>,
    #[serde(deserialize_with = "nullable")]
    pub payloads: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub custom_data: String,
    #[serde(deserialize_with = "nullable")]
    pub query_prepared: String,
    #[serde(deserialize_with = "nullable")]
    pub protocol: String,
    #[serde(deserialize_with = "nullable")]
    pub wait_result: bool,
    #[serde(deserialize_with = "nullable")]
    pub timeout_to_fail: i64,
    #[serde(deserialize_with = "nullable")]
    pub request_timeout: i64,
    #[serde(deserialize_with = "nullable")]
    pub retry_interval: i64,
    #[serde(deserialize_with = "nullable")]
    pub passthrough_headers: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub branch_headers: BTreeMap<String, String>,
    #[serde(deserialize_with = "nullable")]
    pub concurrent: bool,
    #[serde(deserialize_with = "nullable")]
    pub rollback_reason: String,
}

/// A concurrent saga's `custom_data`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SagaCustom {
    #[serde(deserialize_with = "nullable")]
    orders: BTreeMap<String, Vec<usize>>,
    #[serde(deserialize_with = "nullable")]
    concurrent: bool,
}

/// Seconds as DTM gives them; negative is refused, 0 means unset.
fn seconds(field: &str, n: i64) -> Result<Option<Duration>> {
    match n {
        0 => Ok(None),
        n if n < 0 => Err(Error::InvalidArgument(format!(
            "{field} must not be negative"
        ))),
        n => Ok(Some(Duration::from_secs(n as u64))),
    }
}

/// DTM's `retry_interval` as a branch policy: the first delay, doubled on
/// each further failure as DTM does, at most a minute (or the interval).
fn retry_policy(interval: Option<Duration>) -> CallPolicy {
    match interval {
        None => CallPolicy::default(),
        Some(initial) => CallPolicy {
            retry: Some(RetrySpec {
                initial,
                factor: 2.0,
                max: initial.max(Duration::from_secs(60)),
                jitter: true,
            }),
            ..CallPolicy::default()
        },
    }
}

impl TransBody {
    pub fn gid(&self) -> Result<Gid> {
        if self.gid.is_empty() {
            return Err(Error::InvalidArgument(
                "gid is required (GET /api/dtmsvr/newGid gives one)".into(),
            ));
        }
        Ok(Gid::parse(self.gid.as_str())?)
    }

    pub fn trans_type(&self) -> Result<TransType> {
        let t = TransType::parse(&self.trans_type)?;
        // Branches of this API are URLs called over HTTP; DTM's gRPC and
        // JSON-RPC branches are not.
        match self.protocol.as_str() {
            "" | "http" => Ok(t),
            other => Err(Error::FailedPrecondition(format!(
                "protocol {other:?} is not supported by concord's dtm api; branches are http urls"
            ))),
        }
    }

    /// Every header the branches are called with: `branch_headers`, and
    /// the initiator's own request headers that `passthrough_headers`
    /// names.
    pub fn headers(&self, request: &http::HeaderMap) -> Result<BTreeMap<String, String>> {
        let mut headers = self.branch_headers.clone();
        for name in &self.passthrough_headers {
            if let Some(v) = request.get(name.as_str()).and_then(|v| v.to_str().ok()) {
                headers.insert(name.clone(), v.to_string());
            }
        }
        url_call::check_headers(&headers)?;
        Ok(headers)
    }

    fn payload(&self, i: usize) -> Vec<u8> {
        match self.payloads.get(i) {
            Some(p) => p.clone().into_bytes(),
            None => self
                .steps
                .get(i)
                .and_then(|s| s.get("data"))
                .cloned()
                .unwrap_or_default()
                .into_bytes(),
        }
    }

    fn step_url(&self, i: usize, key: &str, required: bool) -> Result<String> {
        let raw = self.steps[i].get(key).cloned().unwrap_or_default();
        if raw.is_empty() {
            if required {
                return Err(Error::InvalidArgument(format!(
                    "steps[{i}]: {key} url is required"
                )));
            }
            return Ok(raw);
        }
        url_call::parse_url(&raw)
            .map(|_| raw)
            .map_err(|e| Error::InvalidArgument(format!("steps[{i}]: {}", e.0)))
    }

    fn check_steps(&self) -> Result<()> {
        if self.steps.is_empty() {
            return Err(Error::InvalidArgument("steps must not be empty".into()));
        }
        if !self.payloads.is_empty() && self.payloads.len() != self.steps.len() {
            return Err(Error::InvalidArgument(format!(
                "{} steps but {} payloads",
                self.steps.len(),
                self.payloads.len()
            )));
        }
        Ok(())
    }

    /// A saga to submit: each step's action and compensate URLs, run one
    /// after another, or, when `concurrent`, as `custom_data`'s `orders`
    /// say (no orders: all at once).
    pub fn saga(&self, headers: BTreeMap<String, String>) -> Result<SagaRequest> {
        self.check_steps()?;
        let custom: SagaCustom = if self.custom_data.is_empty() {
            SagaCustom::default()
        } else {
            serde_json::from_str(&self.custom_data).map_err(|e| {
                Error::InvalidArgument(format!("custom_data is not a saga's options: {e}"))
            })?
        };
        let concurrent = self.concurrent || custom.concurrent;
        let n = self.steps.len();
        let mut depends_on: Vec<Vec<usize>> = vec![Vec::new(); n];
        if concurrent {
            for (step, before) in &custom.orders {
                let i: usize = step.parse().ok().filter(|i| *i < n).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "custom_data: orders names step {step:?}, which does not exist"
                    ))
                })?;
                depends_on[i] = before.clone();
            }
        } else {
            for (i, deps) in depends_on.iter_mut().enumerate().skip(1) {
                deps.push(i - 1);
            }
        }
        let call_timeout = seconds("request_timeout", self.request_timeout)?;
        let policy = retry_policy(seconds("retry_interval", self.retry_interval)?);
        let mut steps = Vec::with_capacity(n);
        for (i, deps) in depends_on.into_iter().enumerate() {
            let action = self.step_url(i, "action", true)?;
            let compensate = self.step_url(i, "compensate", false)?;
            let url_call = UrlCall {
                trans_type: TransType::Saga.as_str().into(),
                branch_id: format!("{:02}", i + 1),
                urls: [
                    (Phase::Execute.as_str().to_string(), action.clone()),
                    (Phase::Compensate.as_str().to_string(), compensate.clone()),
                ]
                .into(),
                headers: headers.clone(),
            };
            steps.push(StepRequest {
                participant: url_call::participant_of(&action),
                action: url_call::action_of(&action),
                compensation: if compensate.is_empty() {
                    crate::domain::ActionName::from_trusted("none".into())
                } else {
                    url_call::action_of(&compensate)
                },
                payload: self.payload(i),
                depends_on: deps,
                // DTM compensates a step whose action failed, too.
                compensate_rejected: true,
                call_timeout,
                policy,
                url_call: Some(url_call),
            });
        }
        Ok(SagaRequest {
            // Set by the handler from the caller's identity.
            initiator: None,
            gid: Some(self.gid()?),
            steps,
            timeout: seconds("timeout_to_fail", self.timeout_to_fail)?,
            metadata: Metadata::default(),
            concurrency: Some(if concurrent {
                (n as u32).clamp(1, MAX_CONCURRENCY)
            } else {
                1
            }),
            dependencies_as_given: true,
        })
    }

    /// A message: its steps' action URLs, run in order, and its
    /// query-back, `query_prepared` (required unless `submitted_at_once`).
    pub fn msg(
        &self,
        headers: BTreeMap<String, String>,
        submitted_at_once: bool,
    ) -> Result<MsgRequest> {
        self.check_steps()?;
        let query = match self.query_prepared.as_str() {
            "" if submitted_at_once => None,
            "" => {
                return Err(Error::InvalidArgument(
                    "query_prepared is required to prepare a msg".into(),
                ));
            }
            url => Some(
                Endpoint::parse(url, Protocol::Dtm)
                    .map_err(|e| Error::InvalidArgument(format!("query_prepared: {}", e.0)))?,
            ),
        };
        let call_timeout = seconds("request_timeout", self.request_timeout)?;
        let mut steps = Vec::with_capacity(self.steps.len());
        for i in 0..self.steps.len() {
            let action = self.step_url(i, "action", true)?;
            steps.push(MsgStepRequest {
                participant: url_call::participant_of(&action),
                action: url_call::action_of(&action),
                payload: self.payload(i),
                call_timeout,
                url_call: Some(UrlCall {
                    trans_type: TransType::Msg.as_str().into(),
                    branch_id: format!("{:02}", i + 1),
                    urls: [(Phase::Execute.as_str().to_string(), action)].into(),
                    headers: headers.clone(),
                }),
            });
        }
        Ok(MsgRequest {
            // Set by the handler from the caller's identity.
            initiator: None,
            gid: Some(self.gid()?),
            steps,
            query,
            timeout: seconds("timeout_to_fail", self.timeout_to_fail)?,
            metadata: Metadata::default(),
        })
    }

    /// The options a TCC transaction keeps for its branches, as metadata.
    pub fn tcc_metadata(&self, headers: &BTreeMap<String, String>) -> Result<Metadata> {
        let mut m = Metadata::default();
        if let Some(t) = seconds("request_timeout", self.request_timeout)? {
            m.insert(META_REQUEST_TIMEOUT.into(), t.as_secs().to_string());
        }
        if let Some(t) = seconds("retry_interval", self.retry_interval)? {
            m.insert(META_RETRY_INTERVAL.into(), t.as_secs().to_string());
        }
        if !headers.is_empty() {
            m.insert(
                META_BRANCH_HEADERS.into(),
                serde_json::to_string(headers).unwrap_or_default(),
            );
        }
        crate::domain::metadata::validate(&m)?;
        Ok(m)
    }
}

/// The body of `registerBranch`: every value a string.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RegisterBody {
    #[serde(deserialize_with = "nullable")]
    pub gid: String,
    #[serde(deserialize_with = "nullable")]
    pub branch_id: String,
    #[serde(deserialize_with = "nullable")]
    pub trans_type: String,
    #[serde(deserialize_with = "nullable")]
    pub data: String,
    #[serde(deserialize_with = "nullable")]
    pub confirm: String,
    #[serde(deserialize_with = "nullable")]
    pub cancel: String,
}

impl RegisterBody {
    /// A TCC branch with its Confirm and Cancel URLs, carrying the options
    /// its transaction was prepared with (`tx_metadata`).
    pub fn branch(&self, tx_metadata: &Metadata) -> Result<UrlBranch> {
        if TransType::parse(&self.trans_type)? != TransType::Tcc {
            return Err(Error::FailedPrecondition(format!(
                "registerBranch is for tcc branches, not {}",
                self.trans_type
            )));
        }
        let gid = Gid::parse(self.gid.as_str())?;
        let branch_id = BranchId::parse(self.branch_id.as_str())?;
        let mut urls = BTreeMap::new();
        for (phase, raw) in [
            (Phase::Confirm, &self.confirm),
            (Phase::Cancel, &self.cancel),
        ] {
            if raw.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "{} url is required",
                    phase.as_str()
                )));
            }
            url_call::parse_url(raw)?;
            urls.insert(phase.as_str().to_string(), raw.clone());
        }
        let number = |key: &str| {
            tx_metadata
                .get(key)
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs)
        };
        let headers: BTreeMap<String, String> = tx_metadata
            .get(META_BRANCH_HEADERS)
            .and_then(|h| serde_json::from_str(h).ok())
            .unwrap_or_default();
        Ok(UrlBranch {
            participant: url_call::participant_of(&self.confirm),
            action: url_call::action_of(&self.confirm),
            payload: self.data.clone().into_bytes(),
            call_timeout: number(META_REQUEST_TIMEOUT),
            policy: retry_policy(number(META_RETRY_INTERVAL)),
            url_call: UrlCall {
                trans_type: TransType::Tcc.as_str().into(),
                branch_id: self.branch_id.clone(),
                urls,
                headers,
            },
            gid,
            branch_id,
        })
    }
}

/// DTM's name of a transaction status.
pub fn status_name(status: Status) -> &'static str {
    match status {
        Status::Trying | Status::Prepared => "prepared",
        Status::Confirming | Status::Running | Status::Submitted => "submitted",
        Status::Confirmed | Status::Succeeded => "succeed",
        Status::Cancelling | Status::Compensating => "aborting",
        Status::Cancelled | Status::Compensated | Status::Aborted => "failed",
    }
}

fn branch_status(s: CallStatus) -> &'static str {
    match s {
        CallStatus::Succeeded => "succeed",
        CallStatus::Rejected => "failed",
        _ => "prepared",
    }
}

/// What `query` answers: the transaction and one entry per branch and
/// operation, as DTM lists them.
pub fn query_reply(tx: &TxRecord, branches: &[BranchRecord]) -> Value {
    let trans_type = match tx.mode {
        Mode::Tcc => "tcc",
        Mode::Saga => "saga",
        Mode::Msg => "msg",
    };
    let mut ops = Vec::new();
    for b in branches {
        let branch_id = b
            .url_call
            .as_ref()
            .map_or_else(|| b.branch_id.to_string(), |c| c.branch_id.clone());
        let urls = b
            .url_call
            .as_ref()
            .map(|c| c.urls.clone())
            .unwrap_or_default();
        for (phase, url) in urls {
            let (op, status) = match phase.as_str() {
                "execute" => ("action", branch_status(b.first_phase)),
                "compensate"
                    if tx.status == Status::Compensating || tx.status == Status::Compensated =>
                {
                    ("compensate", branch_status(b.second_phase))
                }
                "confirm" if tx.status.second_phase() == Some(Phase::Confirm) => {
                    ("confirm", branch_status(b.second_phase))
                }
                "cancel" if tx.status.second_phase() == Some(Phase::Cancel) => {
                    ("cancel", branch_status(b.second_phase))
                }
                other => (crate::participant::http::dtm_op(other), "prepared"),
            };
            ops.push(json!({
                "gid": tx.gid.as_str(),
                "branch_id": branch_id,
                "op": op,
                "url": url,
                "status": status,
                "create_time": b.created_at.to_rfc3339(),
                "update_time": b.updated_at.to_rfc3339(),
            }));
        }
    }
    json!({
        "transaction": {
            "gid": tx.gid.as_str(),
            "trans_type": trans_type,
            "status": status_name(tx.status),
            "protocol": "http",
            "create_time": tx.created_at.to_rfc3339(),
            "update_time": tx.updated_at.to_rfc3339(),
            "finish_time": tx.finished_at.map(|t| t.to_rfc3339()),
            "rollback_reason": tx.rollback_reason,
            "needs_attention": tx.needs_attention,
            "attention_reason": tx.attention_reason,
        },
        "branches": ops,
    })
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
