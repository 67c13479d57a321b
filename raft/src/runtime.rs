//! [`SeededRuntime`]: openraft's async runtime with a seedable RNG.
//!
//! It is openraft's `TokioRuntime` in every respect (tasks, sleeps, timeouts and oneshots
//! are tokio's, so tokio's paused or simulated time drives them) except
//! [`AsyncRuntime::thread_rng`], from which openraft draws election timeouts. The stock
//! runtime uses `rand::thread_rng`, which no seed controls; this one returns a handle on a
//! thread-local `StdRng` that [`seed_runtime_rng`] reseeds. A thread that was never seeded
//! seeds itself from OS entropy on first use, so production stays random.

use std::cell::RefCell;
use std::future::Future;
use std::time::Duration;

use openraft::async_runtime::TokioOneShotSender;
use openraft::{AsyncRuntime, OptionalSend, TokioInstant};
use rand08::rngs::StdRng;
use rand08::{RngCore, SeedableRng};

thread_local! {
    static RUNTIME_RNG: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// Reseeds the calling thread's runtime RNG from `seed`. Call it on the thread that runs the
/// simulation (a current-thread runtime), before each run: from then on, the election
/// timeouts openraft draws on this thread follow the seed.
pub fn seed_runtime_rng(seed: u64) {
    RUNTIME_RNG.with(|rng| *rng.borrow_mut() = Some(StdRng::seed_from_u64(seed)));
}

/// Forgets the calling thread's seed: the next draw seeds from OS entropy again.
pub fn unseed_runtime_rng() {
    RUNTIME_RNG.with(|rng| *rng.borrow_mut() = None);
}

fn with_rng<R>(f: impl FnOnce(&mut StdRng) -> R) -> R {
    RUNTIME_RNG.with(|cell| {
        let mut slot = cell.borrow_mut();
        // Unseeded (production): seed from OS entropy once per thread.
        let rng = slot.get_or_insert_with(StdRng::from_entropy);
        f(rng)
    })
}

/// A handle on the calling thread's runtime RNG (what [`SeededRuntime::thread_rng`]
/// returns). Not `Send`: like `rand::rngs::ThreadRng`, it draws from the thread it is used on.
#[derive(Debug, Clone, Default)]
pub struct RuntimeRng {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl RngCore for RuntimeRng {
    fn next_u32(&mut self) -> u32 {
        with_rng(|r| r.next_u32())
    }

    fn next_u64(&mut self) -> u64 {
        with_rng(|r| r.next_u64())
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        with_rng(|r| r.fill_bytes(dest));
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand08::Error> {
        with_rng(|r| r.try_fill_bytes(dest))
    }
}

/// openraft's `TokioRuntime` with a seedable [`thread_rng`](AsyncRuntime::thread_rng).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SeededRuntime;

impl AsyncRuntime for SeededRuntime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = tokio::task::JoinHandle<T>;
    type Sleep = tokio::time::Sleep;
    type Instant = TokioInstant;
    type TimeoutError = tokio::time::error::Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = tokio::time::Timeout<T>;
    type ThreadLocalRng = RuntimeRng;
    type OneshotSender<T: OptionalSend> = TokioOneShotSender<T>;
    type OneshotReceiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;
    type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        tokio::task::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        join_error.is_panic()
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        RuntimeRng::default()
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (TokioOneShotSender(tx), rx)
    }
}
