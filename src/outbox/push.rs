//! Delivering a push notification: one invite, one pusher, one `POST` to the pusher's gateway
//! (<https://spec.matrix.org/v1.16/push-gateway-api/#post_matrixpushv1notify>).
//!
//! Rows are queued by the schema (a new pending invite, one row per pusher of its invitee),
//! so a notification exists exactly when its invite was committed. An attempt re-reads the
//! invite: one no longer pending when its turn comes is not announced. Network errors, 5xx,
//! 408 and 429 are retried on `[push]`'s schedule (Synapse's pusher schedule by default);
//! another 4xx ends the notification. A pushkey the gateway lists in `rejected` is deleted
//! with its pusher, as the spec says.

use std::sync::Arc;
use std::time::{Duration, Instant};

use invited_matrix::push::{Device, InviteNotice, invite_notification, pushkey_rejected};
use invited_matrix::{Value, json};

use super::{Ended, Kind, Outcome, Schedule};
use crate::config::PushConfig;
use crate::federation::outbound::Outbound;
use crate::store::{InviteState, OUTBOX_PUSH, OutboxItem, StoreError, StorePool};
use crate::text::printable;
use crate::time::now_ms;

/// The `push` kind of the outbox.
pub struct Pushes {
    pub store: Arc<StorePool>,
    pub net: Arc<Outbound>,
    pub schedule: Schedule,
    pub request_timeout: Duration,
}

impl Pushes {
    pub fn new(store: Arc<StorePool>, net: Arc<Outbound>, config: &PushConfig) -> Pushes {
        let d = &config.delivery;
        Pushes {
            store,
            net,
            schedule: Schedule {
                first_retry: d.first_retry,
                max_retry: d.max_retry,
                give_up_after: d.give_up_after,
            },
            request_timeout: d.request_timeout,
        }
    }

    /// Ends the row without an attempt: there is nothing (left) to say.
    fn drop_row(&self, item: &OutboxItem, why: &str) -> Result<Outcome, StoreError> {
        log::info!("push {}: not sent: {why}", printable(&item.subject));
        self.store
            .with(|s| s.outbox_drop(item.id, why, now_ms()))
            .map(|()| Outcome::Finished(Ended::Dropped))
    }
}

/// `<pusher id> <event ID>`.
fn parse_subject(subject: &str) -> Option<(i64, &str)> {
    let (id, event_id) = subject.split_once(' ')?;
    Some((id.parse().ok()?, event_id))
}

impl Kind for Pushes {
    fn name(&self) -> &'static str {
        OUTBOX_PUSH
    }

    fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    fn attempt(&self, item: &OutboxItem) -> Result<Outcome, StoreError> {
        let Some((pusher_id, event_id)) = parse_subject(&item.subject) else {
            return self.drop_row(item, "the row's subject is not '<pusher id> <event ID>'");
        };
        let Some(pusher) = self.store.with(|s| s.pusher(pusher_id))? else {
            return self.drop_row(item, "the pusher was removed");
        };
        let Some(facts) = self.store.with(|s| s.push_facts(event_id))? else {
            return self.drop_row(item, "the invite is no longer stored");
        };
        if facts.state != InviteState::Pending {
            return self.drop_row(
                item,
                &format!("the invite is no longer pending (it is {})", facts.state),
            );
        }
        // Both were checked when written (the schema checks data.url; the event is ours).
        let (Ok(data), Ok(event)) = (json::parse(&pusher.data), json::parse(&facts.signed_event))
        else {
            return self.drop_row(item, "the pusher's data or the stored event is not JSON");
        };
        let (Some(data), Some(url)) = (data.as_object(), data.get("url").and_then(Value::as_str))
        else {
            return self.drop_row(item, "the pusher's data has no url");
        };
        let body = invite_notification(
            &InviteNotice {
                event_id,
                event: &event,
                room_name: facts.room_name.as_deref(),
                sender_display_name: facts.sender_display_name.as_deref(),
                unread: facts.pending_for_invitee,
            },
            &Device {
                app_id: &pusher.app_id,
                pushkey: &pusher.pushkey,
                pushkey_ts_secs: pusher.pushkey_ts / 1000,
                data,
            },
        );
        let answer = match self
            .net
            .push(url, &body, Instant::now() + self.request_timeout)
        {
            Err(e) => return Ok(Outcome::Retry(e.to_string())),
            Ok(a) => a,
        };
        let retry = answer.status >= 500 || [408, 429].contains(&answer.status);
        if retry {
            return Ok(Outcome::Retry(format!("{url}: {}", answer.describe())));
        }
        let now = now_ms();
        if !(200..300).contains(&answer.status) {
            let error = format!("{url} refused it: {}", answer.describe());
            log::info!(
                "push {event_id} to pusher {pusher_id} of {}: {}",
                printable(&pusher.user_id),
                printable(&error)
            );
            self.store
                .with(|s| s.outbox_finish(item.id, Some(&error), now))?;
            return Ok(Outcome::Finished(Ended::Refused));
        }
        if pushkey_rejected(answer.body.as_ref(), &pusher.pushkey) {
            log::info!(
                "push {event_id} to pusher {pusher_id} ({} of {}): the gateway rejected the \
                 pushkey; pusher removed",
                printable(&pusher.app_id),
                printable(&pusher.user_id)
            );
            self.store.with(|s| {
                s.outbox_finish(item.id, Some("the gateway rejected the pushkey"), now)?;
                s.remove_pusher(&pusher.user_id, &pusher.app_id, &pusher.pushkey)
                    .map(drop)
            })?;
            return Ok(Outcome::Finished(Ended::Refused));
        }
        self.store.with(|s| s.outbox_finish(item.id, None, now))?;
        log::info!(
            "push {event_id} to pusher {pusher_id} of {}: delivered",
            printable(&pusher.user_id)
        );
        Ok(Outcome::Finished(Ended::Delivered))
    }

    fn give_up(&self, item: &OutboxItem, error: &str) -> Result<(), StoreError> {
        self.store
            .with(|s| s.outbox_finish(item.id, Some(error), now_ms()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_name_the_pusher_then_the_event() {
        assert_eq!(parse_subject("12 $abc:x y"), Some((12, "$abc:x y")));
        assert_eq!(parse_subject("x $abc"), None);
        assert_eq!(parse_subject("12"), None);
    }
}
