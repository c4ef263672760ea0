//! The queue keeper of an API-only server on a shared database: where worker agents run
//! the jobs, it settles what needs no agent (queued jobs that were stopped or waited past
//! MaxPendingTimeInSeconds, jobs whose agent's lease ran out), so that these are settled
//! even while no agent is alive. It takes the shared side of the runner lock: where a
//! server runs the database's jobs itself, that server settles them and the keeper waits.
//! Any number of keepers and agents sweep at once; each job is settled once (row locks).

use std::sync::Arc;
use std::time::Duration;
use temper_store::postgres::{Connection, PostgresStore};

pub fn start(store: Arc<PostgresStore>, poll: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("temper-queue-keeper".into())
        .spawn(move || {
            let mut lock: Option<Connection> = None;
            let mut said: Option<String> = None;
            loop {
                if !lock.as_mut().is_some_and(|c| c.is_alive()) {
                    lock = None;
                    match store.share_runner() {
                        Ok(l) => lock = Some(l),
                        Err(e) => {
                            // Said once per change: a runner server is a normal state.
                            let e = e.to_string();
                            if said.as_deref() != Some(e.as_str()) {
                                eprintln!("temper-server: the queue keeper waits: {e}");
                                said = Some(e);
                            }
                        }
                    }
                }
                if lock.is_some() {
                    said = None;
                    match store.sweep() {
                        Ok(swept) => {
                            for name in swept.lost.iter().chain(&swept.retried) {
                                eprintln!(
                                    "temper-server: job {name}: its worker agent's lease ran out"
                                );
                            }
                        }
                        Err(e) => eprintln!("temper-server: sweeping the job queue: {e}"),
                    }
                }
                std::thread::sleep(poll);
            }
        })
        .map(|_| ())
}
