//! Retrying with backoff: the doubling delay every retry in userpipe waits, and the loop that waits out
//! transient failures until the work is done or abandoned at shutdown.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

/// The work was given up (shutdown came first); nothing of it may be acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("abandoned at shutdown")]
pub struct Abandoned;

/// A doubling delay: `first`, then twice the previous one, never more than `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            next: first.min(max),
            max,
        }
    }

    /// The delay to wait now; the one after it is twice as long (up to the maximum).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// Waits the next delay, or returns `Abandoned` if `abandon` fires first.
    pub async fn wait(&mut self, abandon: &CancellationToken) -> Result<(), Abandoned> {
        sleep_or_abandon(self.next_delay(), abandon).await
    }
}

/// Waits `delay`, or returns `Abandoned` if `abandon` fires first.
pub async fn sleep_or_abandon(
    delay: Duration,
    abandon: &CancellationToken,
) -> Result<(), Abandoned> {
    tokio::select! {
        _ = abandon.cancelled() => Err(Abandoned),
        _ = tokio::time::sleep(delay) => Ok(()),
    }
}

/// How one attempt of [`until_done`] ended.
#[derive(Debug)]
pub enum Attempt<T> {
    /// Finished: the loop returns this. A failure that retrying cannot cure is a `Done` too.
    Done(T),
    /// A failure that passes once its cause is fixed (unreachable, read-only, a timeout): wait, try again.
    Retry(String),
}

/// Runs `attempt` until it is `Done`, waiting out each `Retry` with `backoff` and logging it as a warning
/// `what` with the error and the wait; `Abandoned` as soon as `abandon` fires, also mid-attempt.
pub async fn until_done<T, F, Fut>(
    what: &str,
    mut backoff: Backoff,
    abandon: &CancellationToken,
    mut attempt: F,
) -> Result<T, Abandoned>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    loop {
        let error = tokio::select! {
            _ = abandon.cancelled() => return Err(Abandoned),
            outcome = attempt() => match outcome {
                Attempt::Done(value) => return Ok(value),
                Attempt::Retry(error) => error,
            },
        };
        let delay = backoff.next_delay();
        warn!(message = what, %error, retry_in_ms = delay.as_millis() as u64);
        sleep_or_abandon(delay, abandon).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_up_to_its_maximum() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let delays: Vec<u128> = (0..4).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 350, 350]);
        let mut huge = Backoff::new(Duration::from_secs(u64::MAX / 2), Duration::MAX);
        huge.next_delay();
        assert_eq!(huge.next_delay(), Duration::from_secs(u64::MAX / 2 * 2));
        huge.next_delay();
        assert_eq!(
            huge.next_delay(),
            Duration::MAX,
            "saturates instead of overflowing"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn until_done_retries_until_done_and_stops_when_abandoned() {
        let never = CancellationToken::new();
        let mut tries = 0;
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(4));
        let started = tokio::time::Instant::now();
        let value = until_done("test retry", backoff.clone(), &never, || {
            tries += 1;
            let outcome = if tries < 4 {
                Attempt::Retry(format!("try {tries} failed"))
            } else {
                Attempt::Done(tries)
            };
            async move { outcome }
        })
        .await;
        assert_eq!(value, Ok(4));
        assert_eq!(started.elapsed(), Duration::from_secs(1 + 2 + 4));

        let abandon = CancellationToken::new();
        abandon.cancel();
        let gave_up = until_done("test retry", backoff, &abandon, || async {
            Attempt::<()>::Retry("down".into())
        })
        .await;
        assert_eq!(gave_up, Err(Abandoned));
    }
}
