//! A terminal progress bar driven by the scheduler's task counts.

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use taskhost_proto::TaskCounts;

use crate::client::Client;

/// A progress bar on the terminal (stderr) showing the cluster's finished and total tasks
/// while it lives; it is finished and removed when dropped (or with
/// [`finish`](Self::finish)). Hidden when stderr is not a terminal.
///
/// ```no_run
/// # async fn demo(client: taskhost_client::Client, h: taskhost_client::Handle<f64>) -> taskhost_client::Result<()> {
/// let bar = client.progress_bar();
/// let value = client.compute(&h).await?;
/// bar.finish();
/// # let _ = value; Ok(()) }
/// ```
#[derive(Debug)]
pub struct ProgressGuard {
    bar: ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl ProgressGuard {
    /// Stops updating and leaves the bar's final state on the terminal.
    ///
    /// ```no_run
    /// # fn demo(client: taskhost_client::Client) {
    /// let bar = client.progress_bar();
    /// bar.finish();
    /// # }
    /// ```
    pub fn finish(self) {
        self.task.abort();
        self.bar.finish();
    }

    /// The underlying indicatif bar (to change its style or message).
    ///
    /// ```no_run
    /// # fn demo(client: taskhost_client::Client) {
    /// let bar = client.progress_bar();
    /// bar.bar().set_message("reducing");
    /// # }
    /// ```
    pub fn bar(&self) -> &ProgressBar {
        &self.bar
    }
}

impl Drop for ProgressGuard {
    fn drop(&mut self) {
        self.task.abort();
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
        }
    }
}

/// Finished and total tasks of a count.
fn totals(c: &TaskCounts) -> (u64, u64) {
    let done = c.memory + c.erred;
    (done, done + c.waiting + c.queued + c.processing)
}

impl Client {
    /// Shows a progress bar of the cluster's tasks until the returned guard is dropped. Call
    /// from within a tokio runtime.
    ///
    /// ```no_run
    /// # async fn demo(client: taskhost_client::Client, h: taskhost_client::Handle<f64>) -> taskhost_client::Result<()> {
    /// let _bar = client.progress_bar();
    /// client.compute(&h).await?;
    /// # Ok(()) }
    /// ```
    pub fn progress_bar(&self) -> ProgressGuard {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} tasks {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let mut stream = self.progress();
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            while let Some(counts) = stream.next().await {
                let (done, total) = totals(&counts);
                shown.set_length(total);
                shown.set_position(done);
                shown.set_message(if counts.erred > 0 {
                    format!("({} running, {} erred)", counts.processing, counts.erred)
                } else {
                    format!("({} running)", counts.processing)
                });
            }
        });
        ProgressGuard { bar, task }
    }
}
