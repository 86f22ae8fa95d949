//! Who is signed in to the console, and whether a request may act for them.
//!
//! A session is created only by presenting an admin token; the browser then
//! holds a random id in an `HttpOnly`, `SameSite=Strict` cookie (so neither
//! page scripts nor other sites' requests carry it), and the token itself is
//! never stored or sent again. Sessions live in this instance's memory: a
//! restart, sign-out or [`Sessions::idle`] without a request ends them.
//!
//! `SameSite` does not separate ports of one host (`127.0.0.1:9464` and
//! `127.0.0.1:8080` are the same site), so every mutating request must also
//! name this origin in its `Origin` header ([`same_origin`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::{COOKIE, HOST, ORIGIN};
use rand::Rng;

/// Name of the session cookie.
pub const COOKIE_NAME: &str = "concord_console";

/// Header the page sets on its background refreshes, which do not keep a
/// session alive.
pub const BACKGROUND_HEADER: &str = "x-concord-background";

/// Sessions kept at most; past it the least recently used one is dropped
/// (only holders of a valid token can create sessions, so this bounds a
/// script that signs in in a loop, not an anonymous attacker).
const MAX_SESSIONS: usize = 1024;

struct Session {
    actor: String,
    last_used: Instant,
}

/// The signed-in sessions of this instance.
pub struct Sessions {
    idle: Duration,
    open: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn new(idle: Duration) -> Self {
        Self {
            idle,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// How long a session lasts without a request.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Opens a session acting as `actor`; returns its id (256 random bits,
    /// hex).
    pub fn open(&self, actor: &str, now: Instant) -> String {
        let id: [u8; 32] = rand::rng().random();
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let mut open = self.open.lock().expect("sessions lock");
        open.retain(|_, s| now.duration_since(s.last_used) < self.idle);
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
        {
            open.remove(&oldest);
        }
        open.insert(
            id.clone(),
            Session {
                actor: actor.to_string(),
                last_used: now,
            },
        );
        id
    }

    /// The actor of session `id` if it is open and was used within the
    /// idle timeout. A request the operator made (`by_operator`) restarts
    /// that timeout; the page's own background refreshes do not, so an
    /// open tab nobody looks at still signs out.
    pub fn actor(&self, id: &str, now: Instant, by_operator: bool) -> Option<String> {
        let mut open = self.open.lock().expect("sessions lock");
        let session = open.get_mut(id)?;
        if now.duration_since(session.last_used) >= self.idle {
            open.remove(id);
            return None;
        }
        if by_operator {
            session.last_used = now;
        }
        Some(session.actor.clone())
    }

    /// Ends session `id` (sign-out); unknown ids are ignored.
    pub fn close(&self, id: &str) {
        self.open.lock().expect("sessions lock").remove(id);
    }
}

/// Whether the operator made this request (not a background refresh).
pub fn by_operator(headers: &HeaderMap) -> bool {
    !headers.contains_key(BACKGROUND_HEADER)
}

/// The session id of the request's cookie, if it has one.
pub fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

/// `Set-Cookie` value that gives the browser session `id`. No `Max-Age`:
/// the cookie also ends with the browser; the idle timeout is enforced
/// here, not trusted to the browser.
pub fn set_cookie(id: &str) -> String {
    format!("{COOKIE_NAME}={id}; Path=/ui; HttpOnly; SameSite=Strict")
}

/// `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE_NAME}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Refuses a request that a page of another origin could have sent: its
/// `Origin` must be this listener's own (`http(s)://` + `Host`), and a
/// browser's `Sec-Fetch-Site`, when sent, must say `same-origin`. Browsers
/// send `Origin` with every `POST` and `DELETE`, so a missing one is not a
/// browser request of this console either.
pub fn same_origin(headers: &HeaderMap) -> Result<(), &'static str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site")
        && site != "same-origin"
    {
        return Err("cross-site request refused");
    }
    let origin = header(ORIGIN.as_str()).ok_or("request without an origin header refused")?;
    let host = header(HOST.as_str()).ok_or("request without a host header refused")?;
    let ours = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|rest| rest.eq_ignore_ascii_case(host));
    if ours {
        Ok(())
    } else {
        Err("cross-origin request refused")
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn a_session_lasts_while_used_and_ends_when_idle_or_closed() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let id = sessions.open("alice", t0);
        assert_eq!(id.len(), 64);
        assert_ne!(id, sessions.open("alice", t0), "ids are random");
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(sessions.actor(&id, at(50), true).as_deref(), Some("alice"));
        // Used at 50 s and 100 s; background refreshes do not count as use,
        // so idle from 100 s to 160 s ends it.
        assert!(sessions.actor(&id, at(100), true).is_some());
        assert!(sessions.actor(&id, at(130), false).is_some());
        assert!(sessions.actor(&id, at(159), false).is_some());
        assert!(sessions.actor(&id, at(160), false).is_none());
        let ended = sessions.actor(&id, t0, true);
        assert!(ended.is_none(), "an ended session stays ended");
        let id = sessions.open("bob", t0);
        sessions.close(&id);
        assert!(sessions.actor(&id, t0, true).is_none());
        assert!(sessions.actor("not-a-session", t0, true).is_none());
    }

    #[test]
    fn sessions_are_bounded() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let first = sessions.open("alice", t0);
        for i in 1..=MAX_SESSIONS {
            sessions.open("alice", t0 + Duration::from_millis(i as u64));
        }
        assert!(
            sessions.actor(&first, t0, true).is_none(),
            "least recently used dropped"
        );
        assert_eq!(sessions.open.lock().unwrap().len(), MAX_SESSIONS);
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn finds_the_session_cookie_among_others() {
        let h = headers(&[("cookie", "a=1; concord_console=abc; b=2")]);
        assert_eq!(session_id(&h), Some("abc"));
        let h = headers(&[("cookie", "a=1"), ("cookie", "concord_console=xyz")]);
        assert_eq!(session_id(&h), Some("xyz"));
        assert_eq!(
            session_id(&headers(&[("cookie", "concord_console=")])),
            None
        );
        assert_eq!(session_id(&headers(&[])), None);
    }

    #[test]
    fn only_this_origin_may_mutate() {
        let ok = headers(&[
            ("host", "127.0.0.1:9464"),
            ("origin", "http://127.0.0.1:9464"),
        ]);
        assert_eq!(same_origin(&ok), Ok(()));
        let ok = headers(&[
            ("host", "ops.example"),
            ("origin", "https://ops.example"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert_eq!(same_origin(&ok), Ok(()));
        for bad in [
            headers(&[
                ("host", "127.0.0.1:9464"),
                ("origin", "http://127.0.0.1:8080"),
            ]),
            headers(&[("host", "127.0.0.1:9464"), ("origin", "null")]),
            headers(&[("host", "127.0.0.1:9464")]),
            headers(&[("origin", "http://127.0.0.1:9464")]),
            headers(&[
                ("host", "127.0.0.1:9464"),
                ("origin", "http://127.0.0.1:9464"),
                ("sec-fetch-site", "same-site"),
            ]),
        ] {
            assert!(same_origin(&bad).is_err(), "{bad:?}");
        }
    }
}
