//! The signal "this participant is back": raised by the participant client
//! when a participant answers again after failed calls (a successful probe
//! that closes a breaker is one such answer) and when a participant
//! registers again; consumed by the engine's re-drive
//! (`engine::redrive`), which makes that participant's waiting
//! transactions due at once instead of at their backoff time.
//!
//! Notes are coalesced: a participant noted many times before the consumer
//! looks is handed over once, so a burst of successes costs one re-drive.
//!
//! A registration reaches only the instance it was sent to; the others see
//! it in the registry's periodic reload, where [`SeenRegistrations`] spots
//! an endpoint registered again since the last reload.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::domain::{EndpointUrl, ParticipantName};
use crate::store::ParticipantRecord;

#[derive(Default)]
pub struct Recovered {
    pending: Mutex<BTreeSet<ParticipantName>>,
    notify: Notify,
}

impl Recovered {
    /// Records that `participant` is back; never blocks.
    pub fn note(&self, participant: &ParticipantName) {
        let new = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(participant.clone());
        if new {
            self.notify.notify_one();
        }
    }

    /// Takes every participant noted since the last call, waiting for one
    /// if there is none yet.
    pub async fn next(&self) -> Vec<ParticipantName> {
        loop {
            let notified = self.notify.notified();
            let taken: Vec<_> =
                std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
                    .into_iter()
                    .collect();
            if !taken.is_empty() {
                return taken;
            }
            notified.await;
        }
    }
}

/// The last registration time of every endpoint as of the previous
/// registry reload.
#[derive(Default)]
pub struct SeenRegistrations {
    last_seen: HashMap<(ParticipantName, EndpointUrl), DateTime<Utc>>,
    loaded: bool,
}

impl SeenRegistrations {
    /// The endpoints registered again since the previous call (none on the
    /// first: an instance that just started has no breaker to close).
    pub fn registered_again(
        &mut self,
        all: &[ParticipantRecord],
    ) -> Vec<(ParticipantName, EndpointUrl)> {
        let first = !std::mem::replace(&mut self.loaded, true);
        let mut again = Vec::new();
        for p in all {
            for e in &p.endpoints {
                let key = (p.name.clone(), e.url.clone());
                let before = self.last_seen.insert(key.clone(), e.last_seen_at);
                if !first && before.is_none_or(|b| e.last_seen_at > b) {
                    again.push(key);
                }
            }
        }
        again
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EndpointRecord;

    #[test]
    fn an_endpoint_registered_again_is_seen_once() {
        let t = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        let record = |seen: i64| {
            vec![ParticipantRecord {
                name: ParticipantName::parse("p").unwrap(),
                actions: Vec::new(),
                policies: Default::default(),
                endpoints: vec![EndpointRecord {
                    url: EndpointUrl::parse("http://127.0.0.1:1").unwrap(),
                    protocol: crate::domain::Protocol::Grpc,
                    registered_at: t,
                    last_seen_at: t + chrono::Duration::seconds(seen),
                }],
            }]
        };
        let mut seen = SeenRegistrations::default();
        assert!(
            seen.registered_again(&[]).is_empty(),
            "first load: none yet"
        );
        assert_eq!(seen.registered_again(&record(0)).len(), 1, "a new endpoint");
        assert!(seen.registered_again(&record(0)).is_empty(), "unchanged");
        let mut seen = SeenRegistrations::default();
        assert!(seen.registered_again(&record(0)).is_empty(), "first load");
        assert!(seen.registered_again(&record(0)).is_empty(), "unchanged");
        let again = seen.registered_again(&record(5));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].0.as_str(), "p");
        assert!(seen.registered_again(&record(5)).is_empty(), "once");
    }

    #[tokio::test]
    async fn notes_are_coalesced_and_handed_over_once() {
        let r = Recovered::default();
        let a = ParticipantName::parse("a").unwrap();
        let b = ParticipantName::parse("b").unwrap();
        r.note(&a);
        r.note(&b);
        r.note(&a);
        assert_eq!(r.next().await, vec![a.clone(), b]);
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(20), r.next()).await;
        assert!(waiting.is_err(), "nothing new was noted");
        r.note(&a);
        assert_eq!(r.next().await, vec![a]);
    }
}
