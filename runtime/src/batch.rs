//! Group commit, written once. Everything the runtime makes durable goes
//! through one queue whose consumer takes every job queued while the
//! previous write was being made durable, up to a weight, and writes them
//! as one store write (one transaction, one fsync). The broker's journal is
//! that consumer; the stores write what they are given, one transaction
//! per call, so a change is batched once.

use tokio::sync::mpsc;

/// What a job weighs against a batch's limit (operations, bytes…).
pub trait Weight {
    /// This job's weight.
    fn weight(&self) -> usize;
}

/// The next batch: waits for a first job, then takes whatever else is
/// already queued, in order, until the batch weighs `max` or more. `None`
/// once every sender is gone and the queue is empty.
pub async fn next<J: Weight>(jobs: &mut mpsc::UnboundedReceiver<J>, max: usize) -> Option<Vec<J>> {
    let first = jobs.recv().await?;
    let mut weight = first.weight();
    let mut batch = vec![first];
    while weight < max {
        match jobs.try_recv() {
            Ok(job) => {
                weight += job.weight();
                batch.push(job);
            }
            Err(_) => break,
        }
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ops(usize);

    impl Weight for Ops {
        fn weight(&self) -> usize {
            self.0
        }
    }

    #[tokio::test]
    async fn a_batch_takes_what_is_queued_in_order_up_to_its_weight() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        for n in [3, 4, 5, 1] {
            tx.send(Ops(n)).expect("queued");
        }
        let weights = |b: Vec<Ops>| b.iter().map(|o| o.0).collect::<Vec<_>>();
        // 3 + 4 = 7 < 8, + 5 = 12: the batch closes after the job that
        // reached the limit.
        assert_eq!(weights(next(&mut rx, 8).await.expect("a batch")), [3, 4, 5]);
        assert_eq!(weights(next(&mut rx, 8).await.expect("a batch")), [1]);
        drop(tx);
        assert!(next(&mut rx, 8).await.is_none());
    }
}
