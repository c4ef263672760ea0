//! `temper-serve`: runs an original or optimized artifact (any scheme temper writes, sharded or
//! not) behind SageMaker's container contract (`GET /ping`, `POST /invocations` with LMI's JSON,
//! port 8080) and OpenAI-compatible completions with streaming, batching concurrent requests
//! continuously ([`engine`]).

pub mod app;
pub mod engine;
pub mod lmi;
pub mod load;
pub mod metrics;
pub mod openai;
pub mod start;
