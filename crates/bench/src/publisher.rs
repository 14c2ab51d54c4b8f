//! Publishers: a few keep-alive connections, pipelined, on one thread.
//!
//! Each topic belongs to exactly one publisher connection, and HTTP/1.1
//! answers pipelined requests in order, so the server sees a topic's
//! sequence numbers in order and subscribers can count gaps and repeats
//! with a tiny window. With `--rate` each connection sends its share on a
//! fixed schedule (all requests due at a wake-up are written together; the
//! timer wakes at most every millisecond). Flat out, a connection keeps up
//! to `pipeline` requests in flight and stops while the deliveries still
//! owed to subscribers exceed the backlog limit.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    accounting::{new_histogram, record_ns},
    chunked::ChunkedDecoder,
    clock::now_ns,
    frames::Stamp,
    http::{parse_response_head, write_post, BodyFraming},
    shared::Shared,
    subscriber::connect,
    target::Target,
};

/// How long a publisher waits for the answers still in flight at the end.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// One topic as a publisher sees it.
#[derive(Debug, Clone)]
pub struct PublishTopic {
    /// Index into the shared topic counters.
    pub index: u32,
    /// Topic name.
    pub name: String,
    /// Publish path for this topic.
    pub path: String,
}

/// One publisher connection.
#[derive(Debug, Clone)]
pub struct PublisherPlan {
    /// Server address.
    pub server: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// The topics this connection publishes to, round-robin.
    pub topics: Vec<PublishTopic>,
    /// Publishes per second on this connection; `None` for flat out.
    pub rate: Option<f64>,
    /// When the first publish is due (bench clock).
    pub start_ns: u64,
    /// When publishing stops (bench clock).
    pub end_ns: u64,
    /// Requests in flight at most.
    pub pipeline: usize,
    /// Payload size.
    pub payload_bytes: usize,
    /// Flat out: pause while this many deliveries are owed (0: no limit).
    pub backlog_limit: i64,
}

/// What the publishers of a thread did.
#[derive(Debug, Clone)]
pub struct PublisherTotals {
    /// Requests written.
    pub published: u64,
    /// 2xx answers.
    pub acked: u64,
    /// Other answers, or requests lost with their connection.
    pub failed: u64,
    /// Connections that failed.
    pub errors: u64,
    /// Request-to-answer time.
    pub rtt: Histogram<u64>,
}

impl Default for PublisherTotals {
    fn default() -> Self {
        Self {
            published: 0,
            acked: 0,
            failed: 0,
            errors: 0,
            rtt: new_histogram(),
        }
    }
}

impl PublisherTotals {
    fn merge(&mut self, other: &Self) {
        self.published += other.published;
        self.acked += other.acked;
        self.failed += other.failed;
        self.errors += other.errors;
        self.rtt.add(&other.rtt).expect("histograms share bounds");
    }
}

/// Runs every publisher connection on a new current-thread runtime until
/// their end time and the answers still in flight; blocks the caller.
pub fn run_thread(
    plans: Vec<PublisherPlan>,
    shared: Arc<Shared>,
    target: Target,
) -> PublisherTotals {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds");
    let target = Arc::new(target);
    rt.block_on(async move {
        let tasks: Vec<_> = plans
            .into_iter()
            .map(|plan| tokio::spawn(publish(plan, shared.clone(), target.clone())))
            .collect();
        let mut totals = PublisherTotals::default();
        for task in tasks {
            if let Ok(t) = task.await {
                totals.merge(&t);
            }
        }
        totals
    })
}

/// Reads pipelined responses and reports each one's status.
#[derive(Debug)]
enum ResponseState {
    Head,
    Length {
        status: u16,
        left: u64,
    },
    Chunked {
        status: u16,
        decoder: ChunkedDecoder,
    },
}

/// Parses complete responses at the start of `buf[..end]`, calling
/// `on_response` with each status; returns the bytes consumed.
fn parse_responses(
    state: &mut ResponseState,
    buf: &mut [u8],
    end: usize,
    mut on_response: impl FnMut(u16),
) -> Result<usize, ()> {
    let mut pos = 0;
    loop {
        match state {
            ResponseState::Head => {
                let Some(head) = parse_response_head(&buf[pos..end]).map_err(|_| ())? else {
                    return Ok(pos);
                };
                pos += head.len;
                *state = match head.framing {
                    BodyFraming::Length(left) => ResponseState::Length {
                        status: head.status,
                        left,
                    },
                    BodyFraming::Chunked => ResponseState::Chunked {
                        status: head.status,
                        decoder: ChunkedDecoder::new(),
                    },
                    BodyFraming::UntilClose => return Err(()),
                };
            }
            ResponseState::Length { status, left } => {
                let take = (*left).min((end - pos) as u64);
                pos += take as usize;
                *left -= take;
                if *left > 0 {
                    return Ok(pos);
                }
                on_response(*status);
                *state = ResponseState::Head;
            }
            ResponseState::Chunked { status, decoder } => {
                let decoded = decoder.decode(buf, pos, pos, end).map_err(|_| ())?;
                pos = decoded.in_end;
                if !decoder.is_done() {
                    return Ok(pos);
                }
                on_response(*status);
                *state = ResponseState::Head;
            }
        }
    }
}

async fn publish(plan: PublisherPlan, shared: Arc<Shared>, target: Arc<Target>) -> PublisherTotals {
    let mut totals = PublisherTotals::default();
    let Ok(mut stream) = connect(plan.server, None).await else {
        totals.errors += 1;
        return totals;
    };
    let _ = stream.set_nodelay(true);
    let pipeline = plan.pipeline.max(1);
    let interval_ns = plan.rate.map(|r| 1e9 / r.max(1e-3));
    let mut wbuf = Vec::with_capacity(pipeline * (plan.payload_bytes + 256));
    let mut body = Vec::with_capacity(plan.payload_bytes + 256);
    let mut rbuf = vec![0u8; 64 * 1024];
    let mut rlen = 0;
    let mut state = ResponseState::Head;
    let mut inflight: VecDeque<(u32, u64)> = VecDeque::with_capacity(pipeline);
    let mut sent_here = 0u64;
    let mut next_topic = 0usize;
    let drain_deadline = plan.end_ns + DRAIN_TIMEOUT.as_nanos() as u64;
    sleep_until_ns(plan.start_ns).await;

    loop {
        let now = now_ns();
        let sending = now < plan.end_ns && !plan.topics.is_empty();
        if !sending && (inflight.is_empty() || now >= drain_deadline) {
            break;
        }
        let room = pipeline - inflight.len();
        let mut wake_at = None;
        if sending && room > 0 {
            let due = match interval_ns {
                Some(iv) => {
                    let elapsed = now.saturating_sub(plan.start_ns) as f64;
                    ((elapsed / iv) as u64 + 1).saturating_sub(sent_here)
                }
                None => room as u64,
            };
            let blocked =
                plan.backlog_limit > 0 && shared.outstanding.load(Relaxed) >= plan.backlog_limit;
            let n = if blocked { 0 } else { due.min(room as u64) };
            if n > 0 {
                let mut written = 0;
                for _ in 0..n {
                    // The backlog is re-checked per request: the window
                    // bounds events owed, not wake-ups.
                    if written > 0
                        && plan.backlog_limit > 0
                        && shared.outstanding.load(Relaxed) >= plan.backlog_limit
                    {
                        break;
                    }
                    written += 1;
                    let topic = &plan.topics[next_topic % plan.topics.len()];
                    next_topic += 1;
                    let t = topic.index as usize;
                    let seq = shared.topics.sent[t].fetch_add(1, Relaxed);
                    let stamp = Stamp {
                        seq,
                        sent_ns: now_ns(),
                    };
                    body.clear();
                    target.write_body(&mut body, &topic.name, stamp, plan.payload_bytes);
                    write_post(
                        &mut wbuf,
                        &plan.host,
                        &topic.path,
                        target.content_type(),
                        &body,
                    );
                    inflight.push_back((topic.index, stamp.sent_ns));
                    let owed = shared.topics.live[t].load(Relaxed);
                    shared.outstanding.fetch_add(i64::from(owed), Relaxed);
                }
                sent_here += written;
                totals.published += written;
                if stream.write_all(&wbuf).await.is_err() {
                    fail_inflight(&mut inflight, &shared, &mut totals);
                    totals.errors += 1;
                    return totals;
                }
                wbuf.clear();
                continue;
            }
            wake_at = Some(match (blocked, interval_ns) {
                (false, Some(iv)) => plan.start_ns + (sent_here as f64 * iv) as u64,
                _ => now + 1_000_000,
            });
        }
        if !sending {
            wake_at = Some(drain_deadline);
        }
        let read = tokio::select! {
            read = stream.read(&mut rbuf[rlen..]) => Some(read),
            _ = sleep_until_ns(wake_at.unwrap_or(u64::MAX)), if wake_at.is_some() => None,
        };
        let n = match read {
            None => continue,
            Some(Ok(n)) if n > 0 => n,
            Some(_) => {
                fail_inflight(&mut inflight, &shared, &mut totals);
                totals.errors += 1;
                return totals;
            }
        };
        rlen += n;
        let answered = parse_responses(&mut state, &mut rbuf, rlen, |status| {
            let Some((topic, sent_ns)) = inflight.pop_front() else {
                return;
            };
            let t = topic as usize;
            if (200..300).contains(&status) {
                totals.acked += 1;
                shared.topics.acked[t].fetch_add(1, Relaxed);
                record_ns(&mut totals.rtt, now_ns().saturating_sub(sent_ns));
            } else {
                totals.failed += 1;
                shared.topics.failed[t].fetch_add(1, Relaxed);
                let owed = shared.topics.live[t].load(Relaxed);
                shared.outstanding.fetch_sub(i64::from(owed), Relaxed);
            }
        });
        match answered {
            Ok(used) => {
                rbuf.copy_within(used..rlen, 0);
                rlen -= used;
                if rlen == rbuf.len() {
                    rbuf.resize(rbuf.len() * 2, 0);
                }
            }
            Err(()) => {
                fail_inflight(&mut inflight, &shared, &mut totals);
                totals.errors += 1;
                return totals;
            }
        }
    }
    fail_inflight(&mut inflight, &shared, &mut totals);
    totals
}

/// Counts every request still in flight as failed.
fn fail_inflight(
    inflight: &mut VecDeque<(u32, u64)>,
    shared: &Shared,
    totals: &mut PublisherTotals,
) {
    for (topic, _) in inflight.drain(..) {
        let t = topic as usize;
        totals.failed += 1;
        shared.topics.failed[t].fetch_add(1, Relaxed);
        let owed = shared.topics.live[t].load(Relaxed);
        shared.outstanding.fetch_sub(i64::from(owed), Relaxed);
    }
}

async fn sleep_until_ns(at_ns: u64) {
    let now = now_ns();
    if at_ns > now {
        tokio::time::sleep(Duration::from_nanos(at_ns - now)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pipelined_responses_split_anywhere() {
        let raw = b"HTTP/1.1 202 Accepted\r\ncontent-length: 5\r\n\r\n{\"a\"}\
HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
HTTP/1.1 400 Bad\r\nContent-Length: 0\r\n\r\n";
        for cut in 0..=raw.len() {
            let mut buf = vec![0u8; raw.len()];
            let mut state = ResponseState::Head;
            let mut statuses = Vec::new();
            let mut len = 0;
            for piece in [&raw[..cut], &raw[cut..]] {
                buf[len..len + piece.len()].copy_from_slice(piece);
                len += piece.len();
                let used =
                    parse_responses(&mut state, &mut buf, len, |s| statuses.push(s)).unwrap();
                buf.copy_within(used..len, 0);
                len -= used;
            }
            assert_eq!(statuses, vec![202, 201, 400], "cut at {cut}");
            assert_eq!(len, 0);
        }
    }
}
