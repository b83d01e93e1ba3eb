//! The lobby: sites that arrived with a valid invitation and wait for an operator to admit or
//! refuse them. In memory (a waiting site holds an open signalling connection to this node);
//! admissions themselves are stored, so an admitted site that reconnects does not wait again.

use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::oneshot;
use utoipa::ToSchema;

/// The operator's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Admit,
    Refuse,
}

/// A waiting site, as the console shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LobbyEntry {
    /// Lobby entry id (for admit/refuse).
    pub id: u64,
    pub identity: String,
    pub site_id: Option<i64>,
    pub name: String,
    /// Waiting since, UTC RFC 3339.
    pub since_utc: String,
}

struct Waiting {
    entry: LobbyEntry,
    tx: oneshot::Sender<Decision>,
}

/// A place in the lobby; the decision arrives on `decision` (closed = taken out of the lobby
/// without a decision, e.g. the same site arrived again).
pub struct Ticket {
    pub rakor_id: i64,
    pub entry_id: u64,
    pub decision: oneshot::Receiver<Decision>,
}

/// Waiting sites per rakor.
#[derive(Default)]
pub struct Lobby {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    waiting: HashMap<i64, Vec<Waiting>>,
}

impl Lobby {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Put a site in the lobby of `rakor_id`. The same identity already waiting is replaced.
    pub fn enter(&self, rakor_id: i64, identity: &str, site_id: Option<i64>, name: &str) -> Ticket {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = inner.next_id;
        let list = inner.waiting.entry(rakor_id).or_default();
        list.retain(|w| w.entry.identity != identity);
        list.push(Waiting {
            entry: LobbyEntry {
                id,
                identity: identity.to_owned(),
                site_id,
                name: name.to_owned(),
                since_utc: crate::wib::utc_string(crate::wib::now()),
            },
            tx,
        });
        Ticket {
            rakor_id,
            entry_id: id,
            decision: rx,
        }
    }

    /// Who waits in the lobby of `rakor_id`, in order of arrival.
    pub fn list(&self, rakor_id: i64) -> Vec<LobbyEntry> {
        self.lock()
            .waiting
            .get(&rakor_id)
            .map(|l| l.iter().map(|w| w.entry.clone()).collect())
            .unwrap_or_default()
    }

    /// Decide for one entry; the entry's identity if it was waiting.
    pub fn decide(&self, rakor_id: i64, entry_id: u64, decision: Decision) -> Option<String> {
        let mut inner = self.lock();
        let list = inner.waiting.get_mut(&rakor_id)?;
        let pos = list.iter().position(|w| w.entry.id == entry_id)?;
        let w = list.remove(pos);
        let identity = w.entry.identity.clone();
        // A site that left in the meantime simply does not hear the answer.
        let _ = w.tx.send(decision);
        Some(identity)
    }

    /// Decide for everybody waiting; their identities.
    pub fn decide_all(&self, rakor_id: i64, decision: Decision) -> Vec<String> {
        let list = self.lock().waiting.remove(&rakor_id).unwrap_or_default();
        list.into_iter()
            .map(|w| {
                let _ = w.tx.send(decision);
                w.entry.identity
            })
            .collect()
    }

    /// The site went away while waiting.
    pub fn leave(&self, ticket: &Ticket) {
        let mut inner = self.lock();
        if let Some(list) = inner.waiting.get_mut(&ticket.rakor_id) {
            list.retain(|w| w.entry.id != ticket.entry_id);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[tokio::test]
    async fn admit_refuse_and_replace() {
        let lobby = Lobby::default();
        let a = lobby.enter(1, "site-2", Some(2), "Dishub");
        let b = lobby.enter(1, "site-3", Some(3), "Dinkes");
        let c = lobby.enter(2, "site-4", Some(4), "Bank");
        assert_eq!(lobby.list(1).len(), 2);
        assert_eq!(
            lobby.decide(1, a.entry_id, Decision::Admit).as_deref(),
            Some("site-2")
        );
        assert_eq!(a.decision.await.unwrap(), Decision::Admit);
        assert_eq!(
            lobby.decide(1, a.entry_id, Decision::Admit),
            None,
            "decided once"
        );
        assert_eq!(
            lobby.decide_all(1, Decision::Refuse),
            vec!["site-3".to_owned()]
        );
        assert_eq!(b.decision.await.unwrap(), Decision::Refuse);
        // The same site arriving again replaces its older place.
        let c2 = lobby.enter(2, "site-4", Some(4), "Bank");
        assert!(c.decision.await.is_err());
        assert_eq!(lobby.list(2).len(), 1);
        lobby.leave(&c2);
        assert!(lobby.list(2).is_empty());
    }
}
