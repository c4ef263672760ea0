//! The queue keeper of an API-only server on a shared database: where worker agents run
//! the jobs, it settles what needs no agent (queued jobs that were stopped or waited past
//! MaxPendingTimeInSeconds, jobs whose agent's lease ran out), so that these are settled
//! even while no agent is alive. Where a server runs the database's jobs itself (it holds
//! the runner lock), that server settles them and the keeper leaves them alone; it takes
//! no lock itself, so servers may start in any order. Any number of keepers and agents
//! sweep at once; each job is settled once (row locks).

use std::sync::Arc;
use std::time::Duration;
use temper_store::postgres::PostgresStore;

pub fn start(store: Arc<PostgresStore>, poll: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("temper-queue-keeper".into())
        .spawn(move || {
            // What was last said of a failure: said once until it changes.
            let mut said: Option<String> = None;
            loop {
                let outcome = store.runner_present().and_then(|runner| {
                    if runner {
                        return Ok(());
                    }
                    let swept = store.sweep()?;
                    for name in swept.lost.iter().chain(&swept.retried) {
                        eprintln!("temper-server: job {name}: its worker agent's lease ran out");
                    }
                    Ok(())
                });
                match outcome {
                    Ok(()) => said = None,
                    Err(e) => {
                        let e = e.to_string();
                        if said.as_deref() != Some(e.as_str()) {
                            eprintln!("temper-server: keeping the job queue: {e}; retrying");
                            said = Some(e);
                        }
                    }
                }
                std::thread::sleep(poll);
            }
        })
        .map(|_| ())
}
