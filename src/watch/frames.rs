//! Events rendered once for every stream that sends them.
//!
//! A change that a thousand watchers receive is one change: the streams that send it hold the same
//! `Arc`s of its job and PVC record, and (watching the same thing) the same resume token. Each
//! transport renders an event into the bytes it sends — a protobuf message for gRPC, a frame for
//! Server-Sent Events — and keeps the last few here, so the thousand streams write the same bytes
//! instead of rendering them a thousand times (profiled: rendering per stream was most of the
//! server's time in a large fan-out).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::{EventKind, WatchEvent};
use crate::domain::{Job, PvcProgress};

/// Renderings kept. Watchers that lag read older changes from memory or the log, each at its own
/// position; enough are kept that a thousand of them a few seconds behind still share.
const KEPT: usize = 4096;
/// Bytes of renderings kept at most (each also keeps its job alive, about as large): large jobs
/// mean fewer renderings kept, not more memory.
const KEPT_BYTES: usize = 16 << 20;

/// The latest renderings of one transport, shared by all its streams.
#[derive(Default)]
pub struct Frames {
    recent: Mutex<Recent>,
}

#[derive(Default)]
struct Recent {
    by_event: HashMap<Key, Rendered>,
    /// Oldest first, for eviction.
    order: VecDeque<Key>,
    /// The bytes of every rendering kept.
    bytes: usize,
}

/// An event's identity: its type, the addresses of its shared job and record, its token.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: EventKind,
    job: usize,
    pvc: usize,
    token: String,
}

impl Key {
    fn of(event: &WatchEvent) -> Key {
        Key {
            kind: event.kind,
            job: event.job.as_ref().map_or(0, |j| Arc::as_ptr(j) as usize),
            pvc: event.pvc.as_ref().map_or(0, |p| Arc::as_ptr(p) as usize),
            token: event.resume_token.clone(),
        }
    }
}

/// One rendered event; holding its `Arc`s keeps their addresses from being reused meanwhile.
struct Rendered {
    _job: Option<Arc<Job>>,
    _pvc: Option<Arc<PvcProgress>>,
    bytes: Bytes,
}

impl Frames {
    /// The bytes of `event`: rendered lately for another stream, or by `render` now.
    pub fn frame(&self, event: &WatchEvent, render: impl FnOnce(&WatchEvent) -> Bytes) -> Bytes {
        let key = Key::of(event);
        if let Some(found) = self.lock().by_event.get(&key) {
            return found.bytes.clone();
        }
        let bytes = render(event);
        let mut recent = self.lock();
        if recent.by_event.contains_key(&key) {
            return bytes;
        }
        while recent.order.len() >= KEPT || recent.bytes + bytes.len() > KEPT_BYTES {
            let Some(oldest) = recent.order.pop_front() else {
                break;
            };
            if let Some(gone) = recent.by_event.remove(&oldest) {
                recent.bytes -= gone.bytes.len();
            }
        }
        recent.bytes += bytes.len();
        recent.order.push_back(key.clone());
        recent.by_event.insert(
            key,
            Rendered {
                _job: event.job.clone(),
                _pvc: event.pvc.clone(),
                bytes: bytes.clone(),
            },
        );
        bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JobFields, JobState, NewJob, ObjectId};

    fn job() -> Arc<Job> {
        Arc::new(
            NewJob {
                id: Some(ObjectId::generate()),
                fields: JobFields::default(),
                state: Some(JobState::Running),
                activity: vec![],
            }
            .into_job(1_598_234_357_000_000)
            .expect("a valid job"),
        )
    }

    #[test]
    fn an_event_sent_to_many_streams_is_rendered_once() {
        let job = job();
        let event = |token: &str| WatchEvent {
            kind: EventKind::Updated,
            job: Some(job.clone()),
            pvc: None,
            resume_token: token.into(),
        };
        let render = |e: &WatchEvent| Bytes::from(format!("id: {}\n", e.resume_token));
        let frames = Frames::default();
        let first = frames.frame(&event("a"), render);
        let again = frames.frame(&event("a"), |_| panic!("rendered twice"));
        assert_eq!(first.as_ptr(), again.as_ptr(), "the same bytes, shared");
        let other = frames.frame(&event("b"), render);
        assert_ne!(first.as_ptr(), other.as_ptr());
        assert_eq!(&other[..], b"id: b\n");
        // A different job with the same content is another event.
        let copy = WatchEvent {
            job: Some(Arc::new((*job).clone())),
            ..event("a")
        };
        assert_ne!(frames.frame(&copy, render).as_ptr(), first.as_ptr());
    }

    #[test]
    fn renderings_kept_are_bounded_in_bytes() {
        let job = job();
        let frames = Frames::default();
        let large = |_: &WatchEvent| Bytes::from(vec![b'x'; 1 << 20]);
        for i in 0..40 {
            let event = WatchEvent {
                kind: EventKind::Updated,
                job: Some(job.clone()),
                pvc: None,
                resume_token: format!("t{i}"),
            };
            frames.frame(&event, large);
        }
        let recent = frames.lock();
        assert!(recent.bytes <= KEPT_BYTES, "{} bytes kept", recent.bytes);
        assert_eq!(recent.order.len(), KEPT_BYTES >> 20);
        assert_eq!(recent.by_event.len(), recent.order.len());
    }
}
