//! A bound on the calls one instance has in flight to one participant
//! (`participant_concurrency`). A participant that comes back after an
//! outage has a backlog waiting for it, which the re-drive makes due all at
//! once; without a bound every driver would call it at the same moment and
//! knock it over again. Calls beyond the bound wait their turn within their
//! own deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::domain::ParticipantName;

/// Calls in flight to one participant when nothing else is configured
/// (the `participant_concurrency` setting's default).
pub const DEFAULT_PARTICIPANT_CONCURRENCY: u32 = 256;

pub struct Bulkheads {
    limit: usize,
    slots: Mutex<HashMap<ParticipantName, Arc<Semaphore>>>,
}

impl Bulkheads {
    pub fn new(limit: u32) -> Self {
        Self {
            limit: limit.max(1) as usize,
            slots: Mutex::new(HashMap::new()),
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A slot for one call to `participant`, or `None` if none freed up
    /// within `wait`.
    pub async fn enter(
        &self,
        participant: &ParticipantName,
        wait: Duration,
    ) -> Option<OwnedSemaphorePermit> {
        let slots = {
            let mut all = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(
                all.entry(participant.clone())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.limit))),
            )
        };
        if let Ok(permit) = Arc::clone(&slots).try_acquire_owned() {
            return Some(permit);
        }
        tokio::time::timeout(wait, slots.acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_most_limit_calls_per_participant() {
        let b = Bulkheads::new(2);
        let p = ParticipantName::parse("p").unwrap();
        let q = ParticipantName::parse("q").unwrap();
        let wait = Duration::from_millis(20);
        let first = b.enter(&p, wait).await.expect("slot 1");
        let _second = b.enter(&p, wait).await.expect("slot 2");
        assert!(b.enter(&p, wait).await.is_none(), "third call must wait");
        assert!(
            b.enter(&q, wait).await.is_some(),
            "other participants are not held up"
        );
        drop(first);
        assert!(
            b.enter(&p, wait).await.is_some(),
            "a finished call frees its slot"
        );
    }
}
