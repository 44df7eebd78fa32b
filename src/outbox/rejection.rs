//! Delivering a rejection: `make_leave` to a server of the room, our leave event built from
//! its template, signed and stored, then `send_leave` to the same server
//! (<https://spec.matrix.org/v1.16/server-server-api/#leaving-rooms-rejecting-invites>).
//!
//! Candidates: the inviting server first (the only one Synapse asks), then the servers of the
//! senders in the stored room state, the create event's first; at most [`MAX_CANDIDATES`].
//! A leave we signed is stored before it is sent and only ever resent, to the server whose
//! template it is, until that server accepts it or refuses it for good: a retry never makes a
//! second leave that could also enter the room.

use std::sync::Arc;
use std::time::{Duration, Instant};

use invited_matrix::leave::{LeaveFor, MAX_PDU_BYTES, leave_from_template};
use invited_matrix::{RoomVersion, ServerName, SigningKey, Value, base64, event_id, sign_event};

use super::{Ended, Kind, Outcome, Schedule};
use crate::config::DeliveryConfig;
use crate::federation::outbound::{Answer, Outbound};
use crate::store::{
    InviteState, OUTBOX_REJECTION, OutboxItem, Rejection, RejectionFacts, StoreError, StorePool,
};
use crate::text::printable;
use crate::time::now_ms;

/// Distinct servers asked at most for one rejection.
pub const MAX_CANDIDATES: usize = 4;

/// The `rejection` kind of the outbox.
pub struct Rejections {
    pub store: Arc<StorePool>,
    pub net: Arc<Outbound>,
    pub our_name: ServerName,
    pub key: SigningKey,
    pub schedule: Schedule,
    pub request_timeout: Duration,
}

impl Rejections {
    pub fn new(
        store: Arc<StorePool>,
        net: Arc<Outbound>,
        our_name: ServerName,
        key: SigningKey,
        config: &DeliveryConfig,
    ) -> Rejections {
        Rejections {
            store,
            net,
            our_name,
            key,
            schedule: Schedule {
                first_retry: config.first_retry,
                max_retry: config.max_retry,
                give_up_after: config.give_up_after,
            },
            request_timeout: config.request_timeout,
        }
    }
}

/// How one server answered, for the attempt's bookkeeping.
enum Reply {
    /// 2xx, with the body.
    Ok(Option<Value>),
    /// A 4xx that will not change by asking again (not 401, 408 or 429).
    Refused(String),
    /// Anything worth retrying: no connection, a timeout, 5xx, 401/408/429.
    Failed(String),
}

fn classify(result: Result<Answer, crate::federation::client::FetchError>) -> Reply {
    match result {
        Err(e) => Reply::Failed(e.to_string()),
        Ok(a) if (200..300).contains(&a.status) => Reply::Ok(a.body),
        Ok(a) if (400..500).contains(&a.status) && ![401, 408, 429].contains(&a.status) => {
            Reply::Refused(a.describe())
        }
        Ok(a) => Reply::Failed(a.describe()),
    }
}

/// Percent-encodes a path segment: everything but `A–Z a–z 0–9 - _ . ~`, as Synapse does.
fn encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len() * 3);
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A fresh opaque part for a room version 1–2 event ID.
fn opaque() -> String {
    let mut b = [0u8; 12];
    let _ = getrandom::fill(&mut b);
    format!("{}{}", now_ms() / 1000, base64::encode_url_safe(&b))
}

impl Kind for Rejections {
    fn name(&self) -> &'static str {
        OUTBOX_REJECTION
    }

    fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    fn attempt(&self, item: &OutboxItem) -> Result<Outcome, StoreError> {
        let id = item.subject.as_str();
        let Some(facts) = self.store.with(|s| s.rejection_facts(id))? else {
            self.store
                .with(|s| s.outbox_drop(item.id, "the invite is gone", now_ms()))?;
            return Ok(Outcome::Finished(Ended::Dropped));
        };
        if facts.state != InviteState::Rejecting {
            let why = format!("the invite is now {}", facts.state);
            self.store
                .with(|s| s.outbox_drop(item.id, &why, now_ms()))?;
            return Ok(Outcome::Finished(Ended::Dropped));
        }
        let rejection = self.store.with(|s| s.rejection(id))?.unwrap_or_default();
        let Some(version) = RoomVersion::by_id(&facts.room_version) else {
            let why = format!("room version {} is not one we know", facts.room_version);
            self.finish(item, None, Some(&why))?;
            return Ok(Outcome::Finished(Ended::Dropped));
        };
        Attempt {
            kind: self,
            item,
            facts: &facts,
            version,
            rejection,
        }
        .run()
    }

    fn give_up(&self, item: &OutboxItem, error: &str) -> Result<(), StoreError> {
        self.finish(item, None, Some(error)).map(drop)
    }
}

impl Rejections {
    fn finish(
        &self,
        item: &OutboxItem,
        accepted_by: Option<&str>,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        let changed = self
            .store
            .with(|s| s.finish_rejection(item.id, &item.subject, accepted_by, error, now_ms()))?;
        match accepted_by {
            Some(server) => log::info!(
                "rejection of {} delivered: {} accepted our leave",
                printable(&item.subject),
                printable(server)
            ),
            None => log::info!(
                "rejection of {} kept local (nobody in the room was told): {}",
                printable(&item.subject),
                printable(error.unwrap_or(""))
            ),
        }
        Ok(changed)
    }
}

/// One attempt at one rejection.
struct Attempt<'a> {
    kind: &'a Rejections,
    item: &'a OutboxItem,
    facts: &'a RejectionFacts,
    version: &'static RoomVersion,
    rejection: Rejection,
}

impl Attempt<'_> {
    fn deadline(&self) -> Instant {
        Instant::now() + self.kind.request_timeout
    }

    fn store(&self) -> &StorePool {
        &self.kind.store
    }

    fn run(mut self) -> Result<Outcome, StoreError> {
        let id = self.item.subject.clone();
        let mut errors: Vec<String> = Vec::new();
        // A leave already signed goes to its server again, and only there.
        if let (Some(leave), Some(leave_id), Some(server)) = (
            self.rejection.leave_event.clone(),
            self.rejection.leave_event_id.clone(),
            self.rejection.leave_server.clone(),
        ) {
            match self.send_leave(&server, &leave, &leave_id) {
                Reply::Ok(_) => {
                    self.kind.finish(self.item, Some(&server), None)?;
                    return Ok(Outcome::Finished(Ended::Delivered));
                }
                Reply::Refused(e) => {
                    errors.push(format!("{server}: send_leave: {e}"));
                    self.store().with(|s| s.refused_by(&id, &server))?;
                    self.rejection.refused_by.push(server);
                }
                Reply::Failed(e) => {
                    return Ok(Outcome::Retry(format!("{server}: send_leave: {e}")));
                }
            }
        }
        let candidates = self.candidates();
        let mut transient = false;
        for server in candidates
            .iter()
            .filter(|s| !self.rejection.refused_by.contains(s))
        {
            match self.via(server)? {
                Step::Delivered => return Ok(Outcome::Finished(Ended::Delivered)),
                Step::Refused(e) => {
                    errors.push(format!("{server}: {e}"));
                    self.store().with(|s| s.refused_by(&id, server))?;
                }
                Step::Failed(e) => {
                    errors.push(format!("{server}: {e}"));
                    transient = true;
                }
                Step::SentUnsure(e) => {
                    // Our leave may be in the room: only that server is asked again.
                    return Ok(Outcome::Retry(format!("{server}: {e}")));
                }
            }
        }
        let summary = if errors.is_empty() {
            "no server of the room to ask".to_owned()
        } else {
            errors.join("; ")
        };
        if transient {
            Ok(Outcome::Retry(summary))
        } else {
            // Every candidate refused for good: asking again changes nothing.
            self.kind.finish(self.item, None, Some(&summary))?;
            Ok(Outcome::Finished(Ended::Refused))
        }
    }

    /// The servers to ask, in order: the inviting server, then the servers of the room
    /// state's senders (the create event's first); never us; at most [`MAX_CANDIDATES`].
    fn candidates(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let ours = self.kind.our_name.as_str();
        for s in std::iter::once(&self.facts.origin).chain(&self.facts.room_state_servers) {
            if out.len() == MAX_CANDIDATES {
                break;
            }
            if s != ours && ServerName::parse(s).is_ok() && !out.contains(s) {
                out.push(s.clone());
            }
        }
        out
    }

    /// make_leave then send_leave through one server.
    fn via(&self, server: &str) -> Result<Step, StoreError> {
        let Ok(name) = ServerName::parse(server) else {
            return Ok(Step::Refused("not a server name".into()));
        };
        let path = format!(
            "/_matrix/federation/v1/make_leave/{}/{}",
            encode(&self.facts.room_id),
            encode(&self.facts.invitee)
        );
        let template =
            match classify(
                self.kind
                    .net
                    .signed(&name, "GET", &path, None, self.deadline()),
            ) {
                Reply::Ok(Some(body)) => body,
                Reply::Ok(None) => {
                    return Ok(Step::Refused("make_leave: the answer is not JSON".into()));
                }
                Reply::Refused(e) => return Ok(Step::Refused(format!("make_leave: {e}"))),
                Reply::Failed(e) => return Ok(Step::Failed(format!("make_leave: {e}"))),
            };
        let opaque = opaque();
        let mut leave = match leave_from_template(
            &template,
            &LeaveFor {
                room_id: &self.facts.room_id,
                user_id: &self.facts.invitee,
                version: self.version,
                our_name: &self.kind.our_name,
                reason: self.rejection.reason.as_deref(),
                now_ms: now_ms(),
                opaque: &opaque,
            },
        ) {
            Ok(leave) => leave,
            Err(e) => return Ok(Step::Refused(format!("make_leave: {e}"))),
        };
        if let Err(e) = sign_event(
            &mut leave,
            self.version,
            &self.kind.our_name,
            &self.kind.key,
        ) {
            return Ok(Step::Failed(format!("cannot sign our leave: {e}")));
        }
        let leave_id = match event_id(&leave, self.version) {
            Ok(id) => id.as_str().to_owned(),
            Err(e) => return Ok(Step::Refused(format!("our leave has no event ID: {e}"))),
        };
        let text = Value::Object(leave).to_canonical_string();
        if text.len() > MAX_PDU_BYTES {
            return Ok(Step::Refused(format!(
                "make_leave: the template makes a {}-byte event (the limit is {MAX_PDU_BYTES})",
                text.len()
            )));
        }
        // Stored before it is sent: a retry resends this very event.
        self.store()
            .with(|s| s.save_leave(&self.item.subject, &text, &leave_id, server))?;
        Ok(match self.send_leave(server, &text, &leave_id) {
            Reply::Ok(_) => {
                self.kind.finish(self.item, Some(server), None)?;
                Step::Delivered
            }
            Reply::Refused(e) => Step::Refused(format!("send_leave: {e}")),
            Reply::Failed(e) => Step::SentUnsure(format!("send_leave: {e}")),
        })
    }

    /// `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}` with our stored leave.
    fn send_leave(&self, server: &str, leave: &str, leave_id: &str) -> Reply {
        let Ok(name) = ServerName::parse(server) else {
            return Reply::Refused("not a server name".into());
        };
        let Ok(body) = invited_matrix::json::parse(leave) else {
            return Reply::Refused("our stored leave event does not parse".into());
        };
        let path = format!(
            "/_matrix/federation/v2/send_leave/{}/{}",
            encode(&self.facts.room_id),
            encode(leave_id)
        );
        classify(
            self.kind
                .net
                .signed(&name, "PUT", &path, Some(&body), self.deadline()),
        )
    }
}

/// What asking one server came to.
enum Step {
    Delivered,
    Refused(String),
    Failed(String),
    /// send_leave failed in a way that may have delivered it.
    SentUnsure(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded_as_synapse_encodes_them() {
        assert_eq!(encode("!abc:remote.example"), "%21abc%3Aremote.example");
        assert_eq!(encode("$a/b+c"), "%24a%2Fb%2Bc");
        assert_eq!(encode("@bob:us.example"), "%40bob%3Aus.example");
    }
}
