//! The interceptor chain: a flat list walked directionally over a shared belt.
//!
//! # The model
//!
//! Interceptors are held in one list ordered by **distance from the wire** — index 0 is closest to
//! the network, the last index closest to the application. Direction is a property of the walk,
//! not of the structure:
//!
//! ```text
//! read   (network → application)   walk forward:  0 → 1 → 2 → … → N
//! write  (application → network)   walk reverse:  N → … → 2 → 1 → 0
//! ```
//!
//! Each interceptor is fed from a belt and its output is collected back onto it, so **what an
//! interceptor emits is seen by every interceptor still ahead of it in the walk**. That is the
//! whole point: a retransmission emitted mid-chain still gets paced, tagged and recorded, because
//! there is no way out of the chain except through the interceptors that follow.
//!
//! The same list serves both directions, so "closest to the wire" means one thing rather than
//! opposite things per direction — the send history and FEC decode both sit near index 0, one
//! being the last thing on the way out and the other the first on the way in.
//!
//! # Ordering
//!
//! | # | Interceptor | Why there |
//! |---|---|---|
//! | 0 | congestion control — send history, feedback ingest | records what actually left, after everything |
//! | 1 | TWCC sender | tags every departing packet, before the history keys on it |
//! | 2 | pacer | gates departures; everything that generates a packet sits above it |
//! | 3 | NACK responder | its retransmissions reach 2, 1, 0 |
//! | 4 | FEC encoder | its repair packets reach 3, 2, 1, 0 |
//! | 5 | FEC decoder | recovery before anything inspects sequence numbers |
//! | 6 | NACK generator | loss detected from arrivals, not from released packets |
//! | 7–9 | TWCC receiver, RFC 8888, RTCP receiver reports | **arrival recorders — must precede the jitter buffer** |
//! | 10–11 | RTCP sender reports, interval PLI | generators with no read-side ordering constraint |
//! | 12 | jitter buffer | delays and re-stamps; releases toward the application |
//!
//! TWCC receiver and RFC 8888 do the same job in different formats — a chain carries one or the
//! other — so they are listed together; the receiver reports beside them are RFC 3550 reception
//! quality, not congestion-control feedback. Their order relative to each other does not matter.
//!
//! Arrival recorders precede the jitter buffer because the buffer re-stamps a packet with its
//! *release* instant. A recorder below it would report local playout times to the remote as
//! arrival times, and the remote's congestion controller would read this endpoint's buffering
//! depth as network delay variation.

use crate::Interceptor;
use crate::TaggedPacket;
use crate::stream_info::StreamInfo;
use sansio::Protocol;
use shared::error::Error;
use std::collections::VecDeque;
use std::time::Instant;

/// A flat list of interceptors, driven as one [`Protocol`].
///
/// The chain is the interceptor too; the interceptors are interceptors inside it.
#[derive(Default)]
pub(crate) struct Chain {
    /// Ordered by distance from the wire: index 0 is closest to the network.
    interceptors: Vec<Box<dyn Interceptor>>,
    read_outs: VecDeque<TaggedPacket>,
    write_outs: VecDeque<TaggedPacket>,
    /// Rakor patch: the belt of the walks, kept between them (empty between walks) instead of a
    /// new `VecDeque` per packet in `handle_read`/`handle_write` (one allocation per packet, per
    /// direction, per connection).
    belt: VecDeque<TaggedPacket>,
}

impl Chain {
    /// Build a chain from interceptors already in wire-to-application order.
    ///
    /// Crate-private: a chain is built by [`Registry`](crate::Registry), which also appends the
    /// terminus that ends the inbound RTCP path. A caller assembling the vector directly could
    /// leave it out, and the omission would look like working code.
    pub(crate) fn new(interceptors: Vec<Box<dyn Interceptor>>) -> Self {
        Self {
            interceptors,
            ..Self::default()
        }
    }

    /// How many interceptors the chain has.
    pub(crate) fn len(&self) -> usize {
        self.interceptors.len()
    }

    /// Whether the chain has no interceptors.
    pub(crate) fn is_empty(&self) -> bool {
        self.interceptors.is_empty()
    }

    /// One pass over `interceptors`, feeding each from the belt and collecting what it emits back onto
    /// the belt.
    ///
    /// `handle` and `poll` pick the direction's method pair; the iterator picks the direction. A
    /// packet an interceptor emits lands on the belt *behind* the ones it passed through, and is then
    /// carried to every interceptor still ahead — which is what makes injected packets impossible to
    /// bypass with.
    fn walk<'a, T>(
        interceptors: impl Iterator<Item = &'a mut Box<dyn Interceptor>>,
        mut belt: VecDeque<T>,
        handle: fn(&mut dyn Interceptor, T) -> Result<(), Error>,
        poll: fn(&mut dyn Interceptor) -> Option<T>,
    ) -> VecDeque<T> {
        for interceptor in interceptors {
            while let Some(next) = belt.pop_front() {
                // An interceptor takes the packet and decides what becomes of it: hold it, drop
                // it, or put it on its own queue to be collected below.
                if let Err(err) = handle(interceptor.as_mut(), next) {
                    log::warn!("interceptor handle failed: {err}");
                }
            }
            // Whatever it has ready — passed through, transformed, generated, or released — is
            // what the next interceptor in the walk receives.
            while let Some(next) = poll(interceptor.as_mut()) {
                belt.push_back(next);
            }
        }
        belt
    }

    /// Rakor patch: one read walk over the kept belt, with `first` on it (if any); what leaves
    /// the chain is appended to `read_outs` and the belt is kept, empty, for the next walk.
    fn walk_read(&mut self, first: Option<TaggedPacket>) {
        let mut belt = std::mem::take(&mut self.belt);
        belt.extend(first);
        let mut belt = Self::walk(
            self.interceptors.iter_mut(),
            belt,
            |s, p| s.handle_read(p),
            |s| s.poll_read(),
        );
        self.read_outs.extend(belt.drain(..));
        self.belt = belt;
    }

    /// Rakor patch: as [`Self::walk_read`], for the write direction.
    ///
    /// One packet is first carried through in place ([`Interceptor::write_in_place`]) for as
    /// long as the interceptors ahead can take it that way (all of a send-only leg's, unless one
    /// holds generated packets); the first that cannot gets it on the belt and the ordinary walk
    /// goes on from there. Same order and same result as the queued walk.
    fn walk_write(&mut self, first: Option<TaggedPacket>) {
        let mut belt = std::mem::take(&mut self.belt);
        let mut done = 0;
        if let Some(mut msg) = first {
            for interceptor in self.interceptors.iter_mut().rev() {
                if !interceptor.write_in_place(&mut msg) {
                    break;
                }
                done += 1;
            }
            if done == self.interceptors.len() {
                self.write_outs.push_back(msg);
                self.belt = belt;
                return;
            }
            belt.push_back(msg);
        }
        let mut belt = Self::walk(
            self.interceptors.iter_mut().rev().skip(done),
            belt,
            |s, p| s.handle_write(p),
            |s| s.poll_write(),
        );
        self.write_outs.extend(belt.drain(..));
        self.belt = belt;
    }

    fn drain_read(&mut self) {
        self.walk_read(None);
    }

    fn drain_write(&mut self) {
        self.walk_write(None);
    }
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for Chain {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        // Rakor patch: the kept belt instead of `VecDeque::from([msg])` (an allocation).
        self.walk_read(Some(msg));
        Ok(())
    }

    /// Walks with an **empty belt** when nothing is pending, because a jitter buffer may have
    /// released a packet on `handle_timeout` with no inbound packet since to carry it forward.
    fn poll_read(&mut self) -> Option<Self::Rout> {
        if self.read_outs.is_empty() {
            self.drain_read();
        }
        self.read_outs.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        // Rakor patch: the kept belt instead of `VecDeque::from([msg])` (an allocation).
        self.walk_write(Some(msg));
        Ok(())
    }

    /// Same reason as [`poll_read`](Self::poll_read): the pacer releases on a timeout, and
    /// generated RTCP appears with no outbound packet to ride along with.
    fn poll_write(&mut self) -> Option<Self::Wout> {
        if self.write_outs.is_empty() {
            self.drain_write();
        }
        self.write_outs.pop_front()
    }

    fn handle_timeout(&mut self, now: Self::Time) -> Result<(), Self::Error> {
        for interceptor in self.interceptors.iter_mut() {
            interceptor.handle_timeout(now)?;
        }
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        self.interceptors
            .iter_mut()
            .filter_map(|interceptor| interceptor.poll_timeout())
            .min()
    }

    fn close(&mut self) -> Result<(), Self::Error> {
        for interceptor in self.interceptors.iter_mut() {
            interceptor.close()?;
        }
        Ok(())
    }
}

/// A chain is itself an interceptor: it implements the same `Protocol`, and binding a stream
/// on it binds that stream on every interceptor inside it.
impl Interceptor for Chain {
    /// A local stream this endpoint is now sending.
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        for interceptor in self.interceptors.iter_mut() {
            interceptor.bind_local_stream(info);
        }
    }

    /// A local stream this endpoint has stopped sending.
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        for interceptor in self.interceptors.iter_mut() {
            interceptor.unbind_local_stream(info);
        }
    }

    /// A remote stream this endpoint is now receiving.
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        for interceptor in self.interceptors.iter_mut() {
            interceptor.bind_remote_stream(info);
        }
    }

    /// A remote stream this endpoint has stopped receiving.
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        for interceptor in self.interceptors.iter_mut() {
            interceptor.unbind_remote_stream(info);
        }
    }
}

#[cfg(test)]
mod tests {
    //! Rakor patch: the in-place write walk hands out the same packets in the same order as the
    //! queued walk.
    use super::*;
    use crate::report::sender::SenderReportBuilder;
    use crate::twcc::sender::TwccSenderBuilder;
    use crate::{AttributedPacket, NoopInterceptor, Packet};
    use shared::TransportContext;
    use std::time::Duration;

    /// Sequence numbers of what leaves the chain (`None` for RTCP).
    fn drain(chain: &mut Chain) -> Vec<Option<u16>> {
        let mut out = Vec::new();
        while let Some(m) = chain.poll_write() {
            out.push(match &m.message.packet {
                Packet::Rtp(p) => Some(p.header.sequence_number),
                _ => None,
            });
        }
        out
    }

    fn packet(now: Instant, sequence_number: u16) -> TaggedPacket {
        TaggedPacket {
            now,
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtp(rtp::Packet {
                header: rtp::header::Header {
                    version: 2,
                    sequence_number,
                    ssrc: 1,
                    ..Default::default()
                },
                payload: vec![0u8; 4].into(),
            })),
        }
    }

    /// A pass-through that never takes the in-place path: forces the queued walk.
    #[derive(Default)]
    struct Queued(VecDeque<TaggedPacket>);
    impl Protocol<TaggedPacket, TaggedPacket, ()> for Queued {
        type Rout = TaggedPacket;
        type Wout = TaggedPacket;
        type Eout = ();
        type Error = Error;
        type Time = Instant;
        fn handle_read(&mut self, _m: TaggedPacket) -> Result<(), Error> {
            Ok(())
        }
        fn poll_read(&mut self) -> Option<TaggedPacket> {
            None
        }
        fn handle_write(&mut self, m: TaggedPacket) -> Result<(), Error> {
            self.0.push_back(m);
            Ok(())
        }
        fn poll_write(&mut self) -> Option<TaggedPacket> {
            self.0.pop_front()
        }
    }
    impl Interceptor for Queued {
        fn bind_local_stream(&mut self, _info: &StreamInfo) {}
        fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
        fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
        fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
    }

    fn chain(queued_at: Option<usize>) -> Chain {
        let mut list: Vec<Box<dyn Interceptor>> = vec![
            Box::new(TwccSenderBuilder::new().build()),
            Box::new(
                SenderReportBuilder::new()
                    .with_interval(Duration::from_secs(1))
                    .build(),
            ),
            Box::new(NoopInterceptor::new()),
        ];
        if let Some(i) = queued_at {
            list.insert(i, Box::new(Queued::default()));
        }
        let mut chain = Chain::new(list);
        chain.bind_local_stream(&StreamInfo {
            ssrc: 1,
            clock_rate: 90_000,
            ..Default::default()
        });
        chain
    }

    /// Writes 0..3, fires the report timer, writes 3..5, and returns what left, in order.
    fn run(chain: &mut Chain) -> Vec<Option<u16>> {
        let t0 = Instant::now();
        let mut out = Vec::new();
        for seq in 0..3 {
            chain.handle_write(packet(t0, seq)).unwrap();
        }
        out.extend(drain(chain));
        let t1 = t0 + Duration::from_secs(2);
        chain.handle_timeout(t1).unwrap();
        // The sender report is queued; the next packet must not overtake it.
        for seq in 3..5 {
            chain.handle_write(packet(t1, seq)).unwrap();
        }
        out.extend(drain(chain));
        out
    }

    #[test]
    fn in_place_writes_leave_in_the_queued_order() {
        let all_in_place = run(&mut chain(None));
        assert_eq!(
            all_in_place,
            vec![Some(0), Some(1), Some(2), None, Some(3), Some(4)],
            "the report generated on the timeout leaves before the packets written after it"
        );
        for at in 0..=3 {
            assert_eq!(
                run(&mut chain(Some(at))),
                all_in_place,
                "queued stage at {at}"
            );
        }
    }
}
