//! The signal "this participant is back": raised by the participant client
//! when a participant answers again after failed calls (a successful probe
//! that closes a breaker is one such answer) and when a participant
//! registers again; consumed by the engine's re-drive
//! ([`crate::engine::redrive`]), which makes that participant's waiting
//! transactions due at once instead of at their backoff time.
//!
//! Notes are coalesced: a participant noted many times before the consumer
//! looks is handed over once, so a burst of successes costs one re-drive.

use std::collections::BTreeSet;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::domain::ParticipantName;

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

#[cfg(test)]
mod tests {
    use super::*;

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
