//! Subscriber threads: many SSE streams on one current-thread runtime.
//!
//! One thread reading every stream keeps the bench's CPU small and
//! measurable; `--threads` adds more when one core's worth of reads is not
//! enough. Tasks on a thread share one `SubscriberTotals` (and so one
//! latency histogram) through an `Rc<RefCell>`, borrowed once per read.
//! Each socket is bound to a source address in 127.0.0.0/8 before it
//! connects, so the 4-tuples spread over several addresses and one run can
//! pass the ~28k ephemeral ports of a single address pair.

use std::{
    cell::RefCell,
    io,
    net::{Ipv4Addr, SocketAddr},
    rc::Rc,
    sync::{atomic::Ordering::Relaxed, Arc},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    sync::{watch, Semaphore},
    task::LocalSet,
};

use crate::{
    accounting::{record_ns, SeqTracker, SubscriberTotals},
    body::EventBody,
    clock::now_ns,
    frames::parse_stamp,
    http::{parse_response_head, write_get, ResponseHead},
    shared::Shared,
};

/// How long opening one stream (connect, request, response head) may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// One stream to open.
#[derive(Debug, Clone)]
pub struct SubscriberPlan {
    /// Topic index (for the shared counters).
    pub topic: u32,
    /// Server address.
    pub server: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// Request path.
    pub path: String,
    /// Local address to bind before connecting.
    pub source: Option<Ipv4Addr>,
}

/// Settings common to every stream of a thread.
#[derive(Debug, Clone, Copy)]
pub struct ThreadSettings {
    /// Streams opening at once on this thread.
    pub connect_concurrency: usize,
    /// Initial read buffer per stream.
    pub read_buffer: usize,
}

/// Runs `plans` on a new current-thread runtime until `stop` turns true,
/// and returns what the streams observed. Blocks the calling thread.
pub fn run_thread(
    plans: Vec<SubscriberPlan>,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    settings: ThreadSettings,
) -> SubscriberTotals {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds");
    let local = LocalSet::new();
    local.block_on(&rt, async move {
        let totals = Rc::new(RefCell::new(SubscriberTotals::default()));
        let gate = Rc::new(Semaphore::new(settings.connect_concurrency.max(1)));
        let tasks: Vec<_> = plans
            .into_iter()
            .map(|plan| {
                tokio::task::spawn_local(subscribe(
                    plan,
                    shared.clone(),
                    totals.clone(),
                    gate.clone(),
                    stop.clone(),
                    settings.read_buffer,
                ))
            })
            .collect();
        for task in tasks {
            // A panicking task already lost its counts; the others still report.
            let _ = task.await;
        }
        totals.take()
    })
}

/// Connects from `source` (if any) to `server`.
///
/// # Errors
/// Socket, bind or connect errors.
pub async fn connect(server: SocketAddr, source: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip.into(), 0))?;
    }
    socket.connect(server).await
}

async fn open(plan: &SubscriberPlan, buf: &mut Vec<u8>) -> io::Result<(TcpStream, ResponseHead)> {
    let mut stream = connect(plan.server, plan.source).await?;
    buf.clear();
    write_get(buf, &plan.host, &plan.path);
    stream.write_all(buf).await?;
    buf.clear();
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_response_head(buf) {
            Ok(Some(head)) if head.status == 200 => return Ok((stream, head)),
            Ok(Some(head)) => {
                return Err(io::Error::other(format!("status {}", head.status)));
            }
            Ok(None) => {}
            Err(_) => return Err(io::Error::other("malformed response head")),
        }
    }
}

async fn subscribe(
    plan: SubscriberPlan,
    shared: Arc<Shared>,
    totals: Rc<RefCell<SubscriberTotals>>,
    gate: Rc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    read_buffer: usize,
) {
    let mut head_buf = Vec::new();
    let opened = {
        let _permit = gate.acquire().await.expect("the gate is never closed");
        tokio::time::timeout(OPEN_TIMEOUT, open(&plan, &mut head_buf)).await
    };
    let (mut stream, head) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(_)) | Err(_) => {
            totals.borrow_mut().connect_failures += 1;
            shared.connect_failed.fetch_add(1, Relaxed);
            return;
        }
    };
    let topic = plan.topic as usize;
    shared.topics.live[topic].fetch_add(1, Relaxed);
    totals.borrow_mut().connected += 1;
    shared.connected.fetch_add(1, Relaxed);

    let mut tracker = SeqTracker::new();
    let mut body = EventBody::new(head.framing, read_buffer);
    let leftover = head_buf.split_off(head.len);
    drop(head_buf);
    let mut ended = absorb(&shared, &totals, &mut tracker, |on_event| {
        body.feed(&leftover, on_event).unwrap_or(true)
    });
    drop(leftover);

    let stopped = stop.wait_for(|stop| *stop);
    tokio::pin!(stopped);
    while !ended {
        let spare = match body.spare() {
            Ok(spare) => spare,
            Err(_) => break,
        };
        let read = tokio::select! {
            biased;
            _ = &mut stopped => None,
            read = stream.read(spare) => Some(read),
        };
        let n = match read {
            None => break,
            Some(Ok(0) | Err(_)) => {
                ended = true;
                continue;
            }
            Some(Ok(n)) => n,
        };
        ended = absorb(&shared, &totals, &mut tracker, |on_event| {
            body.filled(n, on_event).unwrap_or(true)
        });
    }
    if ended {
        // The server ended the stream: stop expecting deliveries on it, then
        // wait for the end of the run so its losses are counted against
        // everything that was acknowledged.
        shared.topics.live[topic].fetch_sub(1, Relaxed);
        let missing = shared.topics.sent[topic]
            .load(Relaxed)
            .saturating_sub(tracker.distinct);
        shared.outstanding.fetch_sub(missing as i64, Relaxed);
        shared.disconnected.fetch_add(1, Relaxed);
        totals.borrow_mut().disconnects += 1;
        drop(stream);
        let _ = stopped.await;
    }
    let acked = shared.topics.acked[topic].load(Relaxed);
    totals.borrow_mut().add_tracker(&tracker, acked);
}

/// Runs `read` (which scans events into the callback) and accounts for the
/// events it found; returns what `read` returned.
fn absorb(
    shared: &Shared,
    totals: &RefCell<SubscriberTotals>,
    tracker: &mut SeqTracker,
    read: impl FnOnce(&mut dyn FnMut(Option<&[u8]>)) -> bool,
) -> bool {
    let now = now_ns();
    let from = shared.record_from_ns.load(Relaxed);
    let until = shared.record_until_ns.load(Relaxed);
    let mut totals = totals.borrow_mut();
    let totals = &mut *totals;
    let mut delivered = 0u64;
    let ended = read(&mut |data: Option<&[u8]>| {
        let Some(data) = data else { return };
        delivered += 1;
        match parse_stamp(data) {
            Some(stamp) => {
                tracker.observe(stamp.seq);
                if stamp.sent_ns >= from && stamp.sent_ns < until {
                    record_ns(&mut totals.latency, now.saturating_sub(stamp.sent_ns));
                }
            }
            None => totals.unparsed += 1,
        }
    });
    if delivered > 0 {
        totals.deliveries += delivered;
        shared.deliveries.fetch_add(delivered, Relaxed);
        shared.outstanding.fetch_sub(delivered as i64, Relaxed);
    }
    ended
}
