//! temper-store: where jobs are kept, shared by the servers that answer the API and the
//! worker agents that run jobs (neither links the other).
//!
//! - [`store`]: the [`store::JobStore`] trait and the job record, for every job kind;
//! - [`sqlite`]: the embedded default, a file in the server's data directory;
//! - [`postgres`]: one database that several servers and worker agents share;
//! - [`leases`]: how worker agents claim queued jobs on PostgreSQL, hold them under a
//!   lease, report their logs and progress, and settle them (fenced: a late report never
//!   overwrites a finished job);
//! - [`columns`]: the row <-> record conversions and List SQL both databases share.

pub mod columns;
pub mod leases;
pub mod postgres;
pub mod sqlite;
pub mod store;
