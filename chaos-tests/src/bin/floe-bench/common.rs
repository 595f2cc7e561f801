//! What every benchmark uses: percentiles, timing loops, floe's default config.

use std::time::{Duration, Instant};

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// floe's defaults, as a user runs them.
pub const DEFAULT_CONFIG: &str = "";

/// Runs `callers` tasks that each call `call(caller, n)` for n in 0..`per_caller`; returns calls per second.
pub async fn per_second<F, Fut>(callers: usize, per_caller: usize, call: F) -> anyhow::Result<f64>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let call = std::sync::Arc::new(call);
    let started = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let call = call.clone();
            tokio::spawn(async move {
                for n in 0..per_caller {
                    call(caller, n).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok((callers * per_caller) as f64 / started.elapsed().as_secs_f64())
}

/// Times 1,000 calls of `call`, one after another, and prints their p50 and p99 after `label`.
pub async fn print_sequential<F, Fut>(label: &str, mut call: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut samples = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let started = Instant::now();
        call().await?;
        samples.push(started.elapsed());
    }
    let (p50, p99) = summarize(samples);
    println!("{label}: p50 {} p99 {}", ms(p50), ms(p99));
    Ok(())
}

pub fn summarize(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}
