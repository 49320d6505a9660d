//! The batcher's scheduling state as plain data: admission, ordering, batch forming and
//! shedding, with no threads or channels, so every rule is unit-tested here.
//!
//! **Cost.** A job (one prompt) costs `num_beams` units: the decoder's work grows with the beams
//! it carries. The [`RateEstimator`] turns costs into time from the batches actually decoded.
//!
//! **Order: fair queuing across calls.** Every HTTP call is a flow. Its jobs get finish tags as
//! in weighted fair queuing: the first job of a call gets `V + cost`, each further job of the
//! same call the previous tag `+ cost`, where the virtual time `V` is the tag of the last job
//! taken for decoding. The queue is served in tag order (ties: arrival order). A single small
//! request thus lands just behind the batch now decoding, while a 64-entry call is interleaved,
//! cost for cost, with everything that arrives after it: a large call cannot hold the compute
//! thread for longer than its fair share, and it is never starved either (`V` advances with
//! every batch, so later arrivals' tags overtake its remaining jobs).
//!
//! **Admission.** A job is admitted when the work queued ahead of it (in tag order, plus what is
//! left of the batch decoding now) and its own cost can be done, at the measured rate, within
//! [`ADMIT_FRACTION`] of the time left before its deadline; otherwise it is refused at once
//! with the time that work needs (the caller's `Retry-After`). Jobs that arrive later with
//! smaller tags can still push an admitted job back; before each batch the queue is walked and
//! jobs that can no longer finish in time are shed (answered "overloaded" then rather than after
//! their deadline).
//!
//! **Batches.** The job with the smallest tag heads the next batch; it is joined by later jobs of
//! the same group (same engine and beam width: one `beam_search` call), in tag order, while the
//! batch has fewer than `max_prompts` prompts and its cost stays within `max_cost`. The head is
//! always taken, even alone over `max_cost`.

use std::time::{Duration, Instant};

/// Share of the time left before its deadline that a job's estimated finish may use at
/// admission. The slack absorbs the estimate's error, so that an admitted job is rarely shed.
pub const ADMIT_FRACTION: f64 = 0.8;

/// Weight of the past in the [`RateEstimator`]'s decayed sums (per batch decoded): low enough
/// that a slowdown (a neighbour taking the CPU) shows within a few batches.
const RATE_DECAY: f64 = 0.6;

/// What a batch and the queue may hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Most prompts in one `beam_search` call.
    pub max_prompts: usize,
    /// Most cost (sum of beams) in one `beam_search` call.
    pub max_cost: u64,
    /// Most jobs waiting.
    pub max_queue: usize,
}

/// Cost per second of decoding, from decayed sums of the batches decoded: batches weigh by
/// their size, so the fixed overhead of small calls does not dominate the estimate.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateEstimator {
    cost: f64,
    secs: f64,
}

impl RateEstimator {
    /// Record a decode of `cost` units that took `elapsed`.
    pub fn observe(&mut self, cost: u64, elapsed: Duration) {
        self.cost = RATE_DECAY * self.cost + cost as f64;
        self.secs = RATE_DECAY * self.secs + elapsed.as_secs_f64().max(1e-6);
    }

    /// Units per second, once anything was observed.
    pub fn rate(&self) -> Option<f64> {
        (self.secs > 0.0).then(|| self.cost / self.secs)
    }

    /// Time to do `cost` units (zero while nothing was observed).
    pub fn time_for(&self, cost: u64) -> Duration {
        match self.rate() {
            Some(r) if r > 0.0 => Duration::from_secs_f64(cost as f64 / r),
            _ => Duration::ZERO,
        }
    }
}

/// Why a job was not (or no longer) queued.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Refusal {
    /// `max_queue` jobs are waiting.
    QueueFull {
        /// Jobs waiting.
        queued: usize,
        /// Estimated time until the work queued now is done.
        retry_after: Duration,
    },
    /// The job cannot finish before its deadline.
    WouldMissDeadline {
        /// Estimated time until the work queued ahead of it is done.
        retry_after: Duration,
    },
    /// Its deadline passed while it waited.
    Expired,
    /// Nobody waits for it any more (the client went away).
    Cancelled,
}

/// A job offered to the queue.
#[derive(Debug)]
pub struct Offer<T> {
    /// Its cost (beams).
    pub cost: u64,
    /// Jobs with equal groups can share a `beam_search` call.
    pub group: (usize, usize),
    /// Past this instant nobody waits for it.
    pub deadline: Instant,
    /// The payload handed back when it is scheduled.
    pub item: T,
}

#[derive(Debug)]
struct Entry<T> {
    tag: u64,
    offer: Offer<T>,
}

/// The batch now decoding.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    cost: u64,
    started: Instant,
}

/// The queue: jobs in tag order, the virtual time, the batch in flight and the rate estimate.
#[derive(Debug)]
pub struct Queue<T> {
    limits: Limits,
    entries: Vec<Entry<T>>,
    vtime: u64,
    in_flight: Option<InFlight>,
    rate: RateEstimator,
}

/// What [`Queue::next_batch`] hands out.
#[derive(Debug)]
pub struct Batch<T> {
    /// Jobs to decode together, in tag order (possibly empty).
    pub jobs: Vec<T>,
    /// Their total cost.
    pub cost: u64,
    /// Jobs dropped from the queue, and why.
    pub shed: Vec<(T, Refusal)>,
}

impl<T> Queue<T> {
    /// An empty queue.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits: Limits {
                max_prompts: limits.max_prompts.max(1),
                max_cost: limits.max_cost.max(1),
                max_queue: limits.max_queue.max(1),
            },
            entries: Vec::new(),
            vtime: 0,
            in_flight: None,
            rate: RateEstimator::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Jobs waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no job waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total cost waiting.
    pub fn queued_cost(&self) -> u64 {
        self.entries.iter().map(|e| e.offer.cost).sum()
    }

    /// The rate estimate.
    pub fn rate(&self) -> RateEstimator {
        self.rate
    }

    /// Seed the rate estimate from a first decode (a checkpoint's verification) while no batch
    /// has been measured.
    pub fn seed_rate(&mut self, cost: u64, elapsed: Duration) {
        if self.rate.rate().is_none() {
            self.rate.observe(cost, elapsed);
        }
    }

    /// Work left of the batch decoding now, at the estimated rate.
    fn in_flight_left(&self, now: Instant) -> Duration {
        match self.in_flight {
            None => Duration::ZERO,
            Some(f) => self
                .rate
                .time_for(f.cost)
                .saturating_sub(now.saturating_duration_since(f.started)),
        }
    }

    /// Offer the jobs of one call (one flow, in order): each is admitted or refused on its
    /// own. The answer lists, per offer, `Ok` or the refusal together with the refused item.
    pub fn admit(&mut self, offers: Vec<Offer<T>>, now: Instant) -> Vec<Result<(), (T, Refusal)>> {
        let mut flow_tag = self.vtime;
        let mut out = Vec::with_capacity(offers.len());
        for offer in offers {
            if offer.deadline <= now {
                out.push(Err((offer.item, Refusal::Expired)));
                continue;
            }
            if self.entries.len() >= self.limits.max_queue {
                let retry_after = self.in_flight_left(now) + self.rate.time_for(self.queued_cost());
                out.push(Err((
                    offer.item,
                    Refusal::QueueFull {
                        queued: self.entries.len(),
                        retry_after,
                    },
                )));
                continue;
            }
            let tag = flow_tag + offer.cost;
            // Everything with a smaller tag is served first (equal tags: in arrival order).
            let pos = self.entries.partition_point(|e| e.tag <= tag);
            let ahead: u64 = self.entries[..pos].iter().map(|e| e.offer.cost).sum();
            let wait = self.in_flight_left(now) + self.rate.time_for(ahead);
            let finish = wait + self.rate.time_for(offer.cost);
            let left = offer.deadline.saturating_duration_since(now);
            if finish.as_secs_f64() > ADMIT_FRACTION * left.as_secs_f64() {
                out.push(Err((
                    offer.item,
                    Refusal::WouldMissDeadline { retry_after: wait },
                )));
                continue;
            }
            flow_tag = tag;
            self.entries.insert(pos, Entry { tag, offer });
            out.push(Ok(()));
        }
        out
    }

    /// Shed what cannot be served in time (and what `live` says nobody waits for), then take
    /// the next batch and mark it in flight. Call [`Queue::finished`] when it is decoded.
    pub fn next_batch(&mut self, now: Instant, live: impl Fn(&T) -> bool) -> Batch<T> {
        let mut shed = Vec::new();
        let mut kept = Vec::with_capacity(self.entries.len());
        let mut backlog = Duration::ZERO;
        for e in std::mem::take(&mut self.entries) {
            if !live(&e.offer.item) {
                shed.push((e.offer.item, Refusal::Cancelled));
                continue;
            }
            if e.offer.deadline <= now {
                shed.push((e.offer.item, Refusal::Expired));
                continue;
            }
            let finish = backlog + self.rate.time_for(e.offer.cost);
            if now + finish > e.offer.deadline {
                shed.push((
                    e.offer.item,
                    Refusal::WouldMissDeadline {
                        retry_after: backlog,
                    },
                ));
                continue;
            }
            backlog = finish;
            kept.push(e);
        }
        self.entries = kept;
        let Some(head) = self.entries.first() else {
            return Batch {
                jobs: Vec::new(),
                cost: 0,
                shed,
            };
        };
        let group = head.offer.group;
        self.vtime = self.vtime.max(head.tag);
        let mut take = vec![0usize];
        let mut cost = head.offer.cost;
        for (i, e) in self.entries.iter().enumerate().skip(1) {
            if take.len() >= self.limits.max_prompts {
                break;
            }
            if e.offer.group == group && cost + e.offer.cost <= self.limits.max_cost {
                take.push(i);
                cost += e.offer.cost;
            }
        }
        let mut jobs = Vec::with_capacity(take.len());
        for &i in take.iter().rev() {
            jobs.push(self.entries.remove(i).offer.item);
        }
        jobs.reverse();
        self.in_flight = Some(InFlight { cost, started: now });
        Batch { jobs, cost, shed }
    }

    /// The batch in flight (of `cost`) was decoded in `elapsed`: update the rate.
    pub fn finished(&mut self, cost: u64, elapsed: Duration) {
        self.in_flight = None;
        if cost > 0 {
            self.rate.observe(cost, elapsed);
        }
    }

    /// True when the next batch would be full, so waiting for more jobs gains nothing.
    pub fn batch_full(&self) -> bool {
        let Some(head) = self.entries.first() else {
            return false;
        };
        let same: Vec<&Entry<T>> = self
            .entries
            .iter()
            .filter(|e| e.offer.group == head.offer.group)
            .collect();
        same.len() >= self.limits.max_prompts
            || same.iter().map(|e| e.offer.cost).sum::<u64>() >= self.limits.max_cost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_prompts: 4,
        max_cost: 400,
        max_queue: 100,
    };

    fn offer(id: u32, cost: u64, deadline: Instant) -> Offer<u32> {
        Offer {
            cost,
            group: (1, cost as usize),
            deadline,
            item: id,
        }
    }

    fn ids(b: &Batch<u32>) -> Vec<u32> {
        b.jobs.clone()
    }

    /// A queue whose measured rate is 1000 units per second.
    fn measured(limits: Limits) -> Queue<u32> {
        let mut q = Queue::new(limits);
        q.finished(1000, Duration::from_secs(1));
        q
    }

    #[test]
    fn rate_estimate_weighs_batches_by_size() {
        let mut r = RateEstimator::default();
        assert_eq!(r.rate(), None);
        assert_eq!(r.time_for(100), Duration::ZERO);
        r.observe(400, Duration::from_millis(400));
        assert!((r.rate().unwrap() - 1000.0).abs() < 1e-6);
        // A small, slow call moves the estimate a little, not to its own 100/s.
        r.observe(5, Duration::from_millis(50));
        let rate = r.rate().unwrap();
        assert!(rate > 800.0 && rate < 1000.0, "{rate}");
    }

    #[test]
    fn small_calls_overtake_the_rest_of_a_large_call() {
        let now = Instant::now();
        let far = now + Duration::from_secs(3600);
        let mut q = Queue::new(LIMITS);
        // One call of six 200-beam jobs: the first two fill a batch (max_cost 400).
        let big: Vec<_> = (0..6).map(|i| offer(i, 200, far)).collect();
        assert!(q.admit(big, now).iter().all(Result::is_ok));
        let b = q.next_batch(now, |_| true);
        assert_eq!((ids(&b), b.cost), (vec![0, 1], 400));
        // Two 5-beam requests arrive while it decodes: they go before the big call's rest.
        assert!(q.admit(vec![offer(10, 5, far)], now)[0].is_ok());
        assert!(q.admit(vec![offer(11, 5, far)], now)[0].is_ok());
        q.finished(b.cost, Duration::from_millis(400));
        let b = q.next_batch(now, |_| true);
        assert_eq!(ids(&b), vec![10, 11]);
        // One arriving now still overtakes the big call's remaining jobs.
        assert!(q.admit(vec![offer(12, 5, far)], now)[0].is_ok());
        q.finished(b.cost, Duration::from_millis(10));
        let b = q.next_batch(now, |_| true);
        assert_eq!(ids(&b), vec![12]);
        q.finished(b.cost, Duration::from_millis(10));
        let b = q.next_batch(now, |_| true);
        assert_eq!(ids(&b), vec![2, 3]);
    }

    #[test]
    fn a_large_call_is_not_starved_by_a_stream_of_small_ones() {
        let now = Instant::now();
        let far = now + Duration::from_secs(3600);
        let mut q = Queue::new(LIMITS);
        assert!(q
            .admit((0..3).map(|i| offer(i, 200, far)).collect(), now)
            .iter()
            .all(Result::is_ok));
        let mut order = Vec::new();
        for n in 0..200u32 {
            assert!(q.admit(vec![offer(100 + n, 5, far)], now)[0].is_ok());
            let b = q.next_batch(now, |_| true);
            order.extend(ids(&b));
            q.finished(b.cost, Duration::from_millis(5));
        }
        // Virtual time advances with every small batch, so the big jobs get their turns.
        assert!(
            order.contains(&0) && order.contains(&1) && order.contains(&2),
            "{order:?}"
        );
    }

    #[test]
    fn groups_by_engine_and_beams_with_prompt_and_cost_limits() {
        let now = Instant::now();
        let far = now + Duration::from_secs(3600);
        let mut q = Queue::new(LIMITS);
        let mut offers: Vec<_> = (0..6).map(|i| offer(i, 50, far)).collect();
        offers.insert(2, offer(9, 20, far));
        offers.push(Offer {
            group: (2, 50),
            ..offer(7, 50, far)
        });
        for o in offers {
            assert!(q.admit(vec![o], now)[0].is_ok());
        }
        // The cheaper job has the smallest tag; then at most 4 prompts of one group; the other
        // engine's job waits its turn.
        let b = q.next_batch(now, |_| true);
        assert_eq!(ids(&b), vec![9]);
        q.finished(b.cost, Duration::from_millis(1));
        let b = q.next_batch(now, |_| true);
        assert_eq!(ids(&b), vec![0, 1, 2, 3]);
        q.finished(b.cost, Duration::from_millis(1));
        let b = q.next_batch(now, |_| true);
        assert_eq!(ids(&b), vec![4, 5]);
        q.finished(b.cost, Duration::from_millis(1));
        let b = q.next_batch(now, |_| true);
        assert_eq!(ids(&b), vec![7]);
        // A head over max_cost still runs, alone.
        q.finished(b.cost, Duration::from_millis(1));
        q.admit(vec![offer(20, 500, far), offer(21, 500, far)], now);
        assert_eq!(ids(&q.next_batch(now, |_| true)), vec![20]);
    }

    #[test]
    fn admission_refuses_what_cannot_finish_before_its_deadline() {
        let now = Instant::now();
        let deadline = now + Duration::from_millis(1010);
        let mut q = measured(Limits {
            max_queue: 1000,
            ..LIMITS
        });
        // 1000 units/s and a 1.01 s deadline: 0.808 s of work, 16 jobs of 50, fits.
        let verdicts: Vec<bool> = (0..20)
            .map(|i| q.admit(vec![offer(i, 50, deadline)], now)[0].is_ok())
            .collect();
        assert_eq!(verdicts.iter().filter(|&&ok| ok).count(), 16);
        assert!(verdicts[..16].iter().all(|&ok| ok));
        match q.admit(vec![offer(99, 50, deadline)], now).remove(0) {
            Err((99, Refusal::WouldMissDeadline { retry_after })) => {
                let ms = retry_after.as_secs_f64() * 1e3;
                assert!((ms - 800.0).abs() < 1.0, "{ms}");
            }
            other => panic!("{other:?}"),
        }
        // A cheaper job with a smaller tag still fits ahead of most of the queue.
        assert!(q.admit(vec![offer(98, 5, deadline)], now)[0].is_ok());
        // Expired on arrival.
        assert!(matches!(
            q.admit(vec![offer(97, 5, now)], now)[0],
            Err((97, Refusal::Expired))
        ));
    }

    #[test]
    fn admission_counts_the_batch_in_flight() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(1);
        let mut q = measured(LIMITS);
        q.admit(vec![offer(0, 400, now + Duration::from_secs(10))], now);
        let b = q.next_batch(now, |_| true);
        assert_eq!(b.cost, 400);
        // 0.4 s left in flight + 0.5 s: over 0.8 s.
        assert!(q.admit(vec![offer(1, 500, deadline)], now)[0].is_err());
        // Later, with 0.2 s of the batch left, 0.7 s fits.
        let later = now + Duration::from_millis(200);
        assert!(q.admit(vec![offer(2, 500, later + Duration::from_secs(1))], later)[0].is_ok());
    }

    #[test]
    fn queue_full_and_per_entry_verdicts_of_one_call() {
        let now = Instant::now();
        let far = now + Duration::from_secs(3600);
        let mut q = Queue::new(Limits {
            max_queue: 3,
            ..LIMITS
        });
        let v = q.admit((0..5).map(|i| offer(i, 10, far)).collect(), now);
        assert!(v[..3].iter().all(Result::is_ok));
        assert!(matches!(
            v[3],
            Err((3, Refusal::QueueFull { queued: 3, .. }))
        ));
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn shedding_before_each_batch() {
        let now = Instant::now();
        let mut q = measured(LIMITS);
        q.admit(vec![offer(0, 100, now + Duration::from_secs(10))], now);
        q.admit(vec![offer(1, 100, now + Duration::from_millis(500))], now);
        q.admit(vec![offer(2, 100, now + Duration::from_secs(10))], now);
        q.admit(vec![offer(3, 100, now + Duration::from_secs(10))], now);
        // Later: 1 can no longer finish (0.1 s of work ahead, 0.1 s of its own, 0.15 s left),
        // 2 is no longer waited for.
        let later = now + Duration::from_millis(350);
        let b = q.next_batch(later, |&id| id != 2);
        assert_eq!(ids(&b), vec![0, 3]);
        let shed: Vec<_> = b.shed.iter().map(|(id, r)| (*id, *r)).collect();
        assert_eq!(shed.len(), 2);
        assert!(matches!(shed[0], (1, Refusal::WouldMissDeadline { .. })));
        assert_eq!(shed[1], (2, Refusal::Cancelled));
        let b = q.next_batch(now + Duration::from_secs(11), |_| true);
        assert!(b.jobs.is_empty() && b.shed.is_empty());
    }
}
