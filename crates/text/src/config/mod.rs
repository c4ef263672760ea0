//! A model directory's configuration files: what generation needs from them
//! ([`GenerationDefaults`]), and the JSON reading shared by the other modules.

mod generation;
mod json;

pub use generation::GenerationDefaults;
pub(crate) use json::{json_kind, read_json_object, special_token};
