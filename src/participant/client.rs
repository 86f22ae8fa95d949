//! Calls to participants: endpoint choice (round-robin over endpoints whose
//! circuit breaker lets calls through), a deadline on every call, and the
//! classification of replies by the outcome contract (OK, ABORTED = rejected,
//! anything else = unknown). Each endpoint is called over its registered
//! protocol: gRPC here, HTTP/JSON through [`super::http`]; breaker, metrics
//! and endpoint statistics are the same for both. It also sees first when a
//! participant is back (an answer after failed calls) and says so through
//! [`Recovered`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use concord_proto::participant::v1::message_initiator_client::MessageInitiatorClient;
use concord_proto::participant::v1::participant_client::ParticipantClient;
use concord_proto::participant::v1::{BranchRequest, BranchResponse};
use tonic::Code;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint as GrpcEndpoint};
use tracing::Instrument;

use crate::domain::{Endpoint, EndpointUrl, ParticipantName, Protocol};
use crate::machine::{Outcome, Phase};
use crate::participant::breaker::{Breaker, BreakerState};
use crate::participant::bulkhead::{Bulkheads, DEFAULT_PARTICIPANT_CONCURRENCY};
use crate::participant::credential::Credential;
use crate::participant::http::{Answer, DtmCall, HttpTransport, dtm_op};
use crate::participant::recovered::Recovered;

/// The name a gRPC code is recorded under ("UNAVAILABLE", ...).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// How a branch given as a URL is called (DTM's convention): the
/// transaction type, the branch id as DTM numbers it, and its headers.
#[derive(Debug, Clone, Copy)]
pub struct UrlCallShape<'a> {
    pub trans_type: &'a str,
    pub branch_id: &'a str,
    pub headers: &'a std::collections::BTreeMap<String, String>,
}

/// Reply of one call: the classified outcome and, on success, the payload.
#[derive(Debug, Clone)]
pub struct CallReply {
    pub outcome: Outcome,
    pub payload: Vec<u8>,
    pub endpoint: Option<EndpointUrl>,
}

impl CallReply {
    /// A call that was not made, or not answered: its outcome is unknown.
    pub fn unknown(code: &str, message: String) -> Self {
        CallReply {
            outcome: Outcome::Unknown {
                code: code.into(),
                message,
            },
            payload: Vec::new(),
            endpoint: None,
        }
    }
}

/// Classifies a gRPC result by the outcome contract.
pub fn classify(result: Result<BranchResponse, tonic::Status>) -> (Outcome, Vec<u8>) {
    match result {
        Ok(reply) => (Outcome::Succeeded, reply.payload),
        Err(status) if status.code() == Code::Aborted => (
            Outcome::Rejected {
                message: status.message().to_string(),
            },
            Vec::new(),
        ),
        Err(status) => (
            Outcome::Unknown {
                code: code_name(status.code()).to_string(),
                message: status.message().to_string(),
            },
            Vec::new(),
        ),
    }
}

/// Whether a failed call says the endpoint itself is unhealthy: it could
/// not be reached (a transport error, which tonic attaches as the status'
/// source) or did not answer in time. Any status the participant itself
/// sent, UNAVAILABLE included, proves it is alive and answering.
fn endpoint_failed(result: &Result<BranchResponse, tonic::Status>) -> bool {
    match result {
        Ok(_) => false,
        Err(s) => match s.code() {
            Code::DeadlineExceeded => true,
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal => {
                std::error::Error::source(s).is_some()
            }
            _ => false,
        },
    }
}

/// Endpoint health as shown to operators.
#[derive(Debug, Clone)]
pub struct EndpointHealth {
    pub url: EndpointUrl,
    pub breaker: BreakerState,
}

/// Outcomes remembered per endpoint for the recent failure rate.
const RECENT_CALLS: usize = 100;

/// What one instance remembers of its calls to one endpoint.
#[derive(Debug, Clone, Default)]
struct EndpointStats {
    /// `true` for a call that failed without an answer (oldest first).
    recent: VecDeque<bool>,
    last_success_at: Option<chrono::DateTime<chrono::Utc>>,
    last_failure_at: Option<chrono::DateTime<chrono::Utc>>,
    last_error: Option<String>,
}

impl EndpointStats {
    fn record(&mut self, outcome: &Outcome, now: chrono::DateTime<chrono::Utc>) {
        // ABORTED is an answer (a business "no"), not a failure of the
        // endpoint; every other non-OK outcome is.
        let failed = matches!(outcome, Outcome::Unknown { .. });
        if self.recent.len() == RECENT_CALLS {
            self.recent.pop_front();
        }
        self.recent.push_back(failed);
        if failed {
            self.last_failure_at = Some(now);
            self.last_error = Some(format!("{} {}", outcome.code(), outcome.message()));
        } else if *outcome == Outcome::Succeeded {
            self.last_success_at = Some(now);
        }
    }
}

/// Call statistics of one endpoint as shown to operators.
#[derive(Debug, Clone)]
pub struct EndpointCallStats {
    pub url: EndpointUrl,
    pub breaker: BreakerState,
    /// Calls among the last 100 and how many of them failed.
    pub recent_calls: u32,
    pub recent_failures: u32,
    pub last_success_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_failure_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_error: Option<String>,
}

/// Pool of channels and breakers, shared by every call of one instance.
pub struct ParticipantClients {
    channels: Mutex<HashMap<EndpointUrl, Channel>>,
    breakers: Mutex<HashMap<EndpointUrl, Breaker>>,
    /// Recent outcomes per endpoint, for operators (this instance only).
    stats: Mutex<HashMap<EndpointUrl, EndpointStats>>,
    breaker_failures: u32,
    breaker_cooldown: Duration,
    max_message_bytes: usize,
    /// TLS of `https://` endpoints; `None` uses tonic's defaults.
    tls: Option<ClientTlsConfig>,
    /// TLS of `https://` HTTP/JSON endpoints; `None`: the system's roots.
    http_tls: Option<rustls::ClientConfig>,
    /// Built at the first HTTP call, so that gRPC-only deployments never
    /// read the system's certificates for it.
    http: OnceLock<Result<HttpTransport, String>>,
    /// Participants whose last call failed without an answer: their next
    /// answer means they are back.
    failing: Mutex<HashSet<ParticipantName>>,
    recovered: Arc<Recovered>,
    bulkheads: Bulkheads,
    /// `authorization` value presented on every call (the coordinator's
    /// token), so that participants can tell its calls from anyone else's.
    credential: Credential,
}

/// What a tonic server answers when the `grpc-timeout` it received passed.
const TONIC_SERVER_TIMEOUT: &str = "Timeout expired";

/// A call let through by an endpoint's breaker and not yet reported: if it
/// is dropped unreported (its request was cancelled), the breaker hears of
/// it, so that a lost probe cannot keep the breaker half-open for good.
struct Outstanding<'a> {
    clients: &'a ParticipantClients,
    url: EndpointUrl,
    reported: bool,
}

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        if !self.reported {
            let mut breakers = self
                .clients
                .breakers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(b) = breakers.get_mut(&self.url) {
                b.on_abandoned();
            }
        }
    }
}

impl ParticipantClients {
    pub fn new(
        breaker_failures: u32,
        breaker_cooldown: Duration,
        max_message_bytes: usize,
    ) -> Self {
        Self {
            channels: Mutex::new(HashMap::new()),
            breakers: Mutex::new(HashMap::new()),
            stats: Mutex::new(HashMap::new()),
            breaker_failures,
            breaker_cooldown,
            max_message_bytes,
            tls: None,
            http_tls: None,
            http: OnceLock::new(),
            failing: Mutex::new(HashSet::new()),
            recovered: Arc::new(Recovered::default()),
            bulkheads: Bulkheads::new(DEFAULT_PARTICIPANT_CONCURRENCY),
            credential: Credential::default(),
        }
    }

    /// Presents `authorization` (`Bearer <coordinator_token>`) on every
    /// gRPC and HTTP call.
    pub fn with_credential(mut self, authorization: Option<http::HeaderValue>) -> Self {
        self.credential = Credential::new(authorization);
        self
    }

    /// The credential presented, to rotate it while calls go on.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// Allows at most `limit` calls in flight to one participant.
    pub fn with_participant_concurrency(mut self, limit: u32) -> Self {
        self.bulkheads = Bulkheads::new(limit);
        self
    }

    /// The signal raised when a participant is back.
    pub fn recovered(&self) -> &Arc<Recovered> {
        &self.recovered
    }

    /// `participant` registered `endpoint` again: proof that it is up, so
    /// the endpoint's breaker closes at once (rather than after a cooldown
    /// of up to a minute) and its waiting work is re-driven.
    pub fn registered(&self, participant: &ParticipantName, endpoint: &EndpointUrl) {
        if let Some(b) = self
            .breakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(endpoint)
        {
            b.reset();
        }
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(participant);
        self.recovered.note(participant);
    }

    /// Remembers whether `participant` answered; an answer after failures
    /// (or a probe that closed a breaker) means it is back.
    fn track_health(&self, participant: &ParticipantName, outcome: &Outcome, breaker_closed: bool) {
        let answered = !matches!(outcome, Outcome::Unknown { .. });
        let was_failing = {
            let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
            if answered {
                failing.remove(participant)
            } else {
                failing.insert(participant.clone());
                false
            }
        };
        if answered && (was_failing || breaker_closed) {
            tracing::info!(%participant, "participant is back");
            self.recovered.note(participant);
        }
    }

    /// Uses `tls` for `https://` HTTP/JSON endpoints; `None` trusts the
    /// system's roots.
    pub fn with_http_tls(mut self, tls: Option<rustls::ClientConfig>) -> Self {
        self.http_tls = tls;
        self
    }

    fn http(&self) -> Result<&HttpTransport, &str> {
        self.http
            .get_or_init(|| {
                let tls = match &self.http_tls {
                    Some(tls) => tls.clone(),
                    None => crate::tls::http_tls(None, None)?,
                };
                HttpTransport::new(tls, self.max_message_bytes)
                    .map(|t| t.with_credential(self.credential.clone()))
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// Uses `tls` (custom CA, client certificate) for `https://` endpoints.
    pub fn with_tls(mut self, tls: Option<ClientTlsConfig>) -> Self {
        self.tls = tls;
        self
    }

    fn channel(&self, url: &EndpointUrl) -> Result<Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(url) {
            return Ok(c.clone());
        }
        let mut endpoint = GrpcEndpoint::from_shared(url.as_str().to_string())
            .map_err(|e| format!("bad endpoint {url}: {e}"))?;
        if let Some(tls) = self
            .tls
            .clone()
            .filter(|_| url.as_str().starts_with("https:"))
        {
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| format!("cannot set up tls for {url}: {e}"))?;
        }
        let channel = endpoint
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .connect_lazy();
        channels.insert(url.clone(), channel.clone());
        Ok(channel)
    }

    /// Picks the next endpoint whose breaker lets a call through.
    fn pick(&self, endpoints: &[Endpoint]) -> Option<Endpoint> {
        if endpoints.is_empty() {
            return None;
        }
        // A random start spreads load without a shared counter that calls of
        // different phases would fall into step with.
        let start = rand::random::<u32>() as usize;
        let now = Instant::now();
        let mut breakers = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..endpoints.len() {
            let endpoint = &endpoints[(start + i) % endpoints.len()];
            let breaker = breakers
                .entry(endpoint.url.clone())
                .or_insert_with(|| Breaker::new(self.breaker_failures, self.breaker_cooldown));
            if breaker.try_acquire(now) {
                return Some(endpoint.clone());
            }
        }
        None
    }

    /// Records a call's outcome; returns whether it closed an open breaker.
    fn report(&self, url: &EndpointUrl, outcome: &Outcome, endpoint_down: bool) -> bool {
        self.stats
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(url.clone())
            .or_default()
            .record(outcome, chrono::Utc::now());
        let mut breakers = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        match breakers.get_mut(url) {
            Some(b) if endpoint_down => {
                b.on_failure(Instant::now());
                false
            }
            Some(b) => b.on_success(),
            None => false,
        }
    }

    /// Call statistics and breaker state of every endpoint this instance
    /// has called. Kept in memory: each instance sees only its own calls,
    /// and a restart forgets them.
    pub fn endpoint_stats(&self) -> Vec<EndpointCallStats> {
        let now = Instant::now();
        let breakers = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        let stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = breakers
            .iter()
            .map(|(url, b)| {
                let s = stats.get(url).cloned().unwrap_or_default();
                EndpointCallStats {
                    url: url.clone(),
                    breaker: b.state(now),
                    recent_calls: s.recent.len() as u32,
                    recent_failures: s.recent.iter().filter(|failed| **failed).count() as u32,
                    last_success_at: s.last_success_at,
                    last_failure_at: s.last_failure_at,
                    last_error: s.last_error,
                }
            })
            .collect();
        all.sort_by(|a, b| a.url.cmp(&b.url));
        all
    }

    /// Breaker state of every endpoint this instance has called.
    pub fn health(&self) -> Vec<EndpointHealth> {
        let now = Instant::now();
        let breakers = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = breakers
            .iter()
            .map(|(url, b)| EndpointHealth {
                url: url.clone(),
                breaker: b.state(now),
            })
            .collect();
        all.sort_by(|a, b| a.url.cmp(&b.url));
        all
    }

    /// Calls `phase` on one of the participant's endpoints with a deadline,
    /// over the endpoint's protocol.
    pub async fn call(
        &self,
        participant: &ParticipantName,
        endpoints: &[Endpoint],
        phase: Phase,
        request: BranchRequest,
        timeout: Duration,
    ) -> CallReply {
        self.call_shaped(participant, endpoints, phase, request, timeout, None)
            .await
    }

    /// Calls `phase` of a branch given as a URL, in DTM's convention
    /// (`endpoint`'s protocol is [`Protocol::Dtm`]): counted under
    /// `participant` like any call (bulkhead, breaker, metrics, re-drive).
    pub async fn call_url(
        &self,
        participant: &ParticipantName,
        endpoint: Endpoint,
        phase: Phase,
        request: BranchRequest,
        timeout: Duration,
        shape: UrlCallShape<'_>,
    ) -> CallReply {
        self.call_shaped(
            participant,
            std::slice::from_ref(&endpoint),
            phase,
            request,
            timeout,
            Some(shape),
        )
        .await
    }

    async fn call_shaped(
        &self,
        participant: &ParticipantName,
        endpoints: &[Endpoint],
        phase: Phase,
        request: BranchRequest,
        timeout: Duration,
        shape: Option<UrlCallShape<'_>>,
    ) -> CallReply {
        // Wait for a slot before taking a probe: a probe must not queue.
        let started = Instant::now();
        let Some(_slot) = self.bulkheads.enter(participant, timeout).await else {
            return CallReply::unknown(
                "RESOURCE_EXHAUSTED",
                format!(
                    "{} calls in flight to participant {participant} (participant_concurrency); none ended within {}ms",
                    self.bulkheads.limit(),
                    timeout.as_millis()
                ),
            );
        };
        let timeout = timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1));
        let Some(endpoint) = self.pick(endpoints) else {
            let message = if endpoints.is_empty() {
                format!("participant {participant} has no registered endpoint")
            } else {
                format!("circuit open for every endpoint of participant {participant}")
            };
            return CallReply::unknown("UNAVAILABLE", message);
        };
        let url = endpoint.url;
        let mut outstanding = Outstanding {
            clients: self,
            url: url.clone(),
            reported: false,
        };
        let span = crate::telemetry::trace::call_span(participant, phase, &request);
        let action = request.action.clone();
        let started = Instant::now();
        let answer = match endpoint.protocol {
            Protocol::Grpc => {
                self.call_grpc(&url, phase, request, timeout)
                    .instrument(span)
                    .await
            }
            Protocol::Http => match self.http() {
                Ok(http) => {
                    http.call(&url, phase.as_str(), &request, timeout)
                        .instrument(span)
                        .await
                }
                Err(message) => Answer::unknown("INTERNAL", message.to_string(), false),
            },
            Protocol::Dtm => match self.http() {
                Ok(http) => {
                    let none = std::collections::BTreeMap::new();
                    // Without a shape it is a message's query-back: DTM's
                    // GET of `query_prepared` with branch `00`, op `msg`.
                    let dtm = match &shape {
                        Some(s) => DtmCall {
                            trans_type: s.trans_type,
                            branch_id: s.branch_id,
                            op: dtm_op(phase.as_str()),
                            headers: s.headers,
                            body: Some(&request.payload),
                        },
                        None => DtmCall {
                            trans_type: "msg",
                            branch_id: "00",
                            op: dtm_op(phase.as_str()),
                            headers: &none,
                            body: None,
                        },
                    };
                    http.call_dtm(&url, &request.gid, request.attempt, dtm, timeout)
                        .instrument(span)
                        .await
                }
                Err(message) => Answer::unknown("INTERNAL", message.to_string(), false),
            },
        };
        crate::telemetry::metrics::participant_call(
            participant.as_str(),
            &action,
            phase,
            &answer.outcome,
            started.elapsed(),
        );
        outstanding.reported = true;
        let breaker_closed = self.report(&url, &answer.outcome, answer.endpoint_down);
        self.track_health(participant, &answer.outcome, breaker_closed);
        CallReply {
            outcome: answer.outcome,
            payload: answer.payload,
            endpoint: Some(url),
        }
    }

    /// One gRPC call of `phase`, classified.
    async fn call_grpc(
        &self,
        url: &EndpointUrl,
        phase: Phase,
        request: BranchRequest,
        timeout: Duration,
    ) -> Answer {
        let channel = match self.channel(url) {
            Ok(c) => c,
            Err(message) => {
                return Answer {
                    outcome: Outcome::Unknown {
                        code: "INTERNAL".into(),
                        message,
                    },
                    payload: Vec::new(),
                    endpoint_down: false,
                };
            }
        };
        let mut client = ParticipantClient::new(channel.clone())
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes);
        let mut req = tonic::Request::new(request);
        crate::telemetry::trace::forward(&mut req);
        // The header tells the participant when to give up; our own timer
        // below ends the wait (tonic's client timer would report CANCELLED,
        // which reads wrong in an operator's event history).
        if let Ok(v) = format!("{}m", timeout.as_millis().max(1)).parse() {
            req.metadata_mut().insert("grpc-timeout", v);
        }
        if let Some(credential) = self.credential.get()
            && let Ok(v) = tonic::metadata::MetadataValue::try_from(credential.as_bytes())
        {
            req.metadata_mut().insert("authorization", v);
        }
        let call = async {
            match phase {
                Phase::Try => client.r#try(req).await,
                Phase::Confirm => client.confirm(req).await,
                Phase::Cancel => client.cancel(req).await,
                Phase::Execute => client.execute(req).await,
                Phase::Compensate => client.compensate(req).await,
                Phase::QueryPrepared => {
                    MessageInitiatorClient::new(channel)
                        .max_decoding_message_size(self.max_message_bytes)
                        .query_prepared(req)
                        .await
                }
            }
        };
        let started = Instant::now();
        let result = match tokio::time::timeout(timeout, call).await {
            // tonic's channel enforces the grpc-timeout header itself and
            // reports CANCELLED; so does a tonic participant server that
            // dropped the call at the deadline it received ("Timeout
            // expired"), which may answer a moment before our own timer.
            // A deadline all the same.
            Ok(Err(s))
                if s.code() == Code::Cancelled
                    && (started.elapsed() >= timeout || s.message() == TONIC_SERVER_TIMEOUT) =>
            {
                Err(tonic::Status::deadline_exceeded(format!(
                    "no reply within {}ms",
                    timeout.as_millis()
                )))
            }
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(tonic::Status::deadline_exceeded(format!(
                "no reply within {}ms",
                timeout.as_millis()
            ))),
        };
        let endpoint_down = endpoint_failed(&result);
        let (outcome, payload) = classify(result);
        Answer {
            outcome,
            payload,
            endpoint_down,
        }
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
